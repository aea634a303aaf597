"""Rate limits, budgets and usage records.

Scopes: each API key, the whole team, and each ``limits.models`` glob (the team's requests to
aliases matching it). In each, ``rpm`` and ``tpm`` are token buckets holding a minute's worth and
refilled evenly (a burst of ``rpm`` requests, then one every 60/rpm seconds); ``daily_budget``
and ``monthly_budget`` cap spend per UTC day and calendar month.

- ``admit()`` before the upstream call: every bucket must hold the request (1 for rpm; the
  reserved token estimate, at least 1, for tpm) and every budget must have something left. All
  or nothing: a refused request takes nothing. With Redis this is one script call, one round trip.
- ``settle()`` after the response: tpm buckets get the actual tokens (minus the reservation),
  spend counters the cost at the served tier, and a usage record is kept. So a budget can be
  overrun by the requests in flight when it is reached, and tpm by one response's tokens. It
  returns a ``Settlement`` at once, already ordered before any later admission of this process:
  ``sent`` once the store has it for good, ``answer`` once it has answered.
- ``usage()``: the records of a team in a time range, for the admin endpoint.
- ``may_overlap()``: whether a request's admission may run beside its upstream call rather than
  before it (``policies.gate``). Only where admitting is a round trip to a shared store, and only
  while the last answer for the same team, key and model left room to spare: at least
  ``OVERLAP_MARGIN`` of every limit, counted down by each overlapped request until the next
  answer. Admission still decides; the margin bounds how many upstream calls a refusal can
  cancel once sent.

``MemoryLimits`` keeps everything in the process (one replica). ``policies.limits_redis``
shares it through Redis and applies the policy's fail mode when Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import msgspec
from msgspec import Struct

from policies.backend import escape
from policies.resolve import ResolvedPolicy
from proxy.errors import RateLimited, ServerError

_PLANS_KEPT = 10_000
OVERLAP_MARGIN = 0.1
"""Share of each limit an admission must leave for later requests to be admitted beside their
upstream calls."""
_OVERLAP_FRESH_S = 1.0
"""How long one admission's answer vouches for the requests after it."""
_SPARE_MAX = 1_000_000
"""Bounds the count kept for a limit so high that it never binds."""


class Bucket(Struct, frozen=True, kw_only=True):
    id: str
    """``<scope>:rpm`` or ``<scope>:tpm``; scope ``team``, ``key:<name>`` or ``model:<glob>``."""
    label: str
    capacity: int
    tokens: bool
    """A tpm bucket: admitting takes the reservation (1 at least), not 1."""


class Budget(Struct, frozen=True, kw_only=True):
    id: str
    """``<scope>:spend:<d|m>:<period>``: the spend counter it reads."""
    label: str
    limit: float
    reset_at: float
    """Unix time the period ends (UTC)."""


class Plan(Struct, frozen=True, kw_only=True):
    """Which counters one request touches, decided from the policy alone."""

    team: str
    key: str
    alias: str
    buckets: tuple[Bucket, ...]
    budgets: tuple[Budget, ...]
    spend: tuple[tuple[str, float], ...]
    """Spend counters ``settle`` adds the cost to, with the Unix time each may expire."""
    reserved: int
    renews_at: float
    """When the UTC day ends and the budget counters change: the plan is valid until then."""


class LimitStatus(Struct, frozen=True, kw_only=True):
    label: str
    limit: float
    remaining: float
    """What is left once this request is taken, when ``ok``; what is left, when not."""
    ok: bool
    retry_after: float | None = None


class Reservation(Struct, frozen=True, kw_only=True):
    """What ``admit`` let through; hand it to ``settle``."""

    plan: Plan
    statuses: tuple[LimitStatus, ...]
    degraded: bool = False
    """Admitted without checking: the limits store was unreachable and the policy fails open."""


class UsageRecord(Struct, frozen=True, kw_only=True):
    """One response's usage, as ``usage()`` returns it."""

    ts: float
    """Unix time the response ended."""
    team: str
    key: str
    model: str
    deployment: str
    tier: str
    """The tier served."""
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost: float
    latency_ms: float
    response_id: str | None = None


