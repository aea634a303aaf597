"""``GET /v1/responses`` with ``Upgrade: websocket``: the WebSocket transport of responses.

Each ``response.create`` frame is decoded and run as ``POST /v1/responses`` with ``stream: true``
would be, and its events go back one JSON text frame each, exactly as the SSE events are. Frames
are answered one at a time: those sent while a response is in flight wait for it. The connection
keeps its latest response in memory, so ``previous_response_id`` continues ``store: false``
chains; a failed turn forgets the response it continued. Behaviour and limits: docs/websocket.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from litestar.types import WebSocketReceiveEvent, WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from proxy.auth import Principal
from proxy.decoding import NOT_JSON, decode_create_request, invalid_from_validation, not_json
from proxy.engine import Turn
from proxy.errors import GatewayError, InvalidRequest, ServerError
from proxy.gateway import Gateway
from proxy.http_errors import error_response
from proxy.ids import new_id
from proxy.routes.headers import authorization
from proxy.schema.codec import encode
from proxy.schema.lifecycle import WebSocketError, WebSocketErrorDetail, WebSocketFrameHead
from proxy.store import StoredResponse
from proxy.streaming import Event, ResponseBuilder

log = logging.getLogger("interlock.websocket")

_FRAMES_AHEAD = 8
"""Frames read ahead of the response in flight; past that, reading waits, so a client that floods
the connection is held back by TCP rather than by the gateway's memory."""

_head_decoder = msgspec.json.Decoder(WebSocketFrameHead)


class _ClientGone(Exception):
    """A frame could not be sent: the client has left."""


async def serve_websocket(socket: WebSocket) -> None:
    """One WebSocket connection of ``/v1/responses`` (``proxy/routes/responses.py`` routes it)."""
    gateway = cast(Gateway, socket.app.state.gateway)
    request_id = new_id("req")
    try:
        principal = gateway.authenticate(authorization(socket))
    except GatewayError as exc:
        await _refuse(socket, exc, request_id)
        return
    await socket.accept(headers={"x-request-id": request_id})
    await _Connection(gateway, principal, socket).serve()


