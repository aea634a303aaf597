"""Usage records and policy explanations.

``GET /v1/usage``: a team key reads its own team's records; an admin key (``admin_keys``) reads
any team's. ``POST /v1/policy/explain``: admin keys only.
"""

from __future__ import annotations

import time
from typing import cast

import msgspec
from litestar import Request, Response, get, post
from msgspec import Struct

from policies.explain import explain
from policies.gate import estimate_tokens
from policies.limits import UsageRecord
from proxy.decoding import NOT_JSON, not_json
from proxy.errors import AuthenticationFailed, InvalidRequest, NotFound
from proxy.gateway import ADMIN, Gateway
from proxy.routes.body import JSON, read_body
from proxy.routes.headers import authorization
from proxy.schema.codec import encode

DAY_S = 86400.0


class UsageTotals(Struct, kw_only=True):
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost: float
    currency: str


class UsagePage(Struct, kw_only=True):
    object: str = "list"
    team: str
    start: float
    end: float
    data: list[UsageRecord]
    has_more: bool
    totals: UsageTotals
    """Over ``data``."""


class ExplainBody(Struct, kw_only=True, forbid_unknown_fields=True):
    team: str
    request: msgspec.Raw
    """A ``POST /v1/responses`` body, as the team would send it."""
    key: str | None = None
    """A key name of the team, for its key-level rules."""


_explain_decoder = msgspec.json.Decoder(ExplainBody)


def _gateway(request: Request) -> Gateway:
    return cast(Gateway, request.app.state.gateway)


def _number(request: Request, name: str, default: float, *, low: float, high: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number from {low:g} to {high:g}.", param=name, code="invalid_value")
    return value


@get("/v1/usage")
async def list_usage(request: Request) -> Response[bytes]:
    gateway = _gateway(request)
    credentials = authorization(request)
    try:
        principal = gateway.admins.authenticate(credentials)
    except AuthenticationFailed:
        principal = gateway.authenticate(credentials)
    asked = request.query_params.get("team")
    if principal.team == ADMIN:
        if not asked:
            raise InvalidRequest("Name the team: 'team' is required with an admin key.", param="team",
                                 code="missing_required_parameter")
        team = asked
    elif asked not in (None, principal.team):
        raise NotFound(f"The team '{asked}' is unknown or not yours.", param="team", code="unknown_team")
    else:
        team = principal.team
    now = time.time()
    end = _number(request, "end", now, low=0, high=now + DAY_S)
    start = _number(request, "start", end - DAY_S, low=0, high=end)
    limit = int(_number(request, "limit", 100, low=1, high=1000))
    records = await gateway.gate.usage(team, start, end, limit=limit + 1)
    shown = records[:limit]
    totals = UsageTotals(requests=len(shown), input_tokens=sum(r.input_tokens for r in shown),
                         cached_tokens=sum(r.cached_tokens for r in shown),
                         output_tokens=sum(r.output_tokens for r in shown),
                         cost=sum(r.cost for r in shown), currency=gateway.policies.current.settings.currency)
    page = UsagePage(team=team, start=start, end=end, data=shown, has_more=len(records) > limit, totals=totals)
    return Response(encode(page), media_type=JSON)


@post("/v1/policy/explain", status_code=200)
async def explain_policy(request: Request) -> Response[bytes]:
    gateway = _gateway(request)
    gateway.authenticate_admin(authorization(request))
    try:
        body = _explain_decoder.decode(await read_body(request, gateway.settings.max_body_bytes))
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid explain request: {exc}.", code="invalid_value") from None
    except NOT_JSON as exc:
        raise not_json(exc) from None
    raw = bytes(body.request)
    result = await explain(gateway.policies.current, raw, team=body.team, key=body.key, limits=gateway.gate.limits,
                           circuits=gateway.gate.circuits.state, input_tokens=estimate_tokens(len(raw)))
    return Response(encode(result), media_type=JSON)
