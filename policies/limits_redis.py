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
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import cast

import msgspec
from msgspec import Struct

from policies.backend import UNREACHABLE, Reachability, RedisClient, team_key
from policies.limits import Bucket, Budget, Limits, LimitStatus, Plan, Settlement, UsageRecord
from policies.redis_batch import ScriptCall, ScriptPipe
from proxy.errors import ServerError

log = logging.getLogger("interlock.policies")

_PENDING_MAX = 10_000
_REPLAY_BATCH = 256
_CALLS_KEPT = 10_000
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
# ARGV: now, dry (1/0), the tpm reservation, then the plan: "<capacity>:<r|t>" per bucket (t: a
# tpm bucket, which admitting takes the reservation from; r: one that it takes 1 from), then "|",
# then "<limit>:<reset time>" per budget; the entries of each list joined by ";". The plan is one
# argument, the same for every request under a policy, so the gateway builds and encodes it once.
# Returns "<ok>|<remaining>|<retry after>" per bucket then budget, joined by ";" (one reply
# element: a client parses each element separately); takes nothing unless all are ok.
_ADMIT = _LEVEL + """
local now, dry, reserved = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local bucket_plan, budget_plan = string.match(ARGV[4], '^(.-)|(.*)$')
local caps, costs, nb = {}, {}, 0
for cap, kind in string.gmatch(bucket_plan, '([^;:]+):([rt])') do
    nb = nb + 1
    caps[nb], costs[nb] = tonumber(cap), kind == 't' and reserved or 1
end
local values = redis.call('MGET', unpack(KEYS))
local out, levels, all_ok = {}, {}, true
for b = 1, nb do
    local cap, cost = caps[b], costs[b]
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
local j = nb
for limit, reset in string.gmatch(budget_plan, '([^;:]+):([^;]+)') do
    j = j + 1
    limit, reset = tonumber(limit), tonumber(reset)
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
        store_level(KEYS[b], levels[b] - costs[b], caps[b], ARGV[1])
    end
end
return table.concat(out, ';')
"""

# KEYS: the request's tpm buckets, then its spend counters, then the team's usage stream.
# ARGV: now, tokens, cost, the record, the oldest stream id to keep, the stream's lifetime in
# seconds, then the plan: the capacity of each tpm bucket, "|", the expiry time of each counter
# (each list joined by ";").
_SETTLE = _LEVEL + """
local now, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap_plan, expiry_plan = string.match(ARGV[7], '^(.-)|(.*)$')
local caps = {}
for cap in string.gmatch(cap_plan, '[^;]+') do
    caps[#caps + 1] = tonumber(cap)
end
if #caps > 0 then
    local values = redis.call('MGET', unpack(KEYS, 1, #caps))
    for b, cap in ipairs(caps) do
        store_level(KEYS[b], level_of(values[b], cap, now) - tokens, cap, ARGV[1])
    end
end
local counter = #caps
for expiry in string.gmatch(expiry_plan, '[^;]+') do
    counter = counter + 1
    redis.call('INCRBYFLOAT', KEYS[counter], ARGV[3])
    redis.call('EXPIREAT', KEYS[counter], expiry)
end
local stream = KEYS[#KEYS]
redis.call('XADD', stream, 'MINID', '~', ARGV[5], '*', 'r', ARGV[4])
redis.call('EXPIRE', stream, ARGV[6])
return 1
"""


class _Calls(Struct, frozen=True, kw_only=True):
    """What a plan's two script calls send the same on every request: the keys and the plans."""

    buckets: tuple[Bucket, ...]
    budgets: tuple[Budget, ...]
    spend: tuple[tuple[str, float], ...]
    """The plan's parts these were made from: a policy reload or a new day makes new ones."""
    admit_keys: tuple[bytes, ...]
    admit_plan: bytes
    limits: tuple[tuple[str, float], ...]
    """Label and limit of each status the admission replies with, in its order."""
    settle_keys: tuple[bytes, ...]
    settle_plan: bytes


