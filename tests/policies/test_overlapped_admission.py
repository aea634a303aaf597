"""Admission beside the upstream call: with room to spare in every limit, a request's limits
round trip runs while its upstream call is made, and is waited for before anything reaches the
client. A refusal that arrives then still refuses: the upstream call is dropped, the client gets
the 429, nothing is streamed, stored or charged."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import msgspec
import pytest
import redis

from policies.backend import connect
from policies.circuit import CircuitBoard
from policies.gate import Gate
from policies.limits import LimitStatus, MemoryLimits, Plan, Reservation, UsageRecord, plan_limits, spare_requests
from policies.limits_redis import RedisLimits
from proxy.auth import Principal
from proxy.decoding import ResponseRequest, decode_create_request
from proxy.engine import Turn
from proxy.errors import RateLimited
from proxy.routes.responses import route_headers
from proxy.settings import Settings
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve
from tests.policies.conftest import REDIS_URL, policy, store_with
from tests.spec_validation import validate_error_body, validate_resource

MAIN = Principal(team="team-a", key_name="main")


def _request() -> ResponseRequest:
    return decode_create_request(json.dumps({"model": "gpt", "input": "hi"}).encode())


def _gate(prefix: str, limits: dict[str, Any]) -> Gate:
    return Gate(store_with(policy={"limits": limits}), RedisLimits(connect(REDIS_URL), prefix=prefix),
                CircuitBoard(failures=3, cooldown_s=30), rng=random.Random(3))


@pytest.fixture
async def gates(prefix: str) -> AsyncIterator[tuple[Gate, Gate]]:
    """Two replicas' gates over one Redis: key rpm 100."""
    made = (_gate(prefix, {"key": {"rpm": 100}}), _gate(prefix, {"key": {"rpm": 100}}))
    yield made
    for gate in made:
        await gate.close()


async def test_the_first_request_waits_and_later_ones_overlap(gates: tuple[Gate, Gate]) -> None:
    gate = gates[0]
    first = await gate.admit(MAIN, _request(), overlap=True)
    assert first.admission is None and first.reservation is not None  # nothing known yet: waited for
    second = await gate.admit(MAIN, _request(), overlap=True)
    assert second.admission is not None and second.reservation is None
    reservation = await second.confirm()
    assert [status.remaining for status in reservation.statuses] == [pytest.approx(98, abs=0.5)]  # refilling
    assert second.reservation is reservation and second.refusal is None
    asked_not_to = await gate.admit(MAIN, _request())
    assert asked_not_to.admission is None


async def test_a_refusal_after_another_replica_took_the_room_still_refuses(gates: tuple[Gate, Gate]) -> None:
    ours, theirs = gates
    await ours.admit(MAIN, _request(), overlap=True)  # 99 left: room for 89 overlapped requests here
    for _ in range(99):
        await theirs.admit(MAIN, _request())
    ticket = await ours.admit(MAIN, _request(), overlap=True)
    assert ticket.admission is not None
    with pytest.raises(RateLimited) as refused:
        await ticket.confirm()
    assert ticket.refusal is refused.value
    # the refusal is remembered: the next request waits for its admission again
    with pytest.raises(RateLimited):
        await ours.admit(MAIN, _request(), overlap=True)


async def test_room_counts_down_between_answers(prefix: str) -> None:
    gate = _gate(prefix, {"key": {"rpm": 10}})
    try:
        await gate.admit(MAIN, _request(), overlap=True)  # 9 left, 1 kept back: room for 8
        tickets = [await gate.admit(MAIN, _request(), overlap=True) for _ in range(9)]
        assert [ticket.admission is not None for ticket in tickets] == [True] * 8 + [False]
        for ticket in tickets:
            await ticket.confirm()
        with pytest.raises(RateLimited):  # nothing left, so nothing spare: refused before any upstream call
            await gate.admit(MAIN, _request(), overlap=True)
    finally:
        await gate.close()


async def test_limits_in_the_process_never_overlap() -> None:
    gate = Gate(store_with(policy={"limits": {"key": {"rpm": 100}}}), MemoryLimits(),
                CircuitBoard(failures=3, cooldown_s=30))
    for _ in range(3):
        assert (await gate.admit(MAIN, _request(), overlap=True)).admission is None