async def _refuse(socket: WebSocket, error: GatewayError, request_id: str) -> None:
    """Answer the upgrade with the HTTP error itself, envelope and retry hints as on HTTP, where
    the server offers ASGI's ``websocket.http.response``; otherwise a bare refusal (403)."""
    log.log(error.log_level, "websocket upgrade refused: %s %s", error.status, error.code)
    await socket.receive()  # websocket.connect
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close()
        return
    reply = error_response(error)
    headers = [(name.encode(), str(value).encode()) for name, value in reply.headers.items()]
    headers += [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
    start: WebSocketResponseStartEvent = {"type": "websocket.http.response.start", "status": error.status,
                                          "headers": headers}
    body: WebSocketResponseBodyEvent = {"type": "websocket.http.response.body", "body": reply.content,
                                        "more_body": False}
    await socket.send(start)
    await socket.send(body)


def _error_frame(error: GatewayError) -> bytes:
    detail = WebSocketErrorDetail(code=error.code or error.type, message=error.message, type=error.type,
                                  param=error.param)
    return encode(WebSocketError(status=error.status, error=detail))


def _decode_head(frame: bytes) -> WebSocketFrameHead:
    try:
        return _head_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise invalid_from_validation(exc) from None
    except NOT_JSON as exc:
        raise not_json(exc, "frame") from None


class _Connection:
    """One authenticated connection: its frames, answered in order, and its latest response."""

    def __init__(self, gateway: Gateway, principal: Principal, socket: WebSocket) -> None:
        self._gateway = gateway
        self._principal = principal
        self._socket = socket
        self._frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_FRAMES_AHEAD)
        self._latest: StoredResponse | None = None
        """The connection's latest successful response, whatever its ``store``."""

    async def serve(self) -> None:
        """Read frames and answer them until the client leaves or the connection's time is up.
        A client that leaves mid-response cancels it, which closes its upstream."""
        reader = asyncio.create_task(self._read_frames())
        worker = asyncio.create_task(self._answer_frames())
        try:
            await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, worker):
                task.cancel()
            outcomes = await asyncio.gather(reader, worker, return_exceptions=True)
        failure = next((o for o in outcomes if isinstance(o, Exception) and not isinstance(o, _ClientGone)), None)
        if failure is not None:
            log.error("websocket connection failed", exc_info=failure)
            with contextlib.suppress(_ClientGone):
                await self._send(_error_frame(ServerError("The gateway had an internal error; it has been logged.",
                                                          retryable=True)))
                await self._socket.close(code=1011)

    async def _read_frames(self) -> None:
        while True:
            message = await self._socket.receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            received = cast(WebSocketReceiveEvent, message)
            text = received.get("text")
            await self._frames.put(text.encode() if text is not None else received.get("bytes") or b"")

    async def _answer_frames(self) -> None:
        limit_s = self._gateway.settings.websocket.max_connection_s
        loop = asyncio.get_running_loop()
        closes_at = loop.time() + limit_s
        while (left := closes_at - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(self._frames.get(), left)
            except TimeoutError:
                break
            await self._answer(frame)
        # A response in flight at the limit finishes; no other starts.
        await self._send(_error_frame(InvalidRequest(
            f"This WebSocket connection reached its limit of {limit_s / 60:g} minutes; open a new connection "
            "to continue.", code="websocket_connection_limit_reached")))
        await self._socket.close(reason="connection limit reached")

    async def _answer(self, frame: bytes) -> None:
        """Run one ``response.create`` frame to its end. Success makes the response the one the
        connection keeps; any failure forgets the response the frame continued, so continuing it
        again gives ``previous_response_not_found`` (the spec's eviction)."""
        previous_id: str | None = None
        try:
            head = _decode_head(frame)
            if isinstance(head.previous_response_id, str):
                previous_id = head.previous_response_id
            request = decode_create_request(frame)
            if request.body.background is True:
                raise InvalidRequest("'background' is not available over WebSocket; use POST /v1/responses.",
                                     param="background", code="unsupported_parameter")
            warm_up = head.generate is False
            # A warm-up calls no model: the policy still decides it, but it takes nothing from the limits.
            turn = await self._gateway.engine.prepare(self._principal, request, lookup_previous=self._previous,
                                                      charge_limits=not warm_up)
            if warm_up:
                await self._warm_up(turn)
            elif not await self._generate(turn):
                self._forget(previous_id)
                return
        except GatewayError as exc:
            log.log(exc.log_level, "websocket turn refused: %s %s: %s", exc.status, exc.code, exc.message)
            await self._send(_error_frame(exc))
            self._forget(previous_id)
            return
        self._latest = StoredResponse(team=self._principal.team, response=turn.resource,
                                      input_items=turn.stored_input)

    def _forget(self, response_id: str | None) -> None:
        if self._latest is not None and self._latest.response.id == response_id:
            self._latest = None

    async def _previous(self, team: str, response_id: str) -> StoredResponse | None:
        """``previous_response_id`` from the connection's own memory first, then the team's store."""
        if self._latest is not None and self._latest.response.id == response_id:
            return self._latest
        return await self._gateway.store.load(team, response_id)

    async def _generate(self, turn: Turn) -> bool:
        """Stream the response; False when it ended in ``response.failed``."""
        engine = self._gateway.engine
        opened = await engine.open(turn, stream=True)
        # Closed at once, not when collected, should the client leave: that settles usage and frees the upstream.
        events = engine.events(opened)
        async with contextlib.aclosing(events):
            async for batch in events:
                await self._send_events(batch)
        return opened.error is None

    async def _warm_up(self, turn: Turn) -> None:
        """``generate: false``: a completed response with no output and a usable id, made without
        calling the model; stored like any other when ``store`` is true."""
        builder = ResponseBuilder(turn.resource)
        await self._send_events(builder.start())
        terminal = builder.complete()
        if turn.store:
            await self._gateway.store.save(turn.principal.team, turn.resource, turn.stored_input)
        await self._send_events(terminal)

    async def _send_events(self, events: list[Event]) -> None:
        for event in events:
            await self._send(encode(event))

    async def _send(self, payload: bytes) -> None:
        try:
            await self._socket.send_data(payload, mode="text")
        except (WebSocketDisconnect, OSError) as exc:  # ASGI servers raise OSError on a closed connection
            raise _ClientGone from exc