class RedisLimits(Limits):
    remote = True

    def __init__(self, redis: RedisClient, *, prefix: str = "interlock:", currency: str = "USD",
                 retention_s: float = 31 * 86400, reachability: Reachability | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(currency=currency, clock=clock)
        self._redis = redis
        self._prefix = prefix
        self._retention = retention_s
        self._lifetime = b"%d" % retention_s
        self._reach = reachability or Reachability()
        # One pipe: a settlement is counted before the admissions this worker makes after it.
        self._scripts = ScriptPipe(redis)
        self._admit_script = self._scripts.make(_ADMIT)
        self._settle_script = self._scripts.make(_SETTLE)
        self._pending: deque[ScriptCall] = deque(maxlen=_PENDING_MAX)
        self._calls: dict[tuple[str, str, str], _Calls] = {}
        self._replaying = asyncio.Lock()

    async def close(self) -> None:
        await self._scripts.close()
        await self._redis.aclose()

    async def _evaluate(self, plan: Plan, *, dry: bool) -> list[LimitStatus] | None:
        if not plan.buckets and not plan.budgets:
            return []
        if not self._reach.available():
            return None
        calls = self._calls_of(plan)
        args = [repr(self._clock()).encode(), b"1" if dry else b"0", b"%d" % plan.reserved, calls.admit_plan]
        try:
            # All bytes: redis-py sends them on as they are, where it would encode each str or
            # number on every call (a quarter to a third of its time packing these calls).
            reply = cast(bytes, await self._admit_script(calls.admit_keys, args))
        except UNREACHABLE as exc:
            self._reach.failed("limits check", exc)
            return None
        self._reach.succeeded()
        parts = reply.split(b";")
        return [_status(label, limit, part) for (label, limit), part in zip(calls.limits, parts, strict=True)]

    def _account(self, plan: Plan, tokens: int, record: UsageRecord) -> Settlement:
        calls = self._calls_of(plan)
        now = self._clock()
        call: ScriptCall = (calls.settle_keys, [repr(now).encode(), b"%d" % tokens, repr(record.cost).encode(),
                                                msgspec.json.encode(record), b"%d" % ((now - self._retention) * 1000),
                                                self._lifetime, calls.settle_plan])
        if self._pending or not self._reach.available():
            # Settlements are sent in order: behind the ones waiting from an outage.
            self._pending.append(call)
            return Settlement(asyncio.ensure_future(self._replay()))
        # Queued on the pipe now, so it runs before any admission made after this returns.
        posted = self._settle_script.post(*call)
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        posted.reply.add_done_callback(functools.partial(self._answered, call, answer))
        return Settlement(answer, sent=posted.sent)

    def _answered(self, call: ScriptCall, answer: asyncio.Future[None], reply: asyncio.Future[object]) -> None:
        """The store's reply to a settlement: counted, or kept for a replay where the store could
        not be reached."""
        if reply.cancelled():
            answer.cancel()
            return
        error = reply.exception()
        if isinstance(error, UNREACHABLE):
            self._reach.failed("usage accounting", error)
            self._pending.append(call)
            log.warning("%d usage settlements wait for the limits store", len(self._pending))
        elif error is not None:
            answer.set_exception(error)
            return
        else:
            self._reach.succeeded()
        answer.set_result(None)

    def _calls_of(self, plan: Plan) -> _Calls:
        """The keys and plans of ``plan``'s script calls, kept while its policy and day last."""
        cached = self._calls.get((plan.team, plan.key, plan.alias))
        if (cached is not None and cached.buckets is plan.buckets and cached.budgets is plan.budgets
                and cached.spend is plan.spend):
            return cached
        if len(self._calls) >= _CALLS_KEPT:
            self._calls.clear()
        tpm = [bucket for bucket in plan.buckets if bucket.tokens]
        admit_keys = [bucket.id for bucket in plan.buckets] + [budget.id for budget in plan.budgets]
        settle_keys = [bucket.id for bucket in tpm] + [counter for counter, _ in plan.spend] + ["usage"]
        bucket_plan = ";".join(f"{bucket.capacity}:{'t' if bucket.tokens else 'r'}" for bucket in plan.buckets)
        budget_plan = ";".join(f"{budget.limit!r}:{budget.reset_at!r}" for budget in plan.budgets)
        cap_plan = ";".join(str(bucket.capacity) for bucket in tpm)
        expiry_plan = ";".join(str(int(ends) + 86400) for _, ends in plan.spend)
        calls = _Calls(buckets=plan.buckets, budgets=plan.budgets, spend=plan.spend,
                       admit_keys=tuple(self._key(plan.team, name).encode() for name in admit_keys),
                       admit_plan=f"{bucket_plan}|{budget_plan}".encode(),
                       limits=(*((bucket.label, float(bucket.capacity)) for bucket in plan.buckets),
                               *((budget.label, budget.limit) for budget in plan.budgets)),
                       settle_keys=tuple(self._key(plan.team, name).encode() for name in settle_keys),
                       settle_plan=f"{cap_plan}|{expiry_plan}".encode())
        self._calls[(plan.team, plan.key, plan.alias)] = calls
        return calls

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
        return team_key(self._prefix, team, name)


def _status(label: str, limit: float, reply: bytes) -> LimitStatus:
    ok, remaining, retry_after = reply.split(b"|")
    return LimitStatus(label=label, limit=limit, remaining=float(remaining), ok=ok == b"1",
                       retry_after=float(retry_after) if retry_after else None)
