"""Reading a request's body, bounded by ``max_body_bytes``.

Read here rather than with Litestar's ``Request.body()``: a client that leaves mid-body (or whose
body is cut off by its deadline, ``proxy/header_guard.py``) is a 499 logged at info, not
Litestar's "client disconnected prematurely" 500; and a body in one message, nearly all of them,
is taken as it is, without an async generator and a join.
"""

from __future__ import annotations

from typing import cast

from litestar import Request

from proxy.errors import ClientClosedRequest, PayloadTooLarge, UnsupportedMediaType
from proxy.routes.headers import header

JSON = "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest("The connection closed before the whole request body arrived.")
        chunk = cast(bytes, message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


async def read_json_body(request: Request, limit: int) -> bytes:
    """``read_body`` for a route that takes JSON: 415 for another declared type."""
    content_type = header(request, b"content-type")
    if content_type is None:
        content_type = JSON
    if "json" not in content_type:
        raise UnsupportedMediaType(f"Send the body as application/json, not '{content_type}'.")
    return await read_body(request, limit)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body exceeds the gateway's limit of {limit} bytes (max_body_bytes).")