def _plan(**limits: Any) -> Plan:
    return plan_limits(policy(limits=limits), "gpt", reserve_tokens=50, now=time.time())


def _status(label: str, limit: float, remaining: float, ok: bool = True) -> LimitStatus:
    return LimitStatus(label=label, limit=limit, remaining=remaining, ok=ok)


def test_spare_requests_keep_a_tenth_of_every_limit_back() -> None:
    plan = _plan(team={"rpm": 100, "tpm": 10_000, "daily_budget": 10.0})
    statuses = [_status("team rpm", 100, 60), _status("team tpm", 10_000, 6_000), _status("team daily budget", 10, 5)]
    assert spare_requests(plan, statuses) == 50  # rpm: 60 - 10; tpm: (6000 - 1000) // 50 = 100
    low_budget = [*statuses[:2], _status("team daily budget", 10, 0.5)]
    assert spare_requests(plan, low_budget) == 0  # within the margin: the next cost is unknown
    refused = [_status("team rpm", 100, 0, ok=False), *statuses[1:]]
    assert spare_requests(plan, refused) == 0


def test_spare_requests_are_bounded_by_the_tightest_bucket_and_the_reservation() -> None:
    plan = _plan(key={"rpm": 1_000, "tpm": 100_000}, team={"rpm": 100, "tpm": 10_000})
    statuses = [_status("key rpm", 1_000, 900), _status("key tpm", 100_000, 20_000),
                _status("team rpm", 100, 90), _status("team tpm", 10_000, 9_000)]
    # key rpm 800, key tpm (20000 - 10000) // 50 = 200, team rpm 80, team tpm 8000 // 50 = 160
    assert spare_requests(plan, statuses) == 80
    assert spare_requests(_plan(team={"rpm": 10**12}), [_status("team rpm", 10**12, 10**12)]) == 1_000_000


