"""The create and retrieve routes' replies as plain ASGI apps: ``JSONReply`` (an encoded JSON
body) and ``SSEReply`` (a stream of SSE frames).

Returned from a handler annotated ``-> ASGIApp``, they go to the server as they are. A Litestar
``Response`` is first converted to Litestar's ASGI response on every request (headers merged,
cookies, media type resolved), about 5% of the route's CPU at saturation; a ``Stream`` then runs
an anyio task group per stream (the body in one task, a disconnect listener in another), which
took about a quarter of a streaming worker's time. ``SSEReply`` sends from the request's own task
with one plain listener task beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

_JSON = (b"content-type", b"application/json")
_EVENT_STREAM = (b"content-type", b"text/event-stream; charset=utf-8")
_END: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}


def _start(headers: Mapping[str, str], *extra: tuple[bytes, bytes]) -> HTTPResponseStartEvent:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw += extra
    return {"type": "http.response.start", "status": 200, "headers": raw}


class JSONReply:
    __slots__ = ("_body", "_start")

    def __init__(self, body: bytes, *, headers: Mapping[str, str]) -> None:
        self._start = _start(headers, _JSON, (b"content-length", b"%d" % len(body)))
        self._body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)
        await send(self._body)


class SSEReply:
    """Sends each chunk of ``frames`` as it comes. When the client goes away, the chunk being
    awaited is cancelled and ``frames`` closed (which releases the upstream), and the reply ends
    without an error: the client's leaving is not the gateway's failure."""

    __slots__ = ("_frames", "_start")

    def __init__(self, frames: AsyncIterator[bytes], *, headers: Mapping[str, str]) -> None:
        self._start = _start(headers, _EVENT_STREAM)
        self._frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def listen() -> None:
            nonlocal gone
            # The body was read before the reply began: what is left to receive is the disconnect.
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            await send(self._start)
            async for chunk in self._frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send(_END)
        except asyncio.CancelledError:
            if not gone:
                raise
            streaming.uncancel()
        finally:
            listener.cancel()
            aclose = getattr(self._frames, "aclose", None)
            if aclose is not None:
                await aclose()
