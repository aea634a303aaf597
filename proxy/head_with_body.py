"""A response's head and the start of its body in one write.

uvicorn writes a response's status line and headers as soon as the application starts the
response, then each body message as it comes: two system calls (and two TCP segments) for every
JSON reply, where one would do. The transport a request's cycle writes to is wrapped
(``proxy/header_guard.py``) so that the first write (the head) waits for the second (the body)
until the end of the event loop's current pass: a body sent at once, as every JSON reply is,
goes out with the head; a stream whose first event is still coming gets its head alone, as
before, within microseconds.
"""

from __future__ import annotations

import asyncio


class HeadWithBody:
    """The transport as one request's cycle sees it (uvicorn's cycle writes, closes and asks
    whether it is closing; nothing else)."""

    __slots__ = ("_held", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._started = False
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif not self._started:
            # The cycle's first write: the head, or a "100 Continue" (which goes out the same way).
            self._started = True
            self._held = data
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()
