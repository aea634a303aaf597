"""The ``service_tier`` policy.

- ``auto`` (or no ``service_tier``): the team's default tier.
- Above the team's ``max`` (flex < default < priority): served at ``max`` when the policy says
  ``cap``, refused with 403 when it says ``reject``.
- ``priority``: deployments serving priority first (asked natively where the upstream has a
  priority tier), then default ones; never flex.
- ``default``: default deployments only; never flex.
- ``flex``: flex deployments first, cheapest first, with longer timeouts and a wait for
  capacity; then default ones.

The response reports the tier actually served, and cost is counted at that tier.
"""

from __future__ import annotations

from msgspec import Struct

from policies.catalogue import DeploymentSpec
from policies.resolve import ResolvedPolicy
from policies.rules import TIER_RANK, Tier
from proxy.errors import PermissionDenied
from proxy.schema.request import ServiceTier
from proxy.schema.response import Usage
from proxy.settings import Price

_TIERS: dict[str | None, Tier] = {"default": "default", "flex": "flex", "priority": "priority"}
_PLANS: dict[str, tuple[Tier, ...]] = {
    "priority": ("priority", "default"),
    "default": ("default",),
    "flex": ("flex", "default"),
}


class TierDecision(Struct, frozen=True, kw_only=True):
    requested: str
    """What the request said: ``auto``, ``default``, ``flex`` or ``priority``."""
    tier: Tier
    """The tier the router looks for."""
    note: str | None = None
    """How ``tier`` follows from ``requested`` when they differ."""

    @property
    def plan(self) -> tuple[Tier, ...]:
        """The tiers candidates may be served at, in order."""
        return _PLANS[self.tier]


def decide_tier(requested: ServiceTier | None, policy: ResolvedPolicy) -> TierDecision:
    """The tier to serve ``requested`` at; raises ``PermissionDenied`` above a ``reject`` cap."""
    asked = requested or "auto"
    if asked == "auto":
        return TierDecision(requested=asked, tier=policy.default_tier,
                            note=f"auto: the team's default tier ({policy.source('service_tier.default')})")
    if TIER_RANK[asked] <= TIER_RANK[policy.max_tier]:
        return TierDecision(requested=asked, tier=asked)
    if policy.above_max == "reject":
        raise PermissionDenied(
            f"service_tier '{asked}' is above the highest tier your team may use ('{policy.max_tier}').",
            param="service_tier", code="service_tier_not_allowed")
    return TierDecision(requested=asked, tier=policy.max_tier,
                        note=f"capped at the team's highest tier ({policy.source('service_tier.max')})")


def price_at(spec: DeploymentSpec, tier: Tier) -> Price | None:
    return spec.tier_prices.get(tier) or spec.price


def served_tier(spec: DeploymentSpec, asked: Tier, reported: str | None) -> Tier:
    """The tier a response was served at: what the upstream reported (a tier name or one of the
    deployment's native values), else the tier it was asked for."""
    if reported in _TIERS:
        return _TIERS[reported]
    for tier, native in spec.native_tiers.items():
        if native == reported:
            return tier
    return asked


def cost(usage: Usage, spec: DeploymentSpec, tier: Tier) -> float:
    """What ``usage`` costs at ``tier``, in the gateway's currency; 0 without a price."""
    price = price_at(spec, tier)
    if price is None:
        return 0.0
    cached = min(usage.input_tokens_details.cached_tokens, usage.input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return ((usage.input_tokens - cached) * price.input + cached * cached_price
            + usage.output_tokens * price.output) / 1_000_000
