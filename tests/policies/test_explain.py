"""Explain: the ordered candidates and, for every deployment, why it is in or out."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from policies.circuit import CircuitBoard
from policies.explain import Explanation, explain, explain_files
from policies.limits import MemoryLimits, UsageRecord
from proxy.auth import hash_key
from tests.policies.conftest import CATALOGUE, REDIS_URL, store_with


async def _explain(body: dict[str, Any] | None = None, *, policy: dict[str, Any] | None = None,
                   team: str = "team-a", key: str | None = "main", limits: MemoryLimits | None = None,
                   circuits: CircuitBoard | None = None, input_tokens: int | None = None) -> Explanation:
    store = store_with(policy=policy or {})
    raw = json.dumps({"model": "gpt", "input": "hi", **(body or {})}).encode()
    return await explain(store.current, raw, team=team, key=key, limits=limits,
                         circuits=circuits.state if circuits else None, input_tokens=input_tokens,
                         rng=random.Random(0))


def _reasons(result: Explanation, provider: str) -> list[tuple[str, str]]:
    entry = next(entry for entry in result.considered if entry.provider == provider)
    return [(reason.code, reason.detail) for reason in entry.reasons]


async def test_chosen_deployments_say_why_and_where() -> None:
    result = await _explain({"service_tier": "priority"})
    assert result.refused is None and (result.requested_tier, result.tier) == ("priority", "priority")
    assert [(c.position, c.provider, c.tier, c.native_tier) for c in result.candidates][:3] == [
        (0, "openai", "priority", "priority"), (1, "azure-eu", "priority", None), (2, "openai", "default", None)]
    assert result.candidates[0].price is not None and result.candidates[0].price.input == 5
    openai = next(entry for entry in result.considered if entry.provider == "openai")
    assert openai.chosen and openai.positions == [0, 2]
    assert _reasons(result, "openai")[:2] == [("served", "serves priority, asked natively as 'priority'"),
                                              ("rank", "candidate 1, order 0")]
    assert ("served", "serves default (fallback: priority is served first where available)") in _reasons(
        result, "openai")
    assert result.policy is not None and result.policy.team == "team-a"


@pytest.mark.parametrize(("policy", "body", "provider", "code", "detail"), [
    ({}, {}, "nokey", "unavailable", "not usable: needs NOKEY_KEY"),
    ({"providers": {"deny": ["groq"]}}, {}, "groq", "provider_denied", "provider 'groq' matches deny 'groq' (global)"),
    ({"providers": {"allow": ["openai", "groq"]}}, {}, "azure-eu", "provider_not_allowed",
     "provider 'azure-eu' matches none of allow ['openai', 'groq'] (global)"),
    ({"regions": ["us-*"]}, {}, "azure-eu", "region", "region 'eu-west' matches none of ['us-*'] (global)"),
    ({}, {"reasoning": {"effort": "low"}}, "azure-eu", "capability", "lacks ['reasoning'], which the request needs"),
    ({}, {}, "batch", "tier", "serves flex; a 'default' request is served at default only"),
])
async def test_each_exclusion_reason(policy: dict[str, Any], body: dict[str, Any], provider: str, code: str,
                                     detail: str) -> None:
    result = await _explain(body, policy=policy)
    assert result.refused is None
    assert (code, detail) in _reasons(result, provider)
    assert provider not in [candidate.provider for candidate in result.candidates]


async def test_context_window_exclusion() -> None:
    result = await _explain(input_tokens=9000)
    assert ("context_window", "context window 8000 tokens, the request has about 9000") in _reasons(result, "azure-eu")


async def test_circuit_exclusion() -> None:
    board = CircuitBoard(failures=1, cooldown_s=30)
    await board.record("groq/llama-70b", ok=False)
    result = await _explain(circuits=board)
    code, detail = _reasons(result, "groq")[0]
    assert code == "circuit_open" and detail.startswith("circuit open after 1 consecutive failures; half-open at")


async def test_policy_rule_excludes_every_deployment_and_refuses() -> None:
    result = await _explain(policy={"models": ["pool"]})
    assert result.refused is not None and (result.refused.status, result.refused.code) == (403, "model_not_allowed")
    assert result.candidates == [] and not any(entry.chosen for entry in result.considered)
    assert all(("model_not_allowed", "model 'gpt' matches none of the team's models ['pool'] (global)")
               in _reasons(result, entry.provider) for entry in result.considered)


async def test_tier_refusal_excludes_every_deployment() -> None:
    result = await _explain({"service_tier": "priority"},
                            policy={"service_tier": {"max": "default", "above_max": "reject"}})
    assert result.refused is not None and result.refused.code == "service_tier_not_allowed"
    assert result.tier == "default" and result.tier_note == "refused above the team's cap"
    assert all(entry.reasons[-1].code == "tier" and not entry.chosen for entry in result.considered)


async def test_request_level_refusal_marks_the_route_it_would_have_had() -> None:
    result = await _explain({"store": True}, policy={"store": False})
    assert result.refused is not None and result.refused.code == "store_not_allowed"
    openai = _reasons(result, "openai")
    assert openai[-1][0] == "refused" and "storing responses" in openai[-1][1]


@pytest.mark.parametrize(("quota", "code", "detail"), [
    ({"rpm": 1}, "limit", "team rpm of 1/min reached (0 left); frees up in 60s"),
    ({"daily_budget": 1}, "budget", "team daily budget of 1 USD reached (-0.5 left)"),
])
async def test_limit_and_budget_exclusions(quota: dict[str, Any], code: str, detail: str) -> None:
    limits = MemoryLimits()
    store = store_with(policy={"limits": {"team": quota}})
    policy = store.current.team_policy("team-a", "main")
    reservation = await limits.admit(policy, "gpt")
    await limits.settle(reservation, UsageRecord(ts=time.time(), team="team-a", key="main", model="gpt",
                                                 deployment="d", tier="default", input_tokens=0, cached_tokens=0,
                                                 output_tokens=0, cost=1.5, latency_ms=1.0))
    raw = json.dumps({"model": "gpt", "input": "hi"}).encode()
    result = await explain(store.current, raw, team="team-a", key="main", limits=limits)
    assert result.refused is not None and result.refused.status == 429
    assert result.candidates == [] and not any(entry.chosen for entry in result.considered)
    code_found, detail_found = _reasons(result, "openai")[-1]
    assert code_found == code and detail_found.startswith(detail)
    assert result.limits is not None and not all(status.ok for status in result.limits)


async def test_unknown_team_key_and_bad_body() -> None:
    assert (await _explain(team="nobody")).refused.message == "The team 'nobody' is unknown."
    assert (await _explain(key="nope")).refused.message == "The team 'team-a' has no key named 'nope'."
    store = store_with()
    bad = await explain(store.current, b"{not json", team="team-a")
    assert bad.refused is not None and bad.refused.status == 400 and bad.considered == []
    unknown = await _explain({"model": "nope"})
    assert unknown.refused is not None and unknown.refused.status == 404 and unknown.considered == []


async def test_team_level_explain_without_a_key() -> None:
    limits = MemoryLimits()
    result = await _explain(key=None, policy={"limits": {"key": {"rpm": 5}, "team": {"rpm": 50}}}, limits=limits)
    assert result.refused is None and result.key is None and result.candidates
    assert [status.label for status in result.limits or []] == ["team rpm"]


async def test_the_explanation_is_json_without_secrets() -> None:
    result = await _explain({"service_tier": "flex"})
    encoded = msgspec.json.encode(result)
    assert b"sk-openai" not in encoded and b"api_key" not in encoded
    decoded = json.loads(encoded)
    assert decoded["candidates"][0]["timeouts"]["first_byte"] == 180.0  # flex: three times the usual
    assert msgspec.json.decode(encoded, type=Explanation) == result


@pytest.mark.parametrize("limits_store", ["memory", REDIS_URL])
async def test_explain_files_for_the_cli(tmp_path: Path, limits_store: str, prefix: str) -> None:
    config = tmp_path / "gateway.yaml"
    providers = {name: {**provider, "api_key_env": None} for name, provider in CATALOGUE["providers"].items()}
    document = {**CATALOGUE, "providers": providers, "limits_store": limits_store, "store_prefix": prefix,
                "teams": {"team-a": {"keys": [{"sha256": hash_key("k"), "name": "main"}]}},
                "policy": {"limits": {"team": {"rpm": 5}}}}
    config.write_text(yaml.safe_dump(document))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt", "input": "hello", "service_tier": "flex"}))
    result = await explain_files(config, request, team="team-a")
    assert result.refused is None and result.tier == "flex"
    assert [c.provider for c in result.candidates][:2] == ["batch", "openai"]
    assert result.limits is not None and result.limits[0].label == "team rpm" and result.limits[0].ok
