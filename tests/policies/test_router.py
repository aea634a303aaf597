"""The router: every exclusion reason, ordering, weighted choice, prompt_cache_key stickiness."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from policies.circuit import CircuitState
from policies.router import Route, prepare, route
from policies.tiers import decide_tier
from tests.policies.conftest import catalogue_model, policy


def _route(alias: str = "gpt", tier: str = "default", *, rules: dict[str, object] | None = None,
           **kwargs: object) -> Route:
    chosen = policy(**(rules or {}))
    return route(prepare(catalogue_model(alias), chosen), decide_tier(tier, chosen), **{"explain": True, **kwargs})


def _codes(found: Route) -> dict[str, list[str]]:
    return {entry.provider: [r.code for r in entry.reasons if not entry.chosen] for entry in found.considered}


def _order(found: Route) -> list[str]:
    return [c.spec.provider for c in found.candidates]


def test_every_deployment_is_considered_with_reasons() -> None:
    found = _route(rng=random.Random(0))
    assert [entry.provider for entry in found.considered] == ["openai", "azure-eu", "groq", "batch", "nokey"]
    chosen = {entry.provider: entry for entry in found.considered if entry.chosen}
    assert set(chosen) == {"openai", "azure-eu", "groq"}
    assert chosen["openai"].positions == [0]
    assert [r.code for r in chosen["openai"].reasons] == ["served", "rank"]
    assert chosen["openai"].reasons[1].detail == "candidate 1, order 0"
    assert _codes(found)["nokey"] == ["unavailable"]
    assert _codes(found)["batch"] == ["tier"]


@pytest.mark.parametrize(("rules", "provider", "code", "detail"), [
    ({"providers": {"deny": ["gro*"]}}, "groq", "provider_denied", "provider 'groq' matches deny 'gro*' (team)"),
    ({"providers": {"allow": ["openai"]}}, "azure-eu", "provider_not_allowed",
     "provider 'azure-eu' matches none of allow ['openai'] (team)"),
    ({"regions": ["eu-*"]}, "openai", "region", "region 'us-east' matches none of ['eu-*'] (team)"),
    ({"regions": ["eu-*"]}, "groq", "region", "region 'unknown' matches none of ['eu-*'] (team)"),
    ({"models": ["pool"]}, "openai", "model_not_allowed", "model 'gpt' matches none of the team's models ['pool']"),
])
def test_policy_exclusions(rules: dict[str, object], provider: str, code: str, detail: str) -> None:
    found = _route(rules=rules)
    entry = next(entry for entry in found.considered if entry.provider == provider)
    assert not entry.chosen and entry.positions == []
    reason = next(r for r in entry.reasons if r.code == code)
    assert reason.detail.startswith(detail)
    assert provider not in _order(found)


def test_deny_wins_over_allow() -> None:
    found = _route(rules={"providers": {"allow": ["*"], "deny": ["openai"]}})
    assert "openai" not in _order(found) and _codes(found)["openai"] == ["provider_denied"]


def test_regions_star_admits_deployments_without_a_region() -> None:
    assert "groq" in _order(_route(rules={"regions": ["eu-*", "*"]}))


def test_capabilities_the_request_needs() -> None:
    found = _route(needs=frozenset({"vision"}))
    # openai declares vision, azure does not, groq declares nothing (assumed capable)
    assert _order(found) == ["openai", "groq"]
    azure = next(entry for entry in found.considered if entry.provider == "azure-eu")
    assert azure.reasons[0].code == "capability" and "['vision']" in azure.reasons[0].detail


def test_context_window() -> None:
    found = _route(input_tokens=20_000)
    assert _order(found) == ["openai", "groq"]
    azure = next(entry for entry in found.considered if entry.provider == "azure-eu")
    assert azure.reasons[0].code == "context_window"
    assert azure.reasons[0].detail == "context window 8000 tokens, the request has about 20000"


def test_open_circuits_are_excluded_and_half_open_ones_tried() -> None:
    states = {"openai/gpt-4o": CircuitState(state="open", failures=5, retry_at=2e9),
              "groq/llama-70b": CircuitState(state="half_open", failures=5, retry_at=1.0)}
    found = _route(circuits=lambda up: states.get(up, CircuitState(state="closed", failures=0)))
    assert _order(found) == ["azure-eu", "groq"]
    assert _codes(found)["openai"] == ["circuit_open"]
    groq = next(entry for entry in found.considered if entry.provider == "groq")
    assert groq.chosen and groq.reasons[0].code == "circuit_half_open"


def test_provider_preference_comes_before_catalogue_order() -> None:
    found = _route(rules={"providers": {"prefer": ["groq", "azure-*"]}})
    assert _order(found) == ["groq", "azure-eu", "openai"]
    openai = next(entry for entry in found.considered if entry.provider == "openai")
    assert "provider not in the team's preference list" in openai.reasons[-1].detail


def test_weighted_choice_among_equals_is_deterministic_under_a_seed() -> None:
    first = [_order(_route("pool", rng=random.Random(seed))) for seed in range(20)]
    again = [_order(_route("pool", rng=random.Random(seed))) for seed in range(20)]
    assert first == again
    assert all(order[2] == "groq" for order in first)  # order 1 always after the order-0 pair


def test_weighted_choice_follows_the_weights() -> None:
    rng = random.Random(7)
    leaders = Counter(_order(_route("pool", rng=rng))[0] for _ in range(4000))
    assert leaders["openai"] / 4000 == pytest.approx(0.75, abs=0.03)  # weight 3 of 4
    entry = next(e for e in _route("pool", rng=rng).considered if e.provider == "openai")
    assert "weight 3 of 4 among 2 equals (weighted draw)" in entry.reasons[-1].detail


def test_prompt_cache_key_sticks_to_one_deployment_while_healthy() -> None:
    keys = [f"conversation-{n}" for n in range(200)]
    firsts = {key: _order(_route("pool", cache_key=key, rng=random.Random(n)))[0] for n, key in enumerate(keys)}
    again = {key: _order(_route("pool", cache_key=key, rng=random.Random(99)))[0] for key in keys}
    assert firsts == again
    assert Counter(firsts.values())["openai"] / len(keys) == pytest.approx(0.75, abs=0.1)
    # When its deployment's circuit opens, a key moves; the others stay where they were.
    def azure_open(upstream: str) -> CircuitState:
        if upstream == "azure-eu/b":
            return CircuitState(state="open", failures=5, retry_at=2e9)
        return CircuitState(state="closed", failures=0)
    moved = {key: _order(_route("pool", cache_key=key, circuits=azure_open))[0] for key in keys}
    assert all(moved[key] == "openai" for key in keys)
    assert all(moved[key] == firsts[key] for key in keys if firsts[key] == "openai")


def test_chosen_reasons_only_when_explaining() -> None:
    found = _route(explain=False)
    assert [entry.reasons for entry in found.considered if entry.chosen] == [[], [], []]
    assert _codes(found)["nokey"] == ["unavailable"]  # exclusions always say why
