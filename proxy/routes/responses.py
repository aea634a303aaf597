"""``/v1/responses``: create (JSON or SSE), retrieve (JSON, or a background response's events),
cancel, delete, list input items."""

from __future__ import annotations

import time
from typing import Literal, cast

from litestar import Request, WebSocket, asgi, delete, get, post
from litestar.exceptions import MethodNotAllowedException
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from policies.limits import LimitStatus
from proxy.auth import Principal
from proxy.decoding import decode_create_request
from proxy.engine import Turn
from proxy.errors import InvalidRequest, NotFound
from proxy.gateway import Gateway
from proxy.jobs import event_stream
from proxy.routes.body import read_json_body
from proxy.routes.headers import authorization
from proxy.routes.reply import JSONReply, SSEReply
from proxy.routes.websocket import serve_websocket
from proxy.schema.codec import encode
from proxy.schema.response import DeletedResponse, ItemList
from proxy.store import StoredResponse
from proxy.streaming import SSE_HEADERS, sse_body


def _gateway(request: Request) -> Gateway:
    return cast(Gateway, request.app.state.gateway)


def _json(content: object) -> JSONReply:
    return JSONReply(encode(content), headers={})


async def _stored(gateway: Gateway, principal: Principal, response_id: str) -> StoredResponse:
    """The team's stored response, or the 404 (the same for another team's)."""
    stored = await gateway.store.load(principal.team, response_id)
    if stored is None:
        raise _not_found(response_id)
    return stored


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found")


_ALLOWED = b"POST, OPTIONS"
"""What ``/v1/responses`` answers over HTTP (the WebSocket transport is a GET with ``Upgrade``)."""


@asgi("/v1/responses", copy_scope=False, opt={"http_methods": ("POST",), "websocket": True})
async def responses_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/responses`` creates a response; a WebSocket upgrade of the same path opens the
    WebSocket transport (``proxy/routes/websocket.py``).

    One plain ASGI route rather than Litestar's HTTP and WebSocket handlers: on the gateway's
    hottest route Litestar's handler machinery (a signature model parsing the handler's
    arguments, an exit stack, the reply's conversion) cost 3.9% of a worker's CPU per JSON request
    (paired A/B, docs/benchmarks.md). Routing, the middleware and the exception handlers are
    Litestar's as on every other route; ``opt`` names what is served for the route listing."""
    if scope["type"] == "websocket":
        await serve_websocket(WebSocket(scope, receive, send))
        return
    method = cast(HTTPScope, scope)["method"]
    if method == "POST":
        reply = await create_response(Request(scope, receive, send))
        await reply(scope, receive, send)
    elif method == "OPTIONS":
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", _ALLOWED)]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        raise MethodNotAllowedException(headers={"allow": _ALLOWED.decode()})


async def create_response(request: Request) -> ASGIApp:
    received = time.perf_counter()
    gateway = _gateway(request)
    principal = gateway.authenticate(authorization(request))
    body = await read_json_body(request, gateway.settings.max_body_bytes)
    parsed = decode_create_request(body)
    engine = gateway.engine
    background = parsed.body.background is True
    turn = await engine.prepare(principal, parsed, received=received, overlap_admission=not background)
    # The body's stream flag alone picks SSE: real clients send Accept: application/json anyway.
    streaming = parsed.body.stream is True
    if background:
        queued = await gateway.jobs.submit(turn, body)
        if not streaming:
            return _json(queued)
        # The client follows the job's event log, so the job goes on if it leaves.
        logged = await event_stream(gateway.store, principal.team, queued.id, after=-1)
        return SSEReply(logged, headers=SSE_HEADERS)
    opened = await engine.open(turn, stream=streaming)
    if not streaming:
        resource = await engine.run(opened)
        return JSONReply(encode(resource), headers=route_headers(turn))

    return SSEReply(sse_body(engine.events(opened)), headers={**SSE_HEADERS, **route_headers(turn)})


def route_headers(turn: Turn) -> dict[str, str]:
    """Where the request went and what is left of its limits. ``x-ratelimit-*`` (OpenAI's names)
    report the tightest requests and tokens limit the request was counted against."""
    headers = {"x-interlock-attempts": str(turn.attempts),
               "x-interlock-overhead-ms": f"{turn.overhead_s * 1000:.3f}"}
    if turn.candidate is not None:
        headers["x-interlock-deployment"] = turn.candidate.spec.name
    reservation = turn.ticket.reservation  # confirmed: the route asks once the turn is open
    if reservation is None:
        return headers
    requests: LimitStatus | None = None
    tokens: LimitStatus | None = None
    # The buckets' statuses come first (budgets have no header; a degraded admission has none);
    # rpm buckets count requests, tpm buckets tokens. Every reply runs this: one pass, no lookups.
    for bucket, status in zip(reservation.plan.buckets, reservation.statuses, strict=False):
        if bucket.tokens:
            if tokens is None or status.remaining < tokens.remaining:
                tokens = status
        elif requests is None or status.remaining < requests.remaining:
            requests = status
    for (limit_name, remaining_name), tightest in zip(_RATE_HEADERS, (requests, tokens), strict=True):
        if tightest is not None:
            headers[limit_name] = str(int(tightest.limit))
            headers[remaining_name] = str(max(int(tightest.remaining), 0))
    return headers