def plan_limits(policy: ResolvedPolicy, alias: str, *, reserve_tokens: int = 0, now: float) -> Plan:
    """The counters of a request under ``policy`` (a team-level policy, without a key, has no
    key scope: explain for a team)."""
    key = policy.key or ""
    scopes = [(f"key:{escape(key)}", f"key '{key}'", policy.key_quota)] if policy.key is not None else []
    scopes += [("team", "team", policy.team_quota)]
    scopes += [(f"model:{escape(pattern)}", f"model '{pattern}'", quota)
               for pattern, quota in policy.model_quotas.items() if fnmatchcase(alias, pattern)]
    day, day_ends, month, month_ends = _periods(now)
    buckets: list[Bucket] = []
    budgets: list[Budget] = []
    spend: list[tuple[str, float]] = []
    for scope, label, quota in scopes:
        if quota.rpm:
            buckets.append(Bucket(id=f"{scope}:rpm", label=f"{label} rpm", capacity=quota.rpm, tokens=False))
        if quota.tpm:
            buckets.append(Bucket(id=f"{scope}:tpm", label=f"{label} tpm", capacity=quota.tpm, tokens=True))
        for limit, period, ends, word in ((quota.daily_budget, day, day_ends, "daily"),
                                          (quota.monthly_budget, month, month_ends, "monthly")):
            counter = f"{scope}:spend:{word[0]}:{period}"
            if limit is not None:
                budgets.append(Budget(id=counter, label=f"{label} {word} budget", limit=limit, reset_at=ends))
            if limit is not None or scope in ("team", f"key:{escape(key)}"):
                spend.append((counter, ends))
    return Plan(team=policy.team, key=key, alias=alias, buckets=tuple(buckets), budgets=tuple(budgets),
                spend=tuple(spend), reserved=reserve_tokens, renews_at=day_ends)


def cost_of(bucket: Bucket, plan: Plan) -> int:
    """What admitting the request takes from ``bucket``."""
    return plan.reserved if bucket.tokens else 1


