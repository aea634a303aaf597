"""``RedisLimits``: the limits of ``policies.limits`` shared by every replica through Redis.

Before the upstream call, one script call (``_ADMIT``) checks and takes every bucket and budget
of the request; after the response another (``_SETTLE``) counts tokens and cost and appends the
usage record. Every key either script touches is in the team's hash slot
(``{<prefix><team>}:...``), so both run unchanged on a single node, Sentinel and Cluster.

Keys, with ``S`` a scope (``team``, ``key:<name>``, ``model:<glob>``):
``S:rpm`` / ``S:tpm`` strings (``"<level> <time>"``) expiring once full again;
``S:spend:d:<YYYYMMDD>`` / ``S:spend:m:<YYYYMM>`` floats expiring a day after their period;
``usage`` a stream of records (field ``r``, JSON) trimmed to the retention.

When Redis is unreachable, ``admit`` applies the policy's fail mode and settlements wait in a
bounded queue, replayed in order once Redis answers again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import cast

import msgspec

from policies.backend import UNREACHABLE, Reachability, RedisClient, team_key
from policies.limits import Limits, LimitStatus, Plan, UsageRecord, cost_of
from policies.redis_batch import BatchedScript
from proxy.errors import ServerError

log = logging.getLogger("interlock.policies")

_PENDING_MAX = 10_000
_REPLAY_BATCH = 256
_TAGS_KEPT = 10_000
_record_decoder = msgspec.json.Decoder(UsageRecord)

# A bucket is the string "<level> <time>"; absent means full. It expires once full again.
_LEVEL = """
local function level_of(raw, cap, now)
    if not raw then return cap end
    local level, since = string.match(raw, '^(%S+) (%S+)$')
    return math.min(cap, tonumber(level) + math.max(0, now - tonumber(since)) * cap / 60)
end
local function store_level(key, level, cap, now)
    local ms = math.max(1000, math.ceil((cap - level) * 60000 / cap) + 1000)
    redis.call('SET', key, tostring(level) .. ' ' .. now, 'PX', ms)
end
"""

# KEYS: the request's buckets, then its budgets' spend counters.
# ARGV: now, bucket count, dry (1/0), capacity and cost per bucket, limit and reset time per budget.
# Returns "<ok>|<remaining>|<retry after>" per bucket then budget, joined by ";" (one reply
# element: a client parses each element separately); takes nothing unless all are ok.
_ADMIT = _LEVEL + """
local now, nb, dry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local values = redis.call('MGET', unpack(KEYS))
local out, levels, all_ok = {}, {}, true
for b = 1, nb do
    local cap, cost = tonumber(ARGV[2 + 2 * b]), tonumber(ARGV[3 + 2 * b])
    local level = level_of(values[b], cap, now)
    local need = math.max(1, math.min(cost, cap))
    levels[b] = level
    if level >= need then
        out[b] = '1|' .. tostring(level - cost) .. '|'
    else
        all_ok = false
        out[b] = '0|' .. tostring(level) .. '|' .. tostring((need - level) * 60 / cap)
    end
end
for j = nb + 1, #KEYS do
    local limit, reset = tonumber(ARGV[2 + 2 * j]), tonumber(ARGV[3 + 2 * j])
    local spent = tonumber(values[j] or '0')
    if spent < limit then
        out[j] = '1|' .. tostring(limit - spent) .. '|'
    else
        all_ok = false
        out[j] = '0|' .. tostring(limit - spent) .. '|' .. tostring(reset - now)
    end
end
if all_ok and not dry then
    for b = 1, nb do
        local cap, cost = tonumber(ARGV[2 + 2 * b]), tonumber(ARGV[3 + 2 * b])
        store_level(KEYS[b], levels[b] - cost, cap, ARGV[1])
    end
end
return table.concat(out, ';')
"""

# KEYS: the request's tpm buckets, then its spend counters, then the team's usage stream.
# ARGV: now, bucket count, capacity and tokens per bucket, expiry time per counter, then cost,
# the record, the oldest stream id to keep and the stream's lifetime in seconds.
_SETTLE = _LEVEL + """
local now, nb = tonumber(ARGV[1]), tonumber(ARGV[2])
if nb > 0 then
    local values = redis.call('MGET', unpack(KEYS, 1, nb))
    for b = 1, nb do
        local cap, tokens = tonumber(ARGV[1 + 2 * b]), tonumber(ARGV[2 + 2 * b])
        store_level(KEYS[b], level_of(values[b], cap, now) - tokens, cap, ARGV[1])
    end
end
local counters = #KEYS - nb - 1
local rest = 3 + 2 * nb
local cost = ARGV[rest + counters]
for c = 1, counters do
    redis.call('INCRBYFLOAT', KEYS[nb + c], cost)
    redis.call('EXPIREAT', KEYS[nb + c], ARGV[rest + c - 1])
