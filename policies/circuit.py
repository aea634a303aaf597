"""Circuit breaking per upstream (``provider/model``), shared through Redis.

``failures`` consecutive failures open a circuit: the router leaves the upstream out for
``cooldown_s``. Then it is half-open: requests may try it again; the first success closes it,
a failure opens it for another cool-down.

Each process keeps a local view that the router reads without any I/O. A process's own outcomes
update its view at once (and Redis in one single-key script); other processes' outcomes arrive
with ``refresh()``, which ``run()`` calls every second in the background. So the request path
never waits on Redis for circuit state, and "consecutive" is as seen within that interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Literal

from msgspec import Struct

from policies.backend import UNREACHABLE, Reachability, RedisClient, circuit_key

log = logging.getLogger("interlock.policies")

CircuitName = Literal["closed", "open", "half_open"]
_TTL_S = 24 * 3600
"""A circuit nobody touches for a day is forgotten (closed)."""

# KEYS[1]: the circuit. ARGV: ok (1/0), now, failures to open, cool-down, ttl.
# The value is "<consecutive failures>|<opened at, or empty>", the same text _Record parses.
_RECORD = """
if ARGV[1] == '1' then
    redis.call('DEL', KEYS[1])
    return '0|'
end
local failures, opened = 0, nil
local raw = redis.call('GET', KEYS[1])
if raw then
    local f, o = string.match(raw, '^(%d+)|(.*)$')
    failures = tonumber(f)
    if o ~= '' then opened = tonumber(o) end
end
local now = tonumber(ARGV[2])
failures = failures + 1
if opened == nil then
    if failures >= tonumber(ARGV[3]) then opened = now end
elseif now >= opened + tonumber(ARGV[4]) then
    opened = now
end
local value = failures .. '|' .. (opened and string.format('%.3f', opened) or '')
redis.call('SET', KEYS[1], value, 'EX', tonumber(ARGV[5]))
return value
"""


class CircuitState(Struct, frozen=True, kw_only=True):
    state: CircuitName
    failures: int
    """Consecutive failures seen."""
    retry_at: float | None = None
    """Unix time an open circuit turns half-open."""


_CLOSED = CircuitState(state="closed", failures=0)


class _Record(Struct, frozen=True):
    failures: int = 0
    opened_at: float | None = None

    @classmethod
    def parse(cls, raw: bytes | str | None) -> _Record:
        if not raw:
            return cls()
        text = raw.decode() if isinstance(raw, bytes) else raw
        failures, _, opened = text.partition("|")
        return cls(int(failures), float(opened) if opened else None)

    def after(self, ok: bool, now: float, threshold: int, cooldown: float) -> _Record:
        """The same transition as ``_RECORD``, for memory mode and while Redis is away."""
        if ok:
            return _Record()
        failures = self.failures + 1
        opened = self.opened_at
        if opened is None:
            opened = now if failures >= threshold else None
        elif now >= opened + cooldown:
            opened = now
        return _Record(failures, opened)


class CircuitBoard:
    """Circuit state of every upstream, as this process knows it."""

    def __init__(self, *, failures: int, cooldown_s: float, redis: RedisClient | None = None,
                 prefix: str = "interlock:", reachability: Reachability | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self._redis = redis
        self._prefix = prefix
        self._reach = reachability or Reachability()
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._script = redis.register_script(_RECORD) if redis is not None else None

    def state(self, upstream: str) -> CircuitState:
        record = self._records.get(upstream)
        if record is None or record.opened_at is None:
            return _CLOSED if record is None or not record.failures else CircuitState(state="closed",
                                                                                    failures=record.failures)
        retry_at = record.opened_at + self._cooldown
        name: CircuitName = "open" if self._clock() < retry_at else "half_open"
        return CircuitState(state=name, failures=record.failures, retry_at=retry_at)

    async def record(self, upstream: str, ok: bool) -> CircuitState:
        """Count an attempt's outcome: ``ok=False`` for 5xx, timeouts, 429 and connection
        errors; the caller's own 4xx say nothing about the upstream and are not recorded."""
        current = self._records.get(upstream, _Record())
        if ok and current == _Record():
            return self.state(upstream)  # nothing to reset: no write
        now = self._clock()
        new = current.after(ok, now, self._threshold, self._cooldown)
        if self._script is not None and self._reach.available():
            try:
                raw = await self._script(keys=[circuit_key(self._prefix, upstream)],
                                         args=[int(ok), now, self._threshold, self._cooldown, _TTL_S])
            except UNREACHABLE as exc:
                self._reach.failed("circuit update", exc)
            else:
                self._reach.succeeded()
                new = _Record.parse(raw)
        if new.opened_at is not None and current.opened_at != new.opened_at:
            log.warning("circuit of %s opened after %d consecutive failures", upstream, new.failures)
        self._records[upstream] = new
        return self.state(upstream)

    async def refresh(self, upstreams: Iterable[str]) -> None:
        """Read the shared state of ``upstreams`` (one MGET); no-op in memory mode or while Redis
        is away."""
        names = list(upstreams)
        if self._redis is None or not names or not self._reach.available():
            return
        try:
            values = await self._redis.mget([circuit_key(self._prefix, name) for name in names])
        except UNREACHABLE as exc:
            self._reach.failed("circuit refresh", exc)
            return
        self._reach.succeeded()
        for name, raw in zip(names, values, strict=True):
            self._records[name] = _Record.parse(raw)

    async def run(self, upstreams: Callable[[], Iterable[str]], interval: float = 1.0) -> None:
        """Refresh every ``interval`` seconds until cancelled; ``upstreams`` is called each time
        (the current catalogue's)."""
        while True:
            try:
                await self.refresh(upstreams())
            except Exception:  # keep refreshing: a dead task would freeze every other replica's view
                log.exception("circuit refresh failed")
            await asyncio.sleep(interval)