class Limits(ABC):
    """The limits API the gateway calls; see the module docstring for the semantics."""

    remote = False
    """Admitting is a round trip to a shared store (worth overlapping with the upstream call)."""

    def __init__(self, *, currency: str = "USD", clock: Callable[[], float] = time.time) -> None:
        self.currency = currency
        self._clock = clock
        self._plans: dict[tuple[str, str | None, str], tuple[ResolvedPolicy, Plan]] = {}
        self._spare: dict[tuple[str, str | None, str], tuple[float, int]] = {}
        """Per team, key and alias: until when, and for how many more requests, an admission may
        overlap the upstream call."""

    def may_overlap(self, policy: ResolvedPolicy, alias: str) -> bool:
        """Whether this request's admission may run beside its upstream call; True takes one of
        the requests the last answer left room for."""
        if not self.remote:
            return False
        key = (policy.team, policy.key, alias)
        entry = self._spare.get(key)
        if entry is None or entry[1] < 1 or entry[0] < time.monotonic():
            return False
        self._spare[key] = (entry[0], entry[1] - 1)
        return True

    async def admit(self, policy: ResolvedPolicy, alias: str, *, reserve_tokens: int = 0) -> Reservation:
        """Take the request from every limit or refuse it: ``RateLimited`` (429, with the limit's
        name and ``retry_after``), or ``ServerError`` (503) when the limits store is unreachable
        and the policy fails closed."""
        plan = self._plan(policy, alias, reserve_tokens)
        if not plan.buckets and not plan.budgets:
            return Reservation(plan=plan, statuses=())
        statuses = await self._evaluate(plan, dry=False)
        self._note_spare(policy, alias, plan, statuses)
        if statuses is None:
            if policy.fail_mode == "closed":
                raise ServerError("Rate limits and budgets cannot be checked right now (the limits store is "
                                  "unreachable) and your team's policy refuses requests until they can.",
                                  status=503, code="limits_unavailable", retryable=True, retry_after=1.0)
            return Reservation(plan=plan, statuses=(), degraded=True)
        refusal = self.refusal(plan.team, statuses)
        if refusal is not None:
            raise refusal
        return Reservation(plan=plan, statuses=tuple(statuses))

    async def peek(self, policy: ResolvedPolicy, alias: str, *, reserve_tokens: int = 0) -> list[LimitStatus] | None:
        """Where every limit stands, changing nothing (explain); ``None`` when unreachable."""
        return await self._evaluate(self._plan(policy, alias, reserve_tokens), dry=True)

    def settle(self, reservation: Reservation, record: UsageRecord) -> Settlement:
        """Count the response's tokens and cost and keep its usage record. Every ``admit`` and
        ``peek`` this process makes after the call counts it, whether or not the settlement
        has its answer yet."""
        taken = 0 if reservation.degraded else reservation.plan.reserved  # degraded: nothing was reserved
        return self._account(reservation.plan, record.input_tokens + record.output_tokens - taken, record)

    def _note_spare(self, policy: ResolvedPolicy, alias: str, plan: Plan, statuses: list[LimitStatus] | None) -> None:
        key = (policy.team, policy.key, alias)
        spare = 0 if statuses is None else spare_requests(plan, statuses)
        if spare < 1:
            self._spare.pop(key, None)
            return
        if len(self._spare) >= _PLANS_KEPT and key not in self._spare:
            self._spare.clear()
        self._spare[key] = (time.monotonic() + _OVERLAP_FRESH_S, spare)

    def _plan(self, policy: ResolvedPolicy, alias: str, reserve_tokens: int) -> Plan:
        """``plan_limits``, kept per team, key and alias until the policy changes or the day ends."""
        now = self._clock()
        key = (policy.team, policy.key, alias)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is policy and now < cached[1].renews_at:
            plan = cached[1]
            return plan if plan.reserved == reserve_tokens else msgspec.structs.replace(plan, reserved=reserve_tokens)
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.clear()
        plan = plan_limits(policy, alias, reserve_tokens=reserve_tokens, now=now)
        self._plans[key] = (policy, plan)
        return plan

    @abstractmethod
    async def usage(self, team: str, start: float, end: float, *, limit: int = 1000) -> list[UsageRecord]:
        """The team's usage records with ``start <= ts <= end`` (Unix times), oldest first."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def _evaluate(self, plan: Plan, *, dry: bool) -> list[LimitStatus] | None:
        """Statuses of every bucket then budget, taking the request when all are ok and not
        ``dry``; ``None`` when the store is unreachable."""

    @abstractmethod
    def _account(self, plan: Plan, tokens: int, record: UsageRecord) -> Settlement:
        """``settle``: ordered before any later evaluation when it returns."""

    def refusal(self, team: str, statuses: list[LimitStatus]) -> RateLimited | None:
        """The 429 for the refused limit that frees up last, naming it; ``None`` if none is."""
        refused = [status for status in statuses if not status.ok]
        if not refused:
            return None
        status = max(refused, key=lambda status: status.retry_after or 0.0)
        wait = max(1, math.ceil(status.retry_after or 1.0))
        if is_budget(status):
            message = (f"Budget reached: the {status.label} of {status.limit:g} {self.currency} for team "
                       f"'{team}' is spent. It renews in {_duration(wait)}.")
            return RateLimited(message, code="budget_exceeded", retry_after=wait)
        message = (f"Rate limit reached: {status.label} is {status.limit:g} per minute for team '{team}'. "
                   f"Retry after {wait}s.")
        return RateLimited(message, code="rate_limit_exceeded", retry_after=wait)


def is_budget(status: LimitStatus) -> bool:
    return status.label.endswith(" budget")


def spare_requests(plan: Plan, statuses: list[LimitStatus]) -> int:
    """How many more requests like this one fit in every limit, above ``OVERLAP_MARGIN`` of it
    (statuses in the order ``_evaluate`` gives: buckets, then budgets); 0 when any is refused or
    a budget is within the margin (its next cost is unknown)."""
    # Run on every admission: plain loops, no min() or index per limit.
    for status in statuses:
        if not status.ok or status.remaining < OVERLAP_MARGIN * status.limit:
            return 0
    spare = float(_SPARE_MAX)
    for bucket, status in zip(plan.buckets, statuses, strict=False):  # the buckets' statuses come first
        room = (status.remaining - OVERLAP_MARGIN * status.limit) // max(cost_of(bucket, plan), 1)
        if room < spare:
            spare = room
    return int(spare)


class _Done:
    """An awaitable with nothing left to wait for."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_DONE = _Done()


