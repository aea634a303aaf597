"""Fault injection for the upstream simulator (``providers.simulator``).

A fault is named by a short spec, from ``SimulatorOptions.fault`` or the ``x-sim-fault`` header:

``status:<code>``      reply ``<code>`` with an error body in the dialect's native shape
                       (``SimDialect.error_body``); a 429 carries ``retry-after: 1``
``status:429:noretry`` a 429 without ``retry-after``
``reset``              drop the connection (TCP reset) before any reply
``reset-after-first-byte``  send the headers and the first event (or first body byte), then reset
``stall``              never reply; ends only when the client gives up or the simulator closes
``stall-mid-stream``   send the first few events (or half the body), then hang the same way
``malformed``          a 200 whose JSON body is cut short, or a stream whose second frame is broken
                       (``break_frame``: by the dialect's stream content type)
``trickle``            the normal reply, one byte per write with a pause between bytes
``redirect:<url>``     a 307 to ``<url>``, as a moved or hijacked endpoint would answer

"Event" means one frame of the dialect's stream (``SimDialect.render_stream``): an SSE block,
an NDJSON line or an AWS eventstream message. Kept apart from the dialect code so the no-fault
path in ``simulator`` stays short.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal, get_args

import msgspec
from aiohttp import web

from providers.sim_dialects.base import ErrorShape, SimDialect

FaultKind = Literal[
    "status", "reset", "reset-after-first-byte", "stall", "stall-mid-stream", "malformed", "trickle", "redirect"
]
_KINDS: dict[str, FaultKind] = {kind: kind for kind in get_args(FaultKind)}

_KNOWN = ", ".join(["status:<code>[:noretry]", "redirect:<url>",
                    *sorted(k for k in _KINDS if k not in ("status", "redirect"))])

_FIRST_BYTE_PAUSE_S = 0.05
"""How long ``reset-after-first-byte`` waits between its first bytes and the reset."""

_STALL_MID_STREAM_EVENTS = 3
"""Events sent before ``stall-mid-stream`` hangs: enough for a client to have seen a first byte."""

_BROKEN_SSE = b'data: {"type": "broken", "sequence_number": \n\n'
"""A ``data:`` line whose JSON never closes, as a proxy that cut a stream mid-event would leave."""
_BROKEN_NDJSON = b'{"broken": \n'
"""An NDJSON line whose JSON never closes."""


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed fault spec."""

    kind: FaultKind
    status: int = 0
    """HTTP status for ``status`` faults."""
    retry_after: bool = True
    """Whether a 429 carries ``retry-after: 1``."""
    location: str = ""
    """Where a ``redirect`` points."""


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec; raises ``ValueError`` with a readable reason for a bad one."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "status":
        code, _, flag = rest.partition(":")
        if not code.isdigit() or not 400 <= int(code) <= 599 or flag not in ("", "noretry"):
            raise ValueError(f"bad fault {spec!r}: expected status:<400-599>[:noretry]")
        return Fault(kind="status", status=int(code), retry_after=flag != "noretry")
    if kind == "redirect":
        if not rest.startswith(("http://", "https://")):
            raise ValueError(f"bad fault {spec!r}: expected redirect:<http(s) url>")
        return Fault(kind="redirect", location=rest)
    if kind not in _KINDS or rest:
        raise ValueError(f"unknown fault {spec!r}; known: {_KNOWN}")
    return Fault(kind=_KINDS[kind])


def error_response(
    shape: ErrorShape, status: int, message: str | None = None, *, retry_after: bool = True, param: str | None = None
) -> web.Response:
    """An error reply in ``shape``'s native form (a dialect, or the OpenAI default ``ErrorShape()``);
    ``message`` ``None`` uses the shape's stock wording. A 429 carries ``retry-after: 1`` unless
    ``retry_after`` is false."""
    headers = {"retry-after": "1"} if status == 429 and retry_after else None
    return web.Response(status=status, body=shape.error_body(status, message, param=param),
                        headers=headers, content_type=shape.error_content_type)


def break_frame(frame: bytes, content_type: str) -> bytes:
    """``frame`` damaged the way a broken upstream or proxy would leave it, by stream framing:

    * ``text/event-stream``: a ``data:`` line whose JSON never closes (the frame is replaced);
    * ``application/x-ndjson``: a JSON line that never closes (the frame is replaced);
    * ``application/vnd.amazon.eventstream``: the same message with its trailing message CRC32
      inverted, so lengths and prelude still parse but the checksum check fails;
    * anything else: the first half of the frame.
    """
    if content_type == "text/event-stream":
        return _BROKEN_SSE
    if content_type == "application/x-ndjson":
        return _BROKEN_NDJSON
    if content_type == "application/vnd.amazon.eventstream" and len(frame) >= 16:
        (crc,) = struct.unpack(">I", frame[-4:])
        return frame[:-4] + struct.pack(">I", crc ^ 0xFFFFFFFF)
    return frame[: len(frame) // 2]


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


async def before_reply(
    request: web.BaseRequest, dialect: SimDialect, fault: Fault, closing: asyncio.Event
) -> web.StreamResponse | None:
    """Faults that replace the reply outright; ``None`` when the fault acts on the reply's bytes."""
    if fault.kind == "status":
        return error_response(dialect, fault.status, retry_after=fault.retry_after)
    if fault.kind == "redirect":
        return web.Response(status=307, headers={"Location": fault.location})
    if fault.kind == "reset":
        hard_close(request)
        return web.Response()
    if fault.kind == "stall":
        return await hang(request, closing)
    return None


async def send_broken(
    request: web.BaseRequest,
    dialect: SimDialect,
    frames: list[bytes],
    fault: Fault,
    *,
    stream: bool,
    trickle_delay_s: float,
    closing: asyncio.Event,
) -> web.StreamResponse:
    """Send a reply damaged by ``fault``. ``frames`` are the frames of a stream in ``dialect``'s
    ``stream_content_type``, or the one JSON body of a plain reply."""
    if fault.kind == "malformed":
        if stream:
            frames = [*frames[:1], break_frame((frames[1:2] or frames)[0], dialect.stream_content_type)]
        else:
            frames = [frames[0][: len(frames[0]) // 2]]
    resp = web.StreamResponse()
    resp.content_type = dialect.stream_content_type if stream else "application/json"
    if not stream:
        # A plain reply announces its full length, so a cut body is a short read, not a clean end.
        resp.content_length = len(frames[0])
    try:
        await resp.prepare(request)
        if fault.kind == "reset-after-first-byte":
            await resp.write(frames[0] if stream else frames[0][:1])
            # Let the first bytes reach the client before the reset, or both may arrive in one
            # read and the client never sees a first byte.
            await asyncio.sleep(_FIRST_BYTE_PAUSE_S)
            hard_close(request)
            return resp
        if fault.kind == "stall-mid-stream":
            sent = frames[:_STALL_MID_STREAM_EVENTS] if stream else [frames[0][: len(frames[0]) // 2]]
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
