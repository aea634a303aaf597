"""Limits and budgets, in memory and through the real Redis (shared by separate instances)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from policies.backend import connect
from policies.limits import Limits, MemoryLimits, Reservation, UsageRecord
from policies.limits_redis import RedisLimits
from proxy.errors import RateLimited
from tests.policies.conftest import REDIS_URL, policy

Factory = Callable[[], Limits]


@pytest.fixture(params=["memory", "redis"])
async def new_limits(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Factory]:
    """Makes ``Limits`` sharing one state: one process's memory, or one Redis (each instance
    with its own connection, like separate gateway processes)."""
    made: list[Limits] = []
    memory = MemoryLimits()

    def make() -> Limits:
        limits: Limits = memory if request.param == "memory" else RedisLimits(connect(REDIS_URL), prefix=prefix)
        made.append(limits)
        return limits

    yield make
    for limits in made:
        await limits.close()


def _record(cost: float = 0.0, *, tokens: tuple[int, int] = (0, 0), team: str = "team-a", ts: float | None = None,
            model: str = "gpt") -> UsageRecord:
    return UsageRecord(ts=time.time() if ts is None else ts, team=team, key="main", model=model,
                       deployment="gpt#0:openai/gpt-4o", tier="default", input_tokens=tokens[0], cached_tokens=0,
                       output_tokens=tokens[1], cost=cost, latency_ms=12.5)


async def _admit_all(target: Limits, count: int, /, **rules: Any) -> list[Reservation | BaseException]:
    chosen = policy(**rules)
    return await asyncio.gather(*(target.admit(chosen, "gpt") for _ in range(count)), return_exceptions=True)


def _admitted(results: list[Reservation | BaseException]) -> int:
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, RateLimited):
            raise result
    return sum(isinstance(result, Reservation) for result in results)


async def test_10_rpm_admits_exactly_10_of_20_concurrent(new_limits: Factory) -> None:
    results = await _admit_all(new_limits(), 20, limits={"team": {"rpm": 10}})
    assert _admitted(results) == 10
    refusal = next(result for result in results if isinstance(result, RateLimited))
    assert refusal.status == 429 and refusal.code == "rate_limit_exceeded"
    assert refusal.message == "Rate limit reached: team rpm is 10 per minute for team 'team-a'. Retry after 6s."
    assert refusal.retry_after == 6


async def test_two_instances_share_one_limit(new_limits: Factory) -> None:
    first, second = new_limits(), new_limits()
    rules = {"limits": {"team": {"rpm": 10}}}
    both = await asyncio.gather(_admit_all(first, 10, **rules), _admit_all(second, 10, **rules))
    assert _admitted(both[0]) + _admitted(both[1]) == 10


async def test_a_budget_spent_on_one_instance_is_seen_by_the_other(new_limits: Factory) -> None:
    first, second = new_limits(), new_limits()
    chosen = policy(limits={"team": {"daily_budget": 5}})
    reservation = await first.admit(chosen, "gpt")
    await second.admit(chosen, "gpt")  # still under budget
    await first.settle(reservation, _record(5.01))
    with pytest.raises(RateLimited) as caught:
        await second.admit(chosen, "gpt")
    assert caught.value.code == "budget_exceeded"
    assert "team daily budget of 5 USD for team 'team-a' is spent" in caught.value.message
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 86400


async def test_monthly_budget_and_per_key_scope(new_limits: Factory) -> None:
    limits = new_limits()
    chosen = policy(limits={"key": {"monthly_budget": 1}})
    await limits.settle(await limits.admit(chosen, "gpt"), _record(1.0))
    with pytest.raises(RateLimited, match="key 'main' monthly budget of 1 USD"):
        await limits.admit(chosen, "gpt")
    other_key = policy(key="other", limits={"key": {"monthly_budget": 1}})
    await limits.admit(other_key, "gpt")


async def test_model_scoped_limits_apply_to_matching_aliases_only(new_limits: Factory) -> None:
    limits = new_limits()
    chosen = policy(limits={"models": {"gp*": {"rpm": 1}}})
    await limits.admit(chosen, "gpt")
    with pytest.raises(RateLimited, match="model 'gp\\*' rpm is 1 per minute"):
        await limits.admit(chosen, "gpt")
    await limits.admit(chosen, "other")


async def test_tpm_counts_the_actual_tokens_after_the_response(new_limits: Factory) -> None:
    limits = new_limits()
    chosen = policy(limits={"team": {"tpm": 1000}})
    first = await limits.admit(chosen, "gpt", reserve_tokens=100)
    assert first.statuses[0].remaining == pytest.approx(900, abs=1)
    await limits.settle(first, _record(tokens=(600, 450)))  # 1050 used: 950 more than reserved
    with pytest.raises(RateLimited, match="team tpm is 1000 per minute") as caught:
        await limits.admit(chosen, "gpt")
    assert caught.value.retry_after is not None and caught.value.retry_after >= 4  # ~51 tokens at 1000/min


async def test_a_refused_request_takes_nothing(new_limits: Factory) -> None:
    limits = new_limits()
    chosen = policy(limits={"key": {"rpm": 2}, "team": {"rpm": 1}})
    await limits.admit(chosen, "gpt")
    with pytest.raises(RateLimited, match="team rpm"):
        await limits.admit(chosen, "gpt")
    statuses = await limits.peek(chosen, "gpt")
    assert statuses is not None
    key_rpm = next(status for status in statuses if status.label == "key 'main' rpm")
    assert key_rpm.ok and key_rpm.remaining == pytest.approx(0, abs=0.01)  # one taken, one left for this one


async def test_the_429_names_the_limit_that_frees_up_last(new_limits: Factory) -> None:
    limits = new_limits()
    chosen = policy(limits={"team": {"rpm": 1, "daily_budget": 0}})
    with pytest.raises(RateLimited) as caught:
        await limits.admit(chosen, "gpt")
    assert caught.value.code == "budget_exceeded"


async def test_a_changed_policy_applies_from_the_next_request(new_limits: Factory) -> None:
    limits = new_limits()
    before = policy(limits={"team": {"rpm": 10}, "key": {"daily_budget": 1}})
    await limits.settle(await limits.admit(before, "gpt"), _record(1.0))
    after = policy(limits={"team": {"rpm": 1}, "key": {"daily_budget": 2}})  # as a reload makes it: a new policy
    statuses = {status.label: status for status in (await limits.admit(after, "gpt")).statuses}
    assert statuses["team rpm"].remaining == pytest.approx(0, abs=0.01)  # 9 left of 10, but 1 is the capacity now
    assert statuses["key 'main' daily budget"].remaining == pytest.approx(1)
    with pytest.raises(RateLimited, match="team rpm is 1 per minute"):
        await limits.admit(after, "gpt")


async def test_no_limits_no_io(new_limits: Factory) -> None:
    reservation = await new_limits().admit(policy(), "gpt")
    assert reservation.statuses == () and not reservation.degraded


async def test_usage_records_by_team_and_time_range(new_limits: Factory) -> None:
    limits = new_limits()
    now = time.time()
    for team in ("team-a", "team-b"):
        chosen = policy(team=team)
        for ts in (now - 3, now - 2, now - 1):
            await limits.settle(await limits.admit(chosen, "gpt"), _record(0.5, team=team, ts=ts, tokens=(10, 5)))
    records = await limits.usage("team-a", now - 2.5, now)
    assert [record.ts for record in records] == [now - 2, now - 1]
    assert {record.team for record in records} == {"team-a"}
    assert records[0].cost == 0.5 and records[0].input_tokens == 10 and records[0].latency_ms == 12.5
    assert len(await limits.usage("team-b", now - 10, now, limit=2)) == 2
    assert await limits.usage("team-c", now - 10, now) == []
    assert len(await limits.usage("team-a", 0, now)) == 3  # from the epoch (a stream id is never negative)


async def test_redis_keys_expire(redis: Redis, prefix: str) -> None:
    limits = RedisLimits(connect(REDIS_URL), prefix=prefix, retention_s=3600)
    # Buckets that refill slowly (a minute, ten seconds), so a loaded machine scans them before they expire.
    chosen = policy(limits={"team": {"rpm": 1, "tpm": 60, "daily_budget": 10}})
    await limits.settle(await limits.admit(chosen, "gpt", reserve_tokens=10), _record(1.0, tokens=(5, 5)))
    await limits.close()
    keys = [key async for key in redis.scan_iter(match="{" + prefix + "*")]
    assert len(keys) == 7  # rpm, tpm, usage, and day + month spend of the team and the key
    for key in keys:
        ttl = await redis.ttl(key)
        assert 0 < ttl <= 40 * 86400, (key, ttl)
    assert 0 < await redis.ttl("{" + prefix + "team-a}:team:rpm") <= 61  # expires once full again