def test_rate_limit_headers_report_the_tightest_requests_and_tokens_limit() -> None:
    plan = _plan(key={"rpm": 1_000, "tpm": 100_000}, team={"rpm": 100, "tpm": 10_000, "daily_budget": 5.0})
    statuses = (_status("key rpm", 1_000, 40), _status("key tpm", 100_000, 20_000),
                _status("team rpm", 100, 60), _status("team tpm", 10_000, 9_000.7),
                _status("team daily budget", 5.0, 0.5))
    turn = SimpleNamespace(attempts=2, overhead_s=0.0012, candidate=None,
                           ticket=SimpleNamespace(reservation=Reservation(plan=plan, statuses=statuses)))
    headers = route_headers(cast(Turn, turn))
    assert headers == {"x-interlock-attempts": "2", "x-interlock-overhead-ms": "1.200",
                       "x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "40",
                       "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "9000"}
    degraded = SimpleNamespace(attempts=1, overhead_s=0.0, candidate=None, ticket=SimpleNamespace(
        reservation=Reservation(plan=plan, statuses=(), degraded=True)))
    assert not any(name.startswith("x-ratelimit") for name in route_headers(cast(Turn, degraded)))


# -- through the gateway -------------------------------------------------------------------------

_BUDGET = 5.0
_OTHERS = "resp_of_another_replica"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    prefix = f"test-overlap-{random.getrandbits(40):x}:"
    base = msgspec.to_builtins(gateway_settings(f"sqlite:///{tmp_path / 'store.db'}", store_prefix=prefix))
    base["limits_store"] = REDIS_URL
    base["policy"] = {"limits": {"key": {"rpm": 100, "tpm": 1_000_000}, "team": {"daily_budget": _BUDGET}}}
    base["retry"] = {"attempts": 1}
    base["providers"]["down"] = {"dialect": "openai_responses", "base_url": "embedded",
                                 "headers": {"x-sim-fault": "status:503"}}
    base["models"]["down"] = {"deployments": [{"provider": "down", "model": "sim-1"}]}
    base["providers"]["slow"] = {"dialect": "openai_responses", "base_url": "embedded",
                                 "headers": {"x-sim-token-delay-ms": "50"}}
    base["models"]["slow"] = {"deployments": [{"provider": "slow", "model": "sim-1"}]}
    try:
        with serve(msgspec.convert(base, Settings)) as running:
            yield running
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match="{" + prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def _client(running: RunningGateway) -> httpx.Client:
    return httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {TEAM_A_KEY}"}, timeout=30)


def _drain(running: RunningGateway) -> None:
    """Another replica spends what is left of the team's daily budget: one settlement, as it would.
    (A budget, not the rpm: a drained rpm refills by one request within 0.6 s, which a slow
    moment of the machine let the next request find.)"""

    async def spend() -> None:
        other = RedisLimits(connect(REDIS_URL), prefix=running.settings.store_prefix)
        chosen = running.gateway.gate.policies.current.policy(Principal(team="team-a", key_name="a"))
        try:
            reservation = await other.admit(chosen, "down")
            await other.settle(reservation, UsageRecord(ts=time.time(), team="team-a", key="a", model="down",
                                                        deployment="", tier="default", input_tokens=0,
                                                        cached_tokens=0, output_tokens=0, cost=_BUDGET,
                                                        latency_ms=1.0, response_id=_OTHERS))
        finally:
            await other.close()

    asyncio.run(spend())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_request_refused_beside_its_upstream_call_gets_the_429_and_nothing_else(
        gateway: RunningGateway, stream: bool) -> None:
    simulator = gateway.gateway.simulator_url
    with _client(gateway) as client:
        first = client.post("/v1/responses", json={"model": "sim", "input": "one"})
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "99"
        validate_resource(first.json())
        _drain(gateway)
        httpx.delete(f"{simulator}/_sim/requests")
        refused = client.post("/v1/responses", json={"model": "sim", "input": "two", "stream": stream})
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/json")  # no stream was started
        validate_error_body(refused.json())
        assert refused.json()["error"]["code"] == "budget_exceeded" and "retry-after" in refused.headers
        sent = httpx.get(f"{simulator}/_sim/requests").json()
        assert len(sent) == 1, "the upstream call was made beside the admission"
        usage = client.get("/v1/usage").json()
        assert [record["response_id"] for record in usage["data"]] == [first.json()["id"], _OTHERS]


def test_an_upstream_failure_beside_an_admitted_request_is_settled(gateway: RunningGateway) -> None:
    with _client(gateway) as client:
        assert client.post("/v1/responses", json={"model": "down", "input": "one"}).status_code == 503
        # admitted beside the call, reserving about 10,000 tokens
        failed = client.post("/v1/responses", json={"model": "down", "input": "two " * 10_000})
        assert failed.status_code == 503 and failed.json()["error"]["type"] == "service_unavailable"
        records = client.get("/v1/usage").json()["data"]
        assert len(records) == 2 and all(record["deployment"] == "" for record in records)
        # both settled: the tpm reservations are back, so only the rpm shows them
        served = client.post("/v1/responses", json={"model": "sim", "input": "three"})
        assert served.headers["x-ratelimit-remaining-requests"] == "97"
        assert int(served.headers["x-ratelimit-remaining-tokens"]) > 1_000_000 - 1_000


def test_a_refusal_outranks_the_upstream_failure_it_overlapped(gateway: RunningGateway) -> None:
    with _client(gateway) as client:
        assert client.post("/v1/responses", json={"model": "down", "input": "one"}).status_code == 503
        _drain(gateway)
        refused = client.post("/v1/responses", json={"model": "down", "input": "two"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        records = client.get("/v1/usage").json()["data"]
        assert [record["response_id"] for record in records][1:] == [_OTHERS]  # the refused request took nothing


def test_a_client_that_leaves_mid_stream_is_still_charged(gateway: RunningGateway) -> None:
    """The first request's admission is waited for, the second's runs beside its upstream call;
    either way the request is charged once the client has gone (settled in the request's own task
    once its admission has answered, in a shielded task of its own before)."""
    left = []
    with _client(gateway) as client:
        for _ in range(2):
            body = {"model": "slow", "input": " ".join(["word"] * 40), "stream": True}
            with client.stream("POST", "/v1/responses", json=body) as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event["type"] == "response.created":
                            left.append(event["response"]["id"])
                        if event["type"] == "response.output_text.delta":
                            break  # leave, with about 40 deltas still to come
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            charged = [record["response_id"] for record in client.get("/v1/usage").json()["data"]]
            if charged == left:
                break
            time.sleep(0.1)
        assert len(left) == 2 and charged == left