end
local stream = KEYS[#KEYS]
redis.call('XADD', stream, 'MINID', '~', ARGV[rest + counters + 2], '*', 'r', ARGV[rest + counters + 1])
redis.call('EXPIRE', stream, ARGV[rest + counters + 3])
return 1
"""


class RedisLimits(Limits):
    def __init__(self, redis: RedisClient, *, prefix: str = "interlock:", currency: str = "USD",
                 retention_s: float = 31 * 86400, reachability: Reachability | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(currency=currency, clock=clock)
        self._redis = redis
        self._prefix = prefix
        self._retention = retention_s
        self._reach = reachability or Reachability()
        self._admit_script = BatchedScript(redis, _ADMIT)
        self._settle_script = BatchedScript(redis, _SETTLE)
        self._pending: deque[tuple[list[str], list[str | int | float]]] = deque(maxlen=_PENDING_MAX)
        self._tags: dict[str, str] = {}
        self._replaying = asyncio.Lock()

    async def close(self) -> None:
        await self._redis.aclose()

    async def _evaluate(self, plan: Plan, *, dry: bool) -> list[LimitStatus] | None:
        if not plan.buckets and not plan.budgets:
            return []
        if not self._reach.available():
            return None
        keys = [self._key(plan.team, bucket.id) for bucket in plan.buckets]
        keys += [self._key(plan.team, budget.id) for budget in plan.budgets]
        args: list[str | int | float] = [repr(self._clock()), len(plan.buckets), int(dry)]
        for bucket in plan.buckets:
            args += [bucket.capacity, cost_of(bucket, plan)]
        for budget in plan.budgets:
            args += [budget.limit, repr(budget.reset_at)]
        try:
            reply = cast(bytes, await self._admit_script(keys, args))
        except UNREACHABLE as exc:
            self._reach.failed("limits check", exc)
            return None
        self._reach.succeeded()
        limits = [(bucket.label, float(bucket.capacity)) for bucket in plan.buckets]
        limits += [(budget.label, budget.limit) for budget in plan.budgets]
        parts = reply.decode().split(";")
        return [_status(label, limit, part) for (label, limit), part in zip(limits, parts, strict=True)]

    async def _account(self, plan: Plan, tokens: int, record: UsageRecord) -> None:
        buckets = [bucket for bucket in plan.buckets if bucket.tokens]
        keys = [self._key(plan.team, bucket.id) for bucket in buckets]
        keys += [self._key(plan.team, counter) for counter, _ in plan.spend]
        keys.append(self._key(plan.team, "usage"))
        now = self._clock()
        args: list[str | int | float] = [repr(now), len(buckets)]
        for bucket in buckets:
            args += [bucket.capacity, tokens]
        args += [int(ends) + 86400 for _, ends in plan.spend]
        args += [repr(record.cost), msgspec.json.encode(record).decode(), int((now - self._retention) * 1000),
                 int(self._retention)]
        if self._pending or not self._reach.available():
            # Settlements are sent in order: behind the ones waiting from an outage.
            self._pending.append((keys, args))
            await self._replay()
            return
        try:
            await self._settle_script(keys, args)
        except UNREACHABLE as exc:
            self._reach.failed("usage accounting", exc)
            self._pending.append((keys, args))
            log.warning("%d usage settlements wait for the limits store", len(self._pending))
            return
        self._reach.succeeded()

    async def _replay(self) -> None:
        """Send the settlements kept during an outage, oldest first, a pipeline at a time."""
        # One replay at a time: two would both send the head of the queue, counting it twice.
        async with self._replaying:
            while self._pending and self._reach.available():
                batch = list(itertools.islice(self._pending, _REPLAY_BATCH))
                try:
                    replies = await self._settle_script.run_all(batch)
                except UNREACHABLE as exc:
                    self._reach.failed("usage accounting", exc)
                    log.warning("%d usage settlements wait for the limits store", len(self._pending))
                    return
                self._reach.succeeded()
                for _ in batch:
                    self._pending.popleft()
                for reply in replies:
                    if isinstance(reply, Exception):  # a script error: sending it again would fail again
                        log.error("a usage settlement was refused by the limits store: %s", reply)

    async def usage(self, team: str, start: float, end: float, *, limit: int = 1000) -> list[UsageRecord]:
        # Stream ids are Redis's clock and ``ts`` the gateway's: read a little wider, filter on ``ts``.
        try:
            entries = await self._redis.xrange(self._key(team, "usage"), min=max(0, int((start - 5) * 1000)),
                                               max=max(0, int((end + 5) * 1000)))
        except UNREACHABLE as exc:
            raise ServerError("Usage cannot be read right now: the limits store is unreachable.", status=503,
                              code="limits_unavailable", retryable=True, retry_after=1.0) from exc
        stream = cast(list[tuple[bytes, dict[bytes, bytes]]], entries)
        found = [_record_decoder.decode(fields[b"r"]) for _, fields in stream]
        return [record for record in found if start <= record.ts <= end][:limit]

    def _key(self, team: str, name: str) -> str:
        tag = self._tags.get(team)
        if tag is None:
            if len(self._tags) >= _TAGS_KEPT:
                self._tags.clear()
            tag = self._tags[team] = team_key(self._prefix, team, "")
        return tag + name


def _status(label: str, limit: float, reply: str) -> LimitStatus:
    ok, remaining, retry_after = reply.split("|")
    return LimitStatus(label=label, limit=limit, remaining=float(remaining), ok=ok == "1",
                       retry_after=float(retry_after) if retry_after else None)
