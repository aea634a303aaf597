"""Where would this request go, and why? (``interlock explain`` and ``POST /v1/policy/explain``)

The answer is what the gateway would do now: the ordered candidates and, for every deployment
of the model, why it is in or out. It reads the current circuit state and limit counters and
changes neither. A refused request still shows its route as it would be without the refusal,
with every deployment marked by the refusing rule (tier cap, limit or budget).
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
from msgspec import Struct

from policies.gate import Gate, decide, needs
from policies.limits import Limits, LimitStatus, is_budget
from policies.resolve import ResolvedPolicy
from policies.router import CircuitLookup, Consideration, Reason, Route, route
from policies.teams import PolicyStore, Snapshot
from policies.tiers import TierDecision, decide_tier, price_at
from proxy.decoding import ResponseRequest, decode_create_request
from proxy.errors import GatewayError, NotFound
from proxy.schema.upstream import Timeouts
from proxy.settings import Price

SIMULATOR_PLACEHOLDER = "http://embedded-simulator"


class Refusal(Struct, kw_only=True):
    status: int
    code: str | None
    message: str


class CandidateView(Struct, kw_only=True):
    position: int
    deployment: str
    upstream: str
    provider: str
    model: str
    region: str | None
    tier: str
    native_tier: str | None
    timeouts: Timeouts
    max_wait_s: float
    price: Price | None
    """At ``tier``, per million tokens."""


class Explanation(Struct, kw_only=True):
    team: str
    key: str | None
    model: str | None
    requested_tier: str | None = None
    tier: str | None = None
    tier_note: str | None = None
    refused: Refusal | None = None
    """The error the request would get; ``candidates`` is then empty."""
    candidates: list[CandidateView] = msgspec.field(default_factory=list)
    considered: list[Consideration] = msgspec.field(default_factory=list)
    limits: list[LimitStatus] | None = None
    """Every limit of the request and where it stands; ``None``: not checked."""
    policy: ResolvedPolicy | None = None
    currency: str = "USD"


async def explain(snapshot: Snapshot, body: bytes, *, team: str, key: str | None = None,
                  limits: Limits | None = None, circuits: CircuitLookup | None = None,
                  input_tokens: int | None = None, rng: random.Random | None = None) -> Explanation:
    """Explain ``body`` (a ``POST /v1/responses`` JSON body) sent by ``team`` (with ``key``, a key
    name of the team, for its key-level rules). Without ``limits`` the limits are not checked."""
    result = Explanation(team=team, key=key, model=None, currency=snapshot.settings.currency)
    if team not in snapshot.teams or (key is not None and (team, key) not in snapshot.policies):
        who = f"team '{team}'" + (f" has no key named '{key}'" if team in snapshot.teams else " is unknown")
        return _refused(result, NotFound(f"The {who}.", code="unknown_team"))
    policy = result.policy = snapshot.team_policy(team, key)
    try:
        request = decode_create_request(body)
    except GatewayError as exc:
        return _refused(result, exc)
    result.model = request.body.model if isinstance(request.body.model, str) else None
    try:
        decision = decide(snapshot, policy, request, circuits=circuits, input_tokens=input_tokens, rng=rng,
                          explain=True)
    except GatewayError as exc:
        _refused(result, exc)
        found = _route_anyway(snapshot, policy, request, exc, circuits, input_tokens, rng)
        if found is not None:
            _describe(result, found, show_candidates=False)
        return result
    _describe(result, decision.route, show_candidates=True)
    if limits is not None:
        result.limits = await limits.peek(policy, decision.model.alias, reserve_tokens=input_tokens or 0)
        refusal = limits.refusal(team, result.limits) if result.limits is not None else None
        if refusal is not None:
            _refused(result, refusal)
            result.candidates = []
            blocking = [status for status in result.limits or [] if not status.ok]
            for entry in result.considered:
                _exclude(entry, [Reason(code="budget" if is_budget(status) else "limit",
                                        detail=_limit_detail(status, snapshot.settings.currency))
                                 for status in blocking])
    return result


async def explain_files(config_path: str | Path, request_path: str | Path, *, team: str,
                        key: str | None = None) -> Explanation:
    """For ``interlock explain``: load the config and policies, read the shared circuit state and
    limits where the config says, and explain the request in ``request_path``."""
    store = PolicyStore.open(config_path, simulator_url=SIMULATOR_PLACEHOLDER)
    gate = Gate.open(store)
    try:
        await gate.circuits.refresh(store.current.catalogue.upstreams())
        body = Path(request_path).read_bytes()
        return await explain(store.current, body, team=team, key=key, limits=gate.limits,
                             circuits=gate.circuits.state)
    finally:
        await gate.close()


def _refused(result: Explanation, exc: GatewayError) -> Explanation:
    result.refused = Refusal(status=exc.status, code=exc.code, message=exc.message)
    return result


def _route_anyway(snapshot: Snapshot, policy: ResolvedPolicy, request: ResponseRequest, exc: GatewayError,
                  circuits: CircuitLookup | None, input_tokens: int | None,
                  rng: random.Random | None) -> Route | None:
    """The route a refused request would have had, every deployment excluded: by the tier cap,
    by its own reasons, or by the request-level refusal (``refused``)."""
    alias = request.body.model
    model = snapshot.catalogue.find(alias) if isinstance(alias, str) else None
    if model is None:
        return None
    asked = request.body.service_tier if isinstance(request.body.service_tier, str) else None
    tier_refused = exc.param == "service_tier"
    tier = (TierDecision(requested=asked or "auto", tier=policy.max_tier, note="refused above the team's cap")
            if tier_refused else decide_tier(asked, policy))
    cache_key = request.body.prompt_cache_key if isinstance(request.body.prompt_cache_key, str) else None
    found = route(snapshot.prepared(policy, model), tier, circuits=circuits, cache_key=cache_key,
                  needs=needs(request), input_tokens=input_tokens, rng=rng)
    for entry in found.considered:
        if tier_refused or entry.chosen:
            _exclude(entry, [Reason(code="tier" if tier_refused else "refused", detail=exc.message)])
    return found


def _describe(result: Explanation, found: Route, *, show_candidates: bool) -> None:
    result.requested_tier = found.tier.requested
    result.tier = found.tier.tier
    result.tier_note = found.tier.note
    result.considered = found.considered
    if show_candidates:
        result.candidates = [
            CandidateView(position=index, deployment=c.spec.name, upstream=c.spec.upstream, provider=c.spec.provider,
                          model=c.spec.model, region=c.spec.region, tier=c.tier, native_tier=c.deployment.native_tier,
                          timeouts=c.deployment.timeouts, max_wait_s=c.max_wait_s,
                          price=price_at(c.spec, c.tier))
            for index, c in enumerate(found.candidates)]


def _exclude(entry: Consideration, reasons: list[Reason]) -> None:
    if entry.chosen:
        entry.chosen = False
        entry.positions = []
        entry.reasons = [reason for reason in entry.reasons if reason.code not in ("served", "rank")]
    entry.reasons.extend(reasons)


def _limit_detail(status: LimitStatus, currency: str) -> str:
    wait = f"; frees up in {status.retry_after:.0f}s" if status.retry_after is not None else ""
    if is_budget(status):
        return f"{status.label} of {status.limit:g} {currency} reached ({status.remaining:g} left){wait}"
    return f"{status.label} of {status.limit:g}/min reached ({max(status.remaining, 0.0):.0f} left){wait}"
