"""Ordered candidates for one request, and why each deployment is in or out.

Every deployment of the alias is considered. It is excluded when it is unusable (credentials),
when the team may not use the model, when its provider is denied or not allowed, when its region
is not allowed, when it lacks a capability the request needs or its context window is too small,
when its circuit is open, or when it serves none of the tiers the request may be served at.

The rest are ordered tier by tier of the plan (priority then default; default; flex then
default), and within a tier by the team's provider preference, then (flex only) price, then the
catalogue's ``order``; deployments equal on all of these share traffic by ``weight``. A request
with a ``prompt_cache_key`` always draws the same way for the same key (weighted rendezvous
hashing), so it keeps reaching the same deployment, and its cache, while that one is healthy.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from msgspec import Struct

from policies.catalogue import CatalogueModel, DeploymentSpec
from policies.circuit import CircuitState
from policies.resolve import ResolvedPolicy
from policies.rules import Tier
from policies.tiers import TierDecision, price_at
from proxy.schema.upstream import Deployment

ReasonCode = Literal[
    # why a deployment is excluded
    "unavailable", "model_not_allowed", "provider_denied", "provider_not_allowed", "region", "capability",
    "context_window", "circuit_open", "tier", "limit", "budget", "refused",
    # why and where it is chosen
    "served", "rank", "circuit_half_open",
]
_RNG = random.Random()


class Reason(Struct, frozen=True, kw_only=True):
    code: ReasonCode
    detail: str


class Consideration(Struct, kw_only=True):
    """One deployment of the alias: chosen (``positions`` in the candidate list) or excluded."""

    deployment: str
    upstream: str
    provider: str
    model: str
    region: str | None
    chosen: bool
    positions: list[int]
    reasons: list[Reason]


class Candidate(Struct, frozen=True, kw_only=True):
    """One attempt to make, in order. Not for encoding: ``deployment`` carries credentials."""

    spec: DeploymentSpec
    tier: Tier
    """The tier asked for; the response reports the one served."""
    deployment: Deployment
    """Ready for the adapter: ``native_tier`` and the tier's ``timeouts`` set."""
    max_wait_s: float
    """How long this attempt may wait for capacity (flex; 0 otherwise): honour a 429/503
    ``retry-after`` up to this long before moving to the next candidate."""


class Route(Struct, kw_only=True):
    alias: str
    tier: TierDecision
    candidates: list[Candidate]
    considered: list[Consideration]


CircuitLookup = Callable[[str], CircuitState]


@dataclass(frozen=True, slots=True)
class _Static:
    spec: DeploymentSpec
    reasons: tuple[Reason, ...]
    """Exclusions that hold for every request of the policy: credentials, model, provider, region."""
    preference: int
    flex_price: float


@dataclass(frozen=True, slots=True)
class Prepared:
    """What routing one alias under one policy needs that no request changes (``prepare``);
    a ``Snapshot`` keeps one per team, key and alias."""

    model: CatalogueModel
    policy: ResolvedPolicy
    deployments: tuple[_Static, ...]


def prepare(model: CatalogueModel, policy: ResolvedPolicy) -> Prepared:
    allowed = policy.allows_model(model.alias)
    return Prepared(model=model, policy=policy, deployments=tuple(
        _Static(spec=spec, reasons=tuple(_static_exclusions(model.alias, allowed, spec, policy)),
                preference=_preference(spec.provider, policy), flex_price=_flex_price(spec))
        for spec in model.specs))


def route(prepared: Prepared, tier: TierDecision, *, circuits: CircuitLookup | None = None,
          cache_key: str | None = None, needs: frozenset[str] = frozenset(), input_tokens: int | None = None,
          rng: random.Random | None = None, explain: bool = False) -> Route:
    """Candidates for the prepared alias and policy at ``tier``; pure and synchronous. Excluded
    deployments always carry their reasons; chosen ones say why and where only with ``explain``."""
    policy = prepared.policy
    considered: list[Consideration] = []
    eligible: list[tuple[_Static, Consideration, float]] = []
    draw_rng = rng or _RNG
    for static in prepared.deployments:
        spec = static.spec
        state = circuits(spec.upstream) if circuits else None
        reasons = [*static.reasons, *_request_exclusions(spec, tier, needs, input_tokens, state)]
        entry = Consideration(deployment=spec.name, upstream=spec.upstream, provider=spec.provider, model=spec.model,
                              region=spec.region, chosen=not reasons, positions=[], reasons=reasons)
        considered.append(entry)
        if not reasons:
            if state is not None and state.state == "half_open":
                entry.reasons.append(Reason(code="circuit_half_open",
                                            detail="circuit half-open after its cool-down: trying it again"))
            eligible.append((static, entry, _draw(spec, policy.team, cache_key, draw_rng)))

    candidates: list[Candidate] = []
    for served in tier.plan:
        group = [(_rank(static, served), draw, static, entry)
                 for static, entry, draw in eligible if served in static.spec.tiers]
        group.sort(key=lambda item: (*item[0], item[1]))
        for rank, _, static, entry in group:
            entry.positions.append(len(candidates))
            if explain:
                equals = [other.spec.weight for other_rank, _, other, _ in group if other_rank == rank]
                entry.reasons.append(_served_reason(static.spec, served, tier))
                entry.reasons.append(_rank_reason(static, served, policy, equals, cache_key, len(candidates)))
            candidates.append(Candidate(spec=static.spec, tier=served, deployment=static.spec.by_tier[served],
                                        max_wait_s=policy.flex_max_wait_s if served == "flex" else 0.0))
    return Route(alias=prepared.model.alias, tier=tier, candidates=candidates, considered=considered)


