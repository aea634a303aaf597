"""Fault injection for the upstream simulator (``providers.simulator``).

A fault is named by a short spec, from ``SimulatorOptions.fault`` or the ``x-sim-fault`` header:

``status:<code>``      reply ``<code>`` with an OpenAI-style error body; a 429 carries ``retry-after: 1``
``status:429:noretry`` a 429 without ``retry-after``
``reset``              drop the connection (TCP reset) before any reply
``reset-after-first-byte``  send the headers and the first event (or first body byte), then reset
``stall``              never reply; ends only when the client gives up or the simulator closes
``stall-mid-stream``   send the first few events (or half the body), then hang the same way
``malformed``          a 200 whose JSON body is cut short, or a stream whose second event is broken
``trickle``            the normal reply, one byte per write with a pause between bytes

Kept apart from the dialect code so the no-fault path in ``simulator`` stays short.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal, get_args

import msgspec
from aiohttp import web

FaultKind = Literal[
    "status", "reset", "reset-after-first-byte", "stall", "stall-mid-stream", "malformed", "trickle"
]
_KINDS: dict[str, FaultKind] = {kind: kind for kind in get_args(FaultKind)}

_KNOWN = ", ".join(["status:<code>[:noretry]", *sorted(k for k in _KINDS if k != "status")])

_STALL_MID_STREAM_EVENTS = 3
"""Events sent before ``stall-mid-stream`` hangs: enough for a client to have seen a first byte."""

_BROKEN_SSE = b'data: {"type": "broken", "sequence_number": \n\n'
"""A ``data:`` line whose JSON never closes, as a proxy that cut a stream mid-event would leave."""

# (type, code, message) per status, worded like OpenAI's own errors so error mappers see real shapes.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Simulated bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Simulated forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("timeout", None, "Request timed out."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (simulated). Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("timeout", None, "Gateway timeout."),
}

_encode = msgspec.json.Encoder().encode


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed fault spec."""

    kind: FaultKind
    status: int = 0
    """HTTP status for ``status`` faults."""
    retry_after: bool = True
    """Whether a 429 carries ``retry-after: 1``."""


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec; raises ``ValueError`` with a readable reason for a bad one."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "status":
        code, _, flag = rest.partition(":")
        if not code.isdigit() or not 400 <= int(code) <= 599 or flag not in ("", "noretry"):
            raise ValueError(f"bad fault {spec!r}: expected status:<400-599>[:noretry]")
        return Fault(kind="status", status=int(code), retry_after=flag != "noretry")
    if kind not in _KINDS or rest:
        raise ValueError(f"unknown fault {spec!r}; known: {_KNOWN}")
    return Fault(kind=_KINDS[kind])


def error_response(
    status: int, message: str | None = None, *, retry_after: bool = True, param: str | None = None
) -> web.Response:
    """An OpenAI-shaped error reply: ``{"error": {"message", "type", "param", "code"}}``."""
    kind, code, default_message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Simulated error {status}.")
    )
    body = {"error": {"message": message or default_message, "type": kind, "param": param, "code": code}}
    headers = {"retry-after": "1"} if status == 429 and retry_after else None
    return web.Response(status=status, body=_encode(body), content_type="application/json", headers=headers)


def hard_close(request: web.BaseRequest) -> None:
    """Reset the connection: SO_LINGER 0 makes the close send RST, which clients report as
    "connection reset" rather than a clean end of stream."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def hang(request: web.BaseRequest, closing: asyncio.Event) -> web.StreamResponse:
    """Wait until the simulator shuts down (a client that gives up cancels the handler first),
    then reset the connection so shutdown never waits on a stalled handler."""
    await closing.wait()
    hard_close(request)
    return web.Response()  # never reaches the wire: aiohttp drops writes to a closed transport


async def before_reply(request: web.BaseRequest, fault: Fault, closing: asyncio.Event) -> web.StreamResponse | None:
    """Faults that replace the reply outright; ``None`` when the fault acts on the reply's bytes."""
    if fault.kind == "status":
        return error_response(fault.status, retry_after=fault.retry_after)
    if fault.kind == "reset":
        hard_close(request)
        return web.Response()
    if fault.kind == "stall":
        return await hang(request, closing)
    return None


async def send_broken(
    request: web.BaseRequest,
    frames: list[bytes],
    fault: Fault,
    *,
    sse: bool,
    trickle_delay_s: float,
    closing: asyncio.Event,
) -> web.StreamResponse:
    """Send a reply damaged by ``fault``. ``frames`` are the SSE events of a stream, or the one
    JSON body of a plain reply."""
    if fault.kind == "malformed":
        frames = [*frames[:1], _BROKEN_SSE] if sse else [frames[0][: len(frames[0]) // 2]]
    resp = web.StreamResponse()
    resp.content_type = "text/event-stream" if sse else "application/json"
    if not sse:
        # A plain reply announces its full length, so a cut body is a short read, not a clean end.
        resp.content_length = len(frames[0])
    try:
        await resp.prepare(request)
        if fault.kind == "reset-after-first-byte":
            await resp.write(frames[0] if sse else frames[0][:1])
            hard_close(request)
            return resp
        if fault.kind == "stall-mid-stream":
            sent = frames[:_STALL_MID_STREAM_EVENTS] if sse else [frames[0][: len(frames[0]) // 2]]
            for frame in sent:
                await resp.write(frame)
            return await hang(request, closing)
        if fault.kind == "trickle":
            data = b"".join(frames)
            for i in range(len(data)):
                await resp.write(data[i : i + 1])
                await asyncio.sleep(trickle_delay_s)
        else:  # malformed: the damage is already in the frames
            await resp.write(b"".join(frames))
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing is left to tell it
    return resp
