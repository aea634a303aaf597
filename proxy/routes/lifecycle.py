"""``POST /v1/responses/compact`` (a conversation compacted into a sealed summary, see
``proxy.compaction``) and ``POST /v1/responses/input_tokens`` (its input tokens counted, see
``proxy.token_count``). Both take the create body's vocabulary and resolve the conversation the
same way (``previous_response_id``, item references)."""

from __future__ import annotations

from typing import cast

from litestar import Request, Response, post

from proxy.auth import Principal
from proxy.compaction import compact
from proxy.decoding import ResponseRequest, decode_create_request
from proxy.gateway import Gateway
from proxy.routes.body import JSON, read_json_body
from proxy.routes.headers import authorization
from proxy.schema.codec import encode
from proxy.schema.lifecycle import TokenCounts
from proxy.token_count import count_input_tokens

COUNT_SOURCE_HEADER = "x-interlock-token-count"
"""Says how ``input_tokens`` was counted: ``provider`` (the upstream's own endpoint) or
``estimate`` (the gateway's rule, docs/lifecycle.md)."""


async def _decoded(request: Request) -> tuple[Gateway, Principal, ResponseRequest]:
    gateway = cast(Gateway, request.app.state.gateway)
    principal = gateway.authenticate(authorization(request))
    return gateway, principal, decode_create_request(await read_json_body(request, gateway.settings.max_body_bytes))


@post("/v1/responses/compact", status_code=200)
async def compact_response(request: Request) -> Response[bytes]:
    gateway, principal, parsed = await _decoded(request)
    return Response(encode(await compact(gateway.engine, principal, parsed)), media_type=JSON)


@post("/v1/responses/input_tokens", status_code=200)
async def count_response_input_tokens(request: Request) -> Response[bytes]:
    gateway, principal, parsed = await _decoded(request)
    counted = await count_input_tokens(gateway.engine, principal, parsed)
    return Response(encode(TokenCounts(input_tokens=counted.input_tokens)), media_type=JSON,
                    headers={COUNT_SOURCE_HEADER: counted.method})