_RATE_HEADERS = (("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"),
                 ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"))
"""The ``x-ratelimit-*`` headers of the tightest requests limit, then of the tightest tokens limit."""


@get("/v1/responses/{response_id:str}")
async def retrieve_response(request: Request) -> ASGIApp:
    """The stored response; with ``stream=true`` a background response's events after
    ``starting_after`` (all of them without it), then the live ones until it ends."""
    response_id = request.path_params["response_id"]
    gateway = _gateway(request)
    principal = gateway.authenticate(authorization(request))
    stored = await _stored(gateway, principal, response_id)
    if request.query_params.get("stream") not in ("true", "1"):
        return _json(stored.response)
    if not stored.response.background:
        raise InvalidRequest("This response cannot be streamed because it was not created with background=true.",
                             param="stream", code="invalid_value")
    after = _starting_after(request.query_params.get("starting_after"))
    frames = await event_stream(gateway.store, principal.team, response_id, after=after)
    return SSEReply(frames, headers=SSE_HEADERS)


_MAX_SEQUENCE = 2**53
"""Above any sequence number, and below what every store can compare against."""


def _starting_after(text: str | None) -> int:
    """``starting_after``: a sequence number; -1, from the first event, when absent."""
    if text is None or text in ("", "null"):
        return -1
    try:
        after = int(text)
    except ValueError:
        after = -1
    if not 0 <= after < _MAX_SEQUENCE:
        raise InvalidRequest("'starting_after' must be a sequence number: an integer of 0 or more.",
                             param="starting_after", code="invalid_value")
    return after


_UNCANCELLABLE = {"completed": "a completed", "failed": "a failed", "incomplete": "an incomplete"}


@post("/v1/responses/{response_id:str}/cancel", status_code=200)
async def cancel_response(request: Request) -> ASGIApp:
    """Cancel a queued or running background response, as OpenAI answers: the response (now
    ``cancelled``, without output), the same again for one already cancelled, 400 for one that
    ended otherwise or was not created with ``background: true``."""
    response_id = request.path_params["response_id"]
    gateway = _gateway(request)
    principal = gateway.authenticate(authorization(request))
    stored = await _stored(gateway, principal, response_id)
    resource = stored.response
    if not resource.background:
        raise InvalidRequest("Cannot cancel a synchronous response.", param="response_id")
    if resource.status in ("queued", "in_progress"):
        resource = await gateway.jobs.cancel(principal.team, resource)
    ended = _UNCANCELLABLE.get(resource.status)
    if ended is not None:
        raise InvalidRequest(f"Cannot cancel {ended} response.", param="response_id")
    return _json(resource)


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(request: Request) -> ASGIApp:
    response_id = request.path_params["response_id"]
    gateway = _gateway(request)
    principal = gateway.authenticate(authorization(request))
    stored = await gateway.store.load(principal.team, response_id)
    if stored is not None and stored.response.status in ("queued", "in_progress"):
        # Its job would store it again when it ends: it has to end first.
        raise InvalidRequest("Cannot delete a response that is still running; cancel it first.",
                             param="response_id", code="response_in_progress")
    if stored is None or not await gateway.store.delete(principal.team, response_id):
        raise _not_found(response_id)
    return _json(DeletedResponse(id=response_id))


@get("/v1/responses/{response_id:str}/input_items")
async def list_input_items(request: Request) -> ASGIApp:
    response_id = request.path_params["response_id"]
    gateway = _gateway(request)
    principal = gateway.authenticate(authorization(request))
    query = request.query_params
    limit_text = query.get("limit", "20")
    try:
        limit = int(limit_text)
    except ValueError:
        limit = -1
    if not 0 <= limit <= 100:
        raise InvalidRequest("'limit' must be an integer from 0 to 100.", param="limit", code="invalid_value")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
    page = await gateway.store.list_input_items(principal.team, response_id, limit=limit,
                                                order=cast(Literal["asc", "desc"], order), after=query.get("after"))
    if page is None:
        raise _not_found(response_id)
    items, has_more = page
    ids = [getattr(item, "id", None) for item in items]
    return _json(ItemList(data=items, first_id=ids[0] if ids else None, last_id=ids[-1] if ids else None,
                          has_more=has_more))