def _static_exclusions(alias: str, model_allowed: bool, spec: DeploymentSpec,
                       policy: ResolvedPolicy) -> list[Reason]:
    reasons: list[Reason] = []
    if spec.unavailable is not None:
        reasons.append(Reason(code="unavailable", detail=spec.unavailable))
    if not model_allowed:
        reasons.append(Reason(code="model_not_allowed", detail=f"model '{alias}' matches none of the team's models "
                              f"{list(policy.models)} ({policy.source('models')})"))
    denied = next((pattern for pattern in policy.deny_providers if fnmatchcase(spec.provider, pattern)), None)
    if denied is not None:
        reasons.append(Reason(code="provider_denied", detail=f"provider '{spec.provider}' matches deny '{denied}' "
                              f"({policy.source('providers.deny')})"))
    elif not any(fnmatchcase(spec.provider, pattern) for pattern in policy.allow_providers):
        reasons.append(Reason(code="provider_not_allowed", detail=f"provider '{spec.provider}' matches none of allow "
                              f"{list(policy.allow_providers)} ({policy.source('providers.allow')})"))
    if "*" not in policy.regions and not (spec.region and any(fnmatchcase(spec.region, pattern)
                                                              for pattern in policy.regions)):
        reasons.append(Reason(code="region", detail=f"region '{spec.region or 'unknown'}' matches none of "
                              f"{list(policy.regions)} ({policy.source('regions')})"))
    return reasons


def _request_exclusions(spec: DeploymentSpec, tier: TierDecision, needs: frozenset[str], input_tokens: int | None,
                        state: CircuitState | None) -> list[Reason]:
    reasons: list[Reason] = []
    if spec.capabilities is not None and not needs <= spec.capabilities:
        reasons.append(Reason(code="capability",
                              detail=f"lacks {sorted(needs - spec.capabilities)}, which the request needs"))
    if input_tokens is not None and spec.context_window is not None and input_tokens > spec.context_window:
        reasons.append(Reason(code="context_window", detail=f"context window {spec.context_window} tokens, "
                              f"the request has about {input_tokens}"))
    if state is not None and state.state == "open":
        reasons.append(Reason(code="circuit_open", detail=f"circuit open after {state.failures} consecutive "
                              f"failures; half-open at {state.retry_at:.0f} (unix time)"))
    if not any(served in spec.tiers for served in tier.plan):
        reasons.append(Reason(code="tier", detail=f"serves {'/'.join(spec.tiers)}; a '{tier.tier}' request is "
                              f"served at {' then '.join(tier.plan)} only"))
    return reasons


def _preference(provider: str, policy: ResolvedPolicy) -> int:
    prefer = policy.prefer_providers
    return next((index for index, pattern in enumerate(prefer) if fnmatchcase(provider, pattern)), len(prefer))


def _flex_price(spec: DeploymentSpec) -> float:
    price = price_at(spec, "flex")
    return math.inf if price is None else price.input + price.output


def _rank(static: _Static, served: Tier) -> tuple[float, float, float]:
    """Lower first: provider preference, price (flex only), catalogue order."""
    return (static.preference, static.flex_price if served == "flex" else 0.0, static.spec.order)


def _draw(spec: DeploymentSpec, team: str, cache_key: str | None, rng: random.Random) -> float:
    """An exponential race weighted by ``weight``: the lowest draw goes first, so each of equal
    deployments leads with probability weight / total. A cache key fixes the draw."""
    if cache_key is None:
        uniform = 1.0 - rng.random()
    else:
        digest = hashlib.blake2b(f"{team}\0{cache_key}\0{spec.name}".encode(), digest_size=8).digest()
        uniform = (int.from_bytes(digest, "big") + 1) / 2.0**64
    return -math.log(uniform) / spec.weight


def _served_reason(spec: DeploymentSpec, served: Tier, tier: TierDecision) -> Reason:
    native = spec.native_tiers.get(served)
    detail = f"serves {served}" + (f", asked natively as '{native}'" if native else "")
    if served != tier.tier:
        detail += f" (fallback: {tier.tier} is served first where available)"
    return Reason(code="served", detail=detail)


def _rank_reason(static: _Static, served: Tier, policy: ResolvedPolicy, equals: list[float],
                 cache_key: str | None, position: int) -> Reason:
    spec = static.spec
    parts = [f"candidate {position + 1}"]
    if policy.prefer_providers:
        parts.append(f"preferred provider #{static.preference + 1}" if static.preference < len(policy.prefer_providers)
                     else "provider not in the team's preference list")
    if served == "flex":
        parts.append("no flex price" if math.isinf(static.flex_price)
                     else f"flex price {static.flex_price:g} per 1M input+output tokens")
    parts.append(f"order {spec.order}")
    if len(equals) > 1:
        how = "sticky by prompt_cache_key" if cache_key is not None else "weighted draw"
        parts.append(f"weight {spec.weight:g} of {sum(equals):g} among {len(equals)} equals ({how})")
    return Reason(code="rank", detail=", ".join(parts))
