"""The gate: the policy step as the engine calls it, refusals included."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from policies.circuit import CircuitBoard
from policies.gate import Gate, needs
from policies.limits import MemoryLimits
from policies.limits_redis import RedisLimits
from policies.teams import PolicyStore
from proxy.auth import Principal
from proxy.decoding import ResponseRequest, decode_create_request
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    NotFound,
    PermissionDenied,
    RateLimited,
    UnsupportedFeature,
    UpstreamUnavailable,
)
from proxy.schema.response import InputTokensDetails, Usage
from tests.policies.conftest import REDIS_URL, settings_with, store_with

MAIN = Principal(team="team-a", key_name="main")


def _request(**body: Any) -> ResponseRequest:
    return decode_create_request(json.dumps({"model": "gpt", "input": "hi", **body}).encode())


def _gate(store: PolicyStore | None = None, *, failures: int = 3) -> Gate:
    return Gate(store or store_with(), MemoryLimits(), CircuitBoard(failures=failures, cooldown_s=30),
                rng=random.Random(3))


async def _refusal(gate: Gate, **body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await gate.admit(MAIN, _request(**body))
    return caught.value


async def test_admit_returns_the_route_and_the_request_level_decisions() -> None:
    gate = _gate(store_with(policy={"max_tool_calls": 8}))
    ticket = await gate.admit(MAIN, _request(service_tier="priority", max_tool_calls=20))
    assert [(c.spec.provider, c.tier) for c in ticket.route.candidates][:2] == [("openai", "priority"),
                                                                              ("azure-eu", "priority")]
    assert ticket.route.candidates[0].deployment.native_tier == "priority"
    assert ticket.decision.store is True and ticket.decision.max_tool_calls == 8
    assert (await gate.admit(MAIN, _request(max_tool_calls=3))).decision.max_tool_calls == 3
    assert (await gate.admit(MAIN, _request(store=False))).decision.store is False


async def test_unknown_and_forbidden_models() -> None:
    assert isinstance(await _refusal(_gate(), model="nope"), NotFound)
    refused = await _refusal(_gate(store_with(policy={"models": ["pool"]})))
    assert isinstance(refused, PermissionDenied) and refused.code == "model_not_allowed" and refused.param == "model"


async def test_tier_above_a_rejecting_cap() -> None:
    gate = _gate(store_with(policy={"service_tier": {"max": "default", "above_max": "reject"}}))
    refused = await _refusal(gate, service_tier="priority")
    assert refused.status == 403 and refused.code == "service_tier_not_allowed"


@pytest.mark.parametrize("field", ["store", "background"])
async def test_storing_forbidden_by_policy(field: str) -> None:
    gate = _gate(store_with(policy={"store": False}))
    refused = await _refusal(gate, **{field: True, "store": True})
    assert refused.status == 403 and refused.code == "store_not_allowed"
    assert (await gate.admit(MAIN, _request())).decision.store is False  # not asked: not stored


async def test_no_candidate_because_of_policy_is_403_naming_the_reasons() -> None:
    refused = await _refusal(_gate(store_with(policy={"regions": ["ap-*"]})))
    assert isinstance(refused, PermissionDenied) and refused.code == "no_allowed_deployment"
    assert "gpt#0:openai/gpt-4o: region 'us-east' matches none of ['ap-*'] (global)" in refused.message
    assert "NOKEY" not in refused.message  # which credentials are missing is not the caller's business


async def test_no_candidate_because_every_circuit_is_open_is_503() -> None:
    gate = _gate(failures=1)
    model = gate.policies.current.catalogue.find("gpt")
    assert model is not None
    for spec in model.specs:
        await gate.circuits.record(spec.upstream, ok=False)
    refused = await _refusal(gate)
    assert isinstance(refused, UpstreamUnavailable) and refused.status == 503
    assert refused.retry_after is not None and 25 < refused.retry_after <= 30


async def test_no_candidate_for_the_request_is_400() -> None:
    store = store_with(models={"m": {"deployments": [{"provider": "groq", "model": "x", "context_window": 10,
                                                      "capabilities": ["tools"]}]}})
    gate = _gate(store)
    with pytest.raises(ContextTooLong):
        await gate.admit(MAIN, _request(model="m"), input_tokens=11)
    with pytest.raises(UnsupportedFeature, match="lacks \\['reasoning'\\]"):
        await gate.admit(MAIN, _request(model="m", reasoning={"effort": "low"}))


async def test_only_unusable_deployments_is_404() -> None:
    store = store_with(models={"m": {"deployments": [{"provider": "nokey", "model": "x"}]}})
    assert isinstance(await _refusal(_gate(store), model="m"), NotFound)


async def test_limits_refuse_after_routing() -> None:
    gate = _gate(store_with(policy={"limits": {"key": {"rpm": 1}}}))
    await gate.admit(MAIN, _request())
    refused = await _refusal(gate)
    assert isinstance(refused, RateLimited) and "key 'main' rpm is 1 per minute" in refused.message


async def test_settle_counts_cost_at_the_served_tier_and_records_usage() -> None:
    gate = _gate(store_with(policy={"limits": {"team": {"tpm": 10_000}}}))
    ticket = await gate.admit(MAIN, _request(service_tier="priority"), input_tokens=100)
    candidate = ticket.route.candidates[0]
    assert candidate.tier == "priority"
    usage = Usage(input_tokens=1000, output_tokens=500, input_tokens_details=InputTokensDetails(cached_tokens=200))
    record = await gate.settle(ticket, candidate, usage, reported_tier="default", response_id="resp_1")
    assert record.tier == "default"  # priority asked, default served: default prices
    assert record.cost == pytest.approx((800 * 2.5 + 200 * 1.25 + 500 * 10) / 1e6)
    assert (record.team, record.key, record.model, record.deployment) == ("team-a", "main", "gpt",
                                                                           "gpt#0:openai/gpt-4o")
    assert record.latency_ms >= 0 and record.response_id == "resp_1"
    assert await gate.usage("team-a", time.time() - 60, time.time()) == [record]
    statuses = await gate.limits.peek(ticket.decision.policy, "gpt")
    assert statuses is not None and statuses[0].remaining == pytest.approx(10_000 - 1500, abs=2)


async def test_settle_without_an_answer_costs_nothing() -> None:
    gate = _gate()
    ticket = await gate.admit(MAIN, _request())
    record = await gate.settle(ticket, None, Usage())
    assert (record.deployment, record.cost, record.tier) == ("", 0.0, "default")


async def test_report_feeds_the_circuit() -> None:
    gate = _gate(failures=1)
    ticket = await gate.admit(MAIN, _request())
    first = ticket.route.candidates[0]
    await gate.report(first, ok=False)
    again = await gate.admit(MAIN, _request())
    assert first.spec.name not in [c.spec.name for c in again.route.candidates]


def test_needs_from_the_request() -> None:
    assert needs(_request()) == frozenset()
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "https://x.invalid/a.png"},
                                         {"type": "input_file", "file_id": "file_1"}]}
    assert needs(_request(input=[image], reasoning={"effort": "low"},
                          tools=[{"type": "function", "name": "f", "parameters": {}}])) == frozenset(
        {"vision", "files", "reasoning", "tools"})


@pytest.fixture
async def opened(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Gate]:
    settings = msgspec.structs.replace(settings_with(), **request.param, store_prefix=prefix)
    gate = Gate.open(PolicyStore(settings))
    yield gate
    await gate.close()


@pytest.mark.parametrize(("opened", "kind"), [
    ({}, MemoryLimits),
    ({"store": REDIS_URL}, RedisLimits),
    ({"limits_store": REDIS_URL}, RedisLimits),
    ({"store": REDIS_URL, "limits_store": "memory"}, MemoryLimits),
], indirect=["opened"])
async def test_open_picks_the_limits_store(opened: Gate, kind: type) -> None:
    assert type(opened.limits) is kind


@pytest.mark.parametrize("opened", [{"limits_store": REDIS_URL}], indirect=True)
async def test_start_runs_the_background_work_and_close_ends_it(opened: Gate) -> None:
    opened.start(watch_interval=0.01, circuit_interval=0.01)
    tasks = list(opened._tasks)
    assert [task.get_name() for task in tasks] == ["policy watch", "circuits"]
    await opened.close()
    assert all(task.cancelled() for task in tasks)
