"""``GET /openapi.json``: the gateway's OpenAPI document, open to any caller as health is."""

from __future__ import annotations

from litestar import Response, get

from proxy.openapi import build_document
from proxy.schema.codec import encode

_DOCUMENT = encode(build_document())
"""Built once, when the application is made."""


@get("/openapi.json")
async def openapi_document() -> Response[bytes]:
    return Response(_DOCUMENT, media_type="application/json")
