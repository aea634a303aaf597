"""uvicorn's httptools protocol with bounds on a request's head (request line and headers) and
on the time its body takes.

uvicorn bounds none: its keep-alive timeout runs only between requests, each byte received
cancels it, and httptools reads headers of any size. So a client trickling its headers or body
(slowloris) held a connection and a handler for as long as it liked, and a megabyte of headers
was read. Here the head must arrive within ``listen.header_timeout_s`` and fit in
``listen.max_header_bytes``, and the body within ``request_body_timeout_s`` of the head;
otherwise the client gets 408 or 431 in the error envelope and its connection is closed. A
handler still waiting for a late body is told the client left (``http.disconnect``); its own
reply is dropped. Kept here rather than in an ASGI middleware, a body that arrives with its head
(nearly all) costs nothing, where a middleware cost every request a layer and a timer.

The deadline runs from a new connection's opening, and on a kept-alive connection from the first
bytes after a response; the wait for them stays uvicorn's keep-alive timeout. A request answered
before its body was read has the same time, from its reply, for the rest of the body to arrive
(uvicorn drops it); then the connection is closed. A head that arrives
in one chunk costs no timer, and once it is complete the protocol adds one attribute check per
chunk of body.

``server_options`` gives uvicorn this protocol with the rest of the gateway's server options.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from asyncio import TimerHandle
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.errors import GatewayError, InvalidRequest, RequestTimeout
from proxy.head_with_body import HeadWithBody
from proxy.schema.codec import encode
from proxy.schema.response import ErrorBody, ErrorObject

if TYPE_CHECKING:
    from proxy.settings import Settings

log = logging.getLogger("interlock.http")

_LINGER_S = 2.0
"""How long a refused client may go on sending (read and dropped) before its connection is
closed: closing with its bytes unread would send a reset, which can destroy the refusal unread."""


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the gateway, the same for ``interlock serve`` and the tests'
    in-process server: the guarded protocol; no access log (the gateway logs its own); no
    proxy-headers layer (nothing reads the client's address, and the layer cost each request
    about 1% of a worker's CPU); no ``server`` header (it names the software and its checks cost
    every reply); WebSocket messages up to the body limit."""
    return {"http": header_guarded_http(settings), "access_log": False, "proxy_headers": False,
            "server_header": False, "ws_max_size": settings.max_body_bytes}


