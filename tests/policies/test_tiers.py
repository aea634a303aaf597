"""The service_tier policy, rule by rule."""

from __future__ import annotations

import random

import msgspec
import pytest

from policies.catalogue import FLEX_TIMEOUT_FACTOR, Catalogue
from policies.router import Route, prepare, route
from policies.tiers import TierDecision, cost, decide_tier, served_tier
from proxy.errors import PermissionDenied
from proxy.schema.response import InputTokensDetails, Usage
from proxy.schema.upstream import Timeouts
from tests.policies.conftest import ENV, catalogue_model, policy, settings_with


def _route(tier: str, **rules: object) -> Route:
    # Only the team's default/max matter here; everything else is the built-in default.
    chosen = policy(**rules)
    return route(prepare(catalogue_model("gpt"), chosen), decide_tier(tier, chosen), rng=random.Random(1))


def _served(found: Route) -> list[tuple[str, str, str | None]]:
    return [(c.spec.provider, c.tier, c.deployment.native_tier) for c in found.candidates]


@pytest.mark.parametrize("asked", [None, "auto"])
def test_auto_and_unset_follow_the_team_default(asked: str | None) -> None:
    decision = decide_tier(asked, policy(service_tier={"default": "flex"}))
    assert decision.tier == "flex" and decision.requested == "auto"
    assert decision.note == "auto: the team's default tier (team)"


def test_a_tier_within_the_cap_is_served_as_asked() -> None:
    assert decide_tier("priority", policy()) == TierDecision(requested="priority", tier="priority")
    assert decide_tier("flex", policy(service_tier={"max": "default"})).tier == "flex"


def test_above_the_cap_is_capped_when_the_policy_caps() -> None:
    decision = decide_tier("priority", policy(service_tier={"max": "default", "above_max": "cap"}))
    assert decision.tier == "default" and decision.requested == "priority"
    assert decision.note == "capped at the team's highest tier (team)"


def test_above_the_cap_is_403_when_the_policy_rejects() -> None:
    with pytest.raises(PermissionDenied) as caught:
        decide_tier("priority", policy(service_tier={"max": "flex", "above_max": "reject"}))
    assert caught.value.status == 403 and caught.value.param == "service_tier"
    assert caught.value.code == "service_tier_not_allowed"
    assert "'flex'" in caught.value.message


def test_priority_first_then_default_never_flex() -> None:
    found = _route("priority")
    assert _served(found) == [
        ("openai", "priority", "priority"),   # native priority tier, asked for it
        ("azure-eu", "priority", None),        # serves priority without a native value
        ("openai", "default", None),
        ("azure-eu", "default", None),
        ("groq", "default", None),
    ]
    batch = next(entry for entry in found.considered if entry.provider == "batch")
    assert not batch.chosen and [r.code for r in batch.reasons] == ["tier"]
    assert "served at priority then default only" in batch.reasons[0].detail


def test_default_never_uses_flex() -> None:
    found = _route("default")
    assert all(c.tier == "default" and c.deployment.native_tier is None for c in found.candidates)
    assert [c.spec.provider for c in found.candidates] == ["openai", "azure-eu", "groq"]
    batch = next(entry for entry in found.considered if entry.provider == "batch")
    assert batch.reasons[0].code == "tier" and "serves flex" in batch.reasons[0].detail


def test_flex_prefers_cheaper_flex_deployments_with_longer_timeouts_and_a_wait() -> None:
    found = _route("flex", service_tier={"flex_max_wait_s": 90})
    assert _served(found)[:2] == [("batch", "flex", None), ("openai", "flex", "flex")]  # 1+4 < 1.25+5
    assert [c.tier for c in found.candidates[2:]] == ["default"] * 3
    openai_flex = found.candidates[1]
    base = openai_flex.spec.by_tier["default"].timeouts
    assert openai_flex.deployment.timeouts.first_byte == base.first_byte * FLEX_TIMEOUT_FACTOR
    assert openai_flex.deployment.timeouts.total == base.total * FLEX_TIMEOUT_FACTOR
    assert openai_flex.max_wait_s == 90
    assert all(c.max_wait_s == 0 and c.deployment.timeouts == c.spec.deployment.timeouts
               for c in found.candidates[2:])


def test_explicit_tier_timeouts_win() -> None:
    deployment = {"provider": "openai", "model": "m", "tiers": ["flex"], "tier_timeouts": {"flex": {"first_byte": 900}}}
    model = Catalogue(settings_with(models={"m": {"deployments": [deployment]}}), environ=ENV.get).find("m")
    assert model is not None
    found = route(prepare(model, policy()), decide_tier("flex", policy()))
    assert found.candidates[0].deployment.timeouts == Timeouts(first_byte=900)


def test_served_tier_is_what_the_upstream_reported() -> None:
    spec = catalogue_model("gpt").specs[0]
    assert served_tier(spec, "priority", "default") == "default"   # priority asked, default served
    assert served_tier(spec, "flex", "flex") == "flex"
    assert served_tier(spec, "priority", None) == "priority"       # nothing reported: as asked
    native = msgspec.structs.replace(spec, native_tiers={"priority": "premium"})
    assert served_tier(native, "default", "premium") == "priority"  # a native value maps back


def test_cost_is_counted_at_the_served_tier() -> None:
    spec = catalogue_model("gpt").specs[0]
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000,
                  input_tokens_details=InputTokensDetails(cached_tokens=400_000))
    # default: 600k input at 2.5, 400k cached at 1.25, 500k output at 10
    assert cost(usage, spec, "default") == pytest.approx(1.5 + 0.5 + 5.0)
    # flex has no cached price: cached tokens cost the flex input price
    assert cost(usage, spec, "flex") == pytest.approx(1.25 + 2.5)
    assert cost(usage, spec, "priority") == pytest.approx(5.0 + 10.0)
    assert cost(usage, catalogue_model("gpt").specs[4], "default") == 0.0  # no price
