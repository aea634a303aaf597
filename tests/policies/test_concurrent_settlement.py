"""Usage settlements made at the same moment each count once (found by the chaos run: two
flushes of the pending queue sent its head twice, then each dropped an entry)."""

from __future__ import annotations

import asyncio
import math
import time

from redis.asyncio import Redis

from policies.backend import connect, team_key
from policies.limits import UsageRecord
from policies.limits_redis import RedisLimits
from tests.policies.conftest import REDIS_URL, policy

SETTLEMENTS = 40


def _record(index: int) -> UsageRecord:
    return UsageRecord(ts=time.time(), team="team-a", key="main", model="gpt", deployment="gpt#0:openai/gpt-4o",
                       tier="default", input_tokens=index, cached_tokens=0, output_tokens=1, cost=0.001 * (index + 1),
                       latency_ms=1.0, response_id=f"resp_{index}")


async def test_concurrent_settlements_each_count_once(prefix: str, redis: Redis) -> None:
    client = connect(REDIS_URL)
    assert client is not None
    limits = RedisLimits(client, prefix=prefix)
    try:
        chosen = policy(limits={"team": {"daily_budget": 100}})
        reservations = await asyncio.gather(*(limits.admit(chosen, "gpt") for _ in range(SETTLEMENTS)))
        await asyncio.gather(*(limits.settle(reservation, _record(index))
                               for index, reservation in enumerate(reservations)))
        records = await limits.usage("team-a", time.time() - 60, time.time() + 60)
    finally:
        await limits.close()
    assert sorted(record.response_id or "" for record in records) == sorted(
        f"resp_{index}" for index in range(SETTLEMENTS))
    spend_keys = [key async for key in redis.scan_iter(match=team_key(prefix, "team-a", "team:spend:d:*"))]
    spent = sum(float(value or 0) for value in await redis.mget(spend_keys))
    assert math.isclose(spent, sum(_record(index).cost for index in range(SETTLEMENTS)), rel_tol=1e-9)
