"""When Redis is unreachable: per-policy fail-open or fail-closed, and recovery by itself.

"Redis" is a forwarder on a loopback port: closed at first (connection refused), then
forwarding to the machine's Redis, which is never stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from policies.backend import Reachability, connect
from policies.circuit import CircuitBoard
from policies.limits import UsageRecord
from policies.limits_redis import RedisLimits
from proxy.errors import RateLimited, ServerError
from tests.policies.conftest import Forwarder, policy

RETRY_S = 0.05


@pytest.fixture
async def forwarder() -> AsyncIterator[Forwarder]:
    fake = Forwarder()
    yield fake
    await fake.stop()


@pytest.fixture
async def limits(forwarder: Forwarder, prefix: str) -> AsyncIterator[RedisLimits]:
    made = RedisLimits(connect(f"redis://127.0.0.1:{forwarder.port}/0"), prefix=prefix,
                       reachability=Reachability(retry_s=RETRY_S))
    yield made
    await made.close()


def _record(cost: float) -> UsageRecord:
    return UsageRecord(ts=time.time(), team="team-a", key="main", model="gpt", deployment="d", tier="default",
                       input_tokens=1, cached_tokens=0, output_tokens=1, cost=cost, latency_ms=1.0)


async def test_fail_open_serves_without_limits_then_recovers(limits: RedisLimits, forwarder: Forwarder) -> None:
    chosen = policy(limits={"team": {"rpm": 1}, "fail_mode": "open"})
    for _ in range(3):  # over the limit, but nothing can count it
        reservation = await limits.admit(chosen, "gpt")
        assert reservation.degraded and reservation.statuses == ()
    await forwarder.start()
    await asyncio.sleep(RETRY_S * 2)
    recovered = await limits.admit(chosen, "gpt")
    assert not recovered.degraded and recovered.statuses[0].label == "team rpm"
    with pytest.raises(RateLimited):
        await limits.admit(chosen, "gpt")


async def test_fail_closed_refuses_with_503_then_recovers(limits: RedisLimits, forwarder: Forwarder) -> None:
    chosen = policy(limits={"team": {"rpm": 5}, "fail_mode": "closed"})
    with pytest.raises(ServerError) as caught:
        await limits.admit(chosen, "gpt")
    assert caught.value.status == 503 and caught.value.code == "limits_unavailable"
    assert caught.value.retryable and caught.value.retry_after == 1.0
    await forwarder.start()
    await asyncio.sleep(RETRY_S * 2)
    assert not (await limits.admit(chosen, "gpt")).degraded


async def test_a_failure_is_not_retried_until_the_interval_passes(limits: RedisLimits, forwarder: Forwarder) -> None:
    chosen = policy(limits={"team": {"rpm": 5}, "fail_mode": "open"})
    assert (await limits.admit(chosen, "gpt")).degraded
    await forwarder.start()
    assert (await limits.admit(chosen, "gpt")).degraded  # still within the retry interval: no attempt
    await asyncio.sleep(RETRY_S * 2)
    assert not (await limits.admit(chosen, "gpt")).degraded


async def test_settlements_wait_for_redis_and_are_replayed(limits: RedisLimits, forwarder: Forwarder) -> None:
    chosen = policy(limits={"team": {"daily_budget": 2}})
    reservation = await limits.admit(chosen, "gpt")
    await limits.settle(reservation, _record(1.5))  # unreachable: kept
    await forwarder.start()
    await asyncio.sleep(RETRY_S * 2)
    await limits.settle(reservation, _record(1.0))  # reachable: both written, in order
    records = await limits.usage("team-a", time.time() - 60, time.time())
    assert [record.cost for record in records] == [1.5, 1.0]
    with pytest.raises(RateLimited, match="daily budget"):
        await limits.admit(chosen, "gpt")


async def test_a_degraded_request_is_charged_its_full_tokens(limits: RedisLimits, forwarder: Forwarder) -> None:
    chosen = policy(limits={"team": {"tpm": 1000}})
    reservation = await limits.admit(chosen, "gpt", reserve_tokens=400)
    assert reservation.degraded  # nothing reserved
    await forwarder.start()
    await asyncio.sleep(RETRY_S * 2)
    await limits.settle(reservation, _record(0.0))  # 1 input + 1 output token
    statuses = await limits.peek(chosen, "gpt")
    assert statuses is not None and statuses[0].remaining == pytest.approx(998, abs=0.5)


async def test_usage_query_reports_an_unreachable_store(limits: RedisLimits) -> None:
    with pytest.raises(ServerError) as caught:
        await limits.usage("team-a", 0, time.time())
    assert caught.value.status == 503


async def test_circuits_keep_working_locally_without_redis(forwarder: Forwarder, prefix: str) -> None:
    redis = connect(f"redis://127.0.0.1:{forwarder.port}/0")
    board = CircuitBoard(failures=2, cooldown_s=60, redis=redis, prefix=prefix,
                         reachability=Reachability(retry_s=RETRY_S))
    await board.record("p/m", ok=False)
    assert (await board.record("p/m", ok=False)).state == "open"
    await board.refresh(["p/m"])  # unreachable: the local view stays
    assert board.state("p/m").state == "open"
    await redis.aclose()