class Settlement:
    """A settlement under way (``Limits.settle``)."""

    __slots__ = ("answer", "sent")

    def __init__(self, answer: asyncio.Future[None] | None, *, sent: Awaitable[None] = _DONE) -> None:
        self.answer = answer
        """Done once the store has counted it (one it could not reach is kept for a replay, not
        raised); ``None`` where it was counted at once (in memory). A future rather than a
        coroutine, so nothing needs a task of its own to wait for it."""
        self.sent = sent
        """Done once the store has the settlement whatever happens to this process: at once in
        memory; in Redis once its bytes are handed to the kernel (the reply to the client waits
        for this, so a replica killed right after a response still counts it)."""

    def __await__(self) -> Generator[Any, None, None]:
        """Wait for the store's answer."""
        return (_DONE if self.answer is None else self.answer).__await__()


_COUNTED = Settlement(None)


def bucket_level(level: float | None, since: float | None, capacity: int, now: float) -> float:
    """A bucket's level at ``now``: ``capacity`` when it has no state, refilled since ``since``."""
    if level is None or since is None:
        return float(capacity)
    return min(float(capacity), level + max(0.0, now - since) * capacity / 60.0)


def bucket_status(bucket: Bucket, level: float, cost: int) -> LimitStatus:
    need = max(1, min(cost, bucket.capacity))
    ok = level >= need
    return LimitStatus(label=bucket.label, limit=float(bucket.capacity), remaining=level - cost if ok else level,
                       ok=ok, retry_after=None if ok else (need - level) * 60.0 / bucket.capacity)


def budget_status(budget: Budget, spent: float, now: float) -> LimitStatus:
    ok = spent < budget.limit
    return LimitStatus(label=budget.label, limit=budget.limit, remaining=budget.limit - spent, ok=ok,
                       retry_after=None if ok else budget.reset_at - now)


class MemoryLimits(Limits):
    """Limits of one process: the embedded default, exact for a single replica."""

    def __init__(self, *, currency: str = "USD", retention_s: float = 31 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(currency=currency, clock=clock)
        self._retention = retention_s
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._records: dict[str, deque[UsageRecord]] = {}
        self._renew_at = _periods(clock())[1]

    async def _evaluate(self, plan: Plan, *, dry: bool) -> list[LimitStatus] | None:
        now = self._clock()
        levels = [self._level(plan.team, bucket, now) for bucket in plan.buckets]
        statuses = [bucket_status(bucket, level, cost_of(bucket, plan))
                    for bucket, level in zip(plan.buckets, levels, strict=True)]
        statuses += [budget_status(budget, self._spend.get((plan.team, budget.id), 0.0), now)
                     for budget in plan.budgets]
        if not dry and all(status.ok for status in statuses):
            for bucket, level in zip(plan.buckets, levels, strict=True):
                self._buckets[(plan.team, bucket.id)] = (level - cost_of(bucket, plan), now)
        return statuses

    def _account(self, plan: Plan, tokens: int, record: UsageRecord) -> Settlement:
        now = self._clock()
        for bucket in plan.buckets:
            if bucket.tokens:
                self._buckets[(plan.team, bucket.id)] = (self._level(plan.team, bucket, now) - tokens, now)
        for counter, _ in plan.spend:
            self._spend[(plan.team, counter)] = self._spend.get((plan.team, counter), 0.0) + record.cost
        self._forget_periods(now)
        records = self._records.setdefault(plan.team, deque())
        records.append(record)
        while records and records[0].ts < now - self._retention:
            records.popleft()
        return _COUNTED

    async def close(self) -> None:
        """Nothing to release."""

    async def usage(self, team: str, start: float, end: float, *, limit: int = 1000) -> list[UsageRecord]:
        found = [record for record in self._records.get(team, ()) if start <= record.ts <= end]
        return found[:limit]

    def _level(self, team: str, bucket: Bucket, now: float) -> float:
        state = self._buckets.get((team, bucket.id))
        return bucket_level(state[0], state[1], bucket.capacity, now) if state else float(bucket.capacity)

    def _forget_periods(self, now: float) -> None:
        """Drop spend counters of periods that have ended."""
        if now < self._renew_at:
            return
        day, self._renew_at, month, _ = _periods(now)
        for entry in [entry for entry in self._spend if not entry[1].endswith((f":d:{day}", f":m:{month}"))]:
            del self._spend[entry]


def _periods(now: float) -> tuple[str, float, str, float]:
    """Today and this month (UTC) as ``YYYYMMDD`` and ``YYYYMM``, with the times they end."""
    moment = datetime.fromtimestamp(now, UTC)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return (day_start.strftime("%Y%m%d"), (day_start + timedelta(days=1)).timestamp(),
            month_start.strftime("%Y%m"), next_month.timestamp())


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