def header_guarded_http(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's ``http=`` for the gateway. A partial, not a subclass made here, so that uvicorn
    can pickle it into the worker processes it spawns."""
    listen = settings.listen
    factory = partial(
        HeaderGuardProtocol, header_timeout_s=listen.header_timeout_s, max_header_bytes=listen.max_header_bytes,
        body_timeout_s=settings.request_body_timeout_s,
    )
    return cast(type[asyncio.Protocol], factory)  # uvicorn only calls it, as it would a class


class HeaderGuardProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout_s: float | None,
        max_header_bytes: int | None,
        body_timeout_s: float | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout_s = header_timeout_s
        self._body_timeout_s = body_timeout_s
        self._max_head_bytes = sys.maxsize if max_header_bytes is None else max_header_bytes
        # True from a connection's opening, or a request's end, until the next head is complete:
        # the bytes that arrive meanwhile are a head's. A head that starts inside the chunk that
        # ends the request before it is counted from the next chunk on (lenient by one read).
        self._reading_head = True
        self._head_room = self._max_head_bytes
        self._refused = False
        self._timer: TimerHandle | None = None  # the head's or body's deadline; after a refusal, the linger's end

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading_head:  # a body: nothing to check
            super().data_received(data)
            return
        if self._refused:
            return
        room = self._head_room
        if len(data) > room:
            self._feed_up_to_the_cap(data, room)
            return
        self._head_room = room - len(data)
        super().data_received(data)
        self._arm_for_the_rest()

    def _arm_for_the_rest(self) -> None:
        """Most requests arrive whole in one chunk and need no timer. A head still arriving gets
        its deadline now, unless it is pipelined behind a response in progress (a 408 would land
        in the middle of it): that one waits for the response's end, then for its next byte. A
        body still arriving gets its own."""
        if self._timer is not None:
            return
        if self._reading_head:
            if self._head_room < self._max_head_bytes and self._idle():
                self._arm_head_deadline()
        elif self._body_timeout_s is not None and self.transport.get_protocol() is self:
            # (A WebSocket upgrade has handed the connection to another protocol.)
            self._timer = self.loop.call_later(self._body_timeout_s, self._body_too_slow)

    def _feed_up_to_the_cap(self, data: bytes, room: int) -> None:
        """Feed only what the cap allows: a head that has not ended within it is too large."""
        self._head_room = 0
        super().data_received(data[:room])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # refused as malformed, or handed to the WebSocket protocol (which drops the rest, as uvicorn does)
        if self._reading_head and self._head_room == 0:
            message = f"The request line and headers exceed {self._max_head_bytes} bytes."
            self._refuse(InvalidRequest(message, status=431, code="request_header_fields_too_large"))
        else:
            self._arm_for_the_rest()
            self.data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_timer()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a request (a WebSocket upgrade makes no cycle)
            self.cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_room = self._max_head_bytes
        self._cancel_timer()  # a body that was still arriving after its reply has ended in time

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Answered before its body was read (a 401, a 404, a 405): uvicorn reads and drops the
        # rest, and each byte cancels its keep-alive timer, so a trickled remainder would hold
        # the connection. It gets the head's time to finish (not what was left of the body's),
        # then the connection is closed.
        if not self._reading_head and not self.transport.is_closing():
            self._cancel_timer()
            self._arm(self._leftover_too_slow)

    def _idle(self) -> bool:
        """No response is in progress or queued (``cycle`` is the latest request's)."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._arm(self._head_too_slow)

    def _arm(self, callback: Callable[[], None]) -> None:
        if self._header_timeout_s is not None:
            self._timer = self.loop.call_later(self._header_timeout_s, callback)

    def _leftover_too_slow(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            log.info("closed a connection whose request body was still arriving %gs after its reply",
                     self._header_timeout_s)
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._head_room == self._max_head_bytes:  # not a byte yet: nothing to answer
            self.transport.close()
            return
        self._refuse(RequestTimeout(f"The request headers did not arrive within {self._header_timeout_s:g} seconds."))

    def _body_too_slow(self) -> None:
        self._timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or cycle.response_started:
            return  # answered already: on_response_complete bounds the rest of the body
        if self.pipeline:  # queued behind a response still being written: a 408 would land inside it
            self.transport.close()
            return
        # The handler waiting for the body hears the client left; what it answers is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self._reading_head = True  # so that data_received drops every later byte unread
        self._answer_and_close(RequestTimeout(
            f"The request body did not arrive within {self._body_timeout_s:g} seconds of its headers."))

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` and close the connection, after a linger; while an earlier response is
        still being written (a pipelined head), only close it."""
        if not self._idle():
            log.log(error.log_level, "%s %s: %s", error.status, error.code, error.message)
            self.transport.close()
            return
        self._answer_and_close(error)

    def _answer_and_close(self, error: GatewayError) -> None:
        log.log(error.log_level, "%s %s: %s", error.status, error.code, error.message)
        self._refused = True
        self.transport.write(self._error_reply(error))
        self.transport.write_eof()  # the client reads the refusal, then the end; its own close ends ours
        self._cancel_timer()
        self._timer = self.loop.call_later(_LINGER_S, self.transport.close)

    def _error_reply(self, error: GatewayError) -> bytes:
        body = encode(
            ErrorBody(error=ErrorObject(message=error.message, type=error.type, param=error.param, code=error.code))
        )
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"x-should-retry: false\r\nconnection: close\r\n\r\n",
            body,
        ]
        return b"".join(head)
