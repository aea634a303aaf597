"""The chaos run: steady mixed traffic (streaming and not, server-side tool loops, background
responses; two teams) through two replicas sharing a Redis, while faults are injected one after
another, then every request accounted for.

Timeline: an upstream window where part of the traffic goes to the fault aliases of
``scenarios.UPSTREAM_FAULTS`` (the rest, to the healthy alias, is the "no fault" row), then one
window each for Redis stopped and restarted, one replica SIGKILLed and restarted, the other
SIGTERMed (drained) and restarted, and clients aborting streams. Requests to the healthy alias
count in the row of the window they started in.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx

from tests.chaos.accounting import spend, table, usage_problems, usage_records
from tests.chaos.cluster import Cluster
from tests.chaos.load import Load, Mix
from tests.chaos.scenarios import TEAMS, UPSTREAM_FAULTS
from tests.chaos.traffic import Client, Expectation, client_session
from tests.chaos.verdicts import Verdict, judge

NO_FAULT = "no fault"
REDIS_RESTART = "Redis stopped and restarted"
SIGKILL = "one replica SIGKILLed"
SIGTERM = "one replica SIGTERMed (drained)"
CLIENT_ABORTS = "clients abort mid-stream"
ROWS = (NO_FAULT, *(fault.label for fault in UPSTREAM_FAULTS), REDIS_RESTART, SIGKILL, SIGTERM, CLIENT_ABORTS)
_OPEN_STREAMS = re.compile(rb"^interlock_open_streams\{[^}]*\} (\S+)$", re.M)


@dataclass(frozen=True)
class ChaosOptions:
    rate: float = 12.0
    """Requests started per second, whatever is in flight (open loop)."""
    upstream_s: float = 24.0
    """The window of upstream faults."""
    window_s: float = 6.0
    """Each later window lasts at least this long, and until its fault's action is done."""
    mix: Mix = field(default_factory=lambda: Mix(fault_share=0.6))
    """The traffic; its ``fault_share`` applies to the upstream window only."""
    abort_share: float = 0.8
    """Of the healthy streams started in the client-abort window."""
    redis_outage_s: float = 3.0
    seed: int = 9


class ChaosRun:
    def __init__(self, cluster: Cluster, options: ChaosOptions) -> None:
        self.cluster = cluster
        self.options = options
        self.load = Load(Client(replicas=lambda: cluster.replicas), options.mix, rate=options.rate,
                         seed=options.seed, row=NO_FAULT)
        self.events: list[dict[str, Any]] = []
        """What was done to the cluster, and when (seconds since the start)."""
        self._started = time.monotonic()

    # -- faults ----------------------------------------------------------------------------------
    async def _window(self, row: str, action: Callable[[], Awaitable[None]] | None = None, *,
                      mix: Mix | None = None, expect: Expectation | None = None) -> None:
        """A fault window: from now on healthy requests count in ``row`` and may end as
        ``expect`` says; ``action``, the fault, starts a second in, once traffic flows."""
        self.load.row, self.load.expect = row, expect or Expectation()
        self.load.mix = mix or replace(self.options.mix, fault_share=0.0)
        self._note(f"window: {row}")
        ends = time.monotonic() + self.options.window_s
        if action is not None:
            await asyncio.sleep(1.0)
            await action()
        await asyncio.sleep(max(ends - time.monotonic(), 0))

    def _note(self, what: str, **details: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self._started, 2), "event": what, **details})

    async def _restart_redis(self) -> None:
        await asyncio.to_thread(self.cluster.redis.stop)
        self._note("Redis stopped")
        await asyncio.sleep(self.options.redis_outage_s)
        await asyncio.to_thread(self.cluster.redis.start)
        self._note("Redis started")

    async def _kill_and_restart(self) -> None:
        replica = self.cluster.replicas[0]
        await asyncio.to_thread(self.cluster.kill, replica)
        self._note(f"{replica.name} SIGKILLed")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self.cluster.start_replica, replica)
        self._note(f"{replica.name} restarted")

    async def _terminate_and_restart(self) -> None:
        replica = self.cluster.replicas[-1]
        self._note(f"{replica.name} out of rotation, then SIGTERM")
        status, drained = await asyncio.to_thread(self.cluster.terminate, replica)
        self._note(f"{replica.name} exited", status=status, drain_s=round(drained, 2))
        await asyncio.to_thread(self.cluster.start_replica, replica)
        self._note(f"{replica.name} restarted")

    # -- the run ---------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        self._started = time.monotonic()
        wall_start = time.time()
        stop = asyncio.Event()
        idle_before = self._idle_readings()
        async with client_session() as session:
            load = asyncio.create_task(self.load.run(session, stop))
            self._note(f"window: {NO_FAULT} and upstream faults")
            await asyncio.sleep(self.options.upstream_s)
            # Redis away: the store answers 503 until it is back, or a response ends unstored.
            await self._window(REDIS_RESTART, self._restart_redis, expect=Expectation(frozenset({503})))
            await self._window(SIGKILL, self._kill_and_restart)
            await self._window(SIGTERM, self._terminate_and_restart)
            await self._window(CLIENT_ABORTS, mix=replace(self.options.mix, fault_share=0.0,
                                                          abort_share=self.options.abort_share))
            stop.set()
            await load
            self._note("load stopped; waiting for the requests in flight")
            replies = await self.load.results()
        self._note("every request ended")
        verdicts = [judge(reply) for reply in replies]  # after the load: validation takes milliseconds each
        return {
            "options": asdict(self.options),
            "rows": table(verdicts, ROWS),
            "problems": [*self._problems(verdicts), *self._usage(verdicts, wall_start)],
            "idle_before": idle_before,
            "idle_after": await self._settled_readings(),
            "events": self.events,
            "not_completed": [_brief(verdict) for verdict in verdicts if verdict.outcome not in
                              ("completed", "aborted")][:400],
        }

    def _problems(self, verdicts: list[Verdict]) -> list[str]:
        problems = [f"{v.row} #{v.index}: {v.outcome}: {v.reason}" for v in verdicts
                    if v.outcome in ("lost", "malformed")]
        ids = [v.response_id for v in verdicts if v.response_id is not None]
        if len(ids) != len(set(ids)):
            problems.append(f"{len(ids) - len(set(ids))} responses were delivered to two requests")
        return problems + self._cross_team(verdicts)

    def _cross_team(self, verdicts: list[Verdict]) -> list[str]:
        """A sample of each team's stored responses: the other team's key must not reach them."""
        problems = []
        base = self.cluster.live()[0].url
        teams = list(TEAMS)
        for team, other in zip(teams, reversed(teams), strict=True):
            sample = [v.response_id for v in verdicts if v.team == team and v.stored][:20]
            for response_id in sample:
                own = httpx.get(f"{base}/v1/responses/{response_id}", headers=_auth(team), timeout=10)
                theirs = httpx.get(f"{base}/v1/responses/{response_id}", headers=_auth(other), timeout=10)
                if own.status_code != 200 or theirs.status_code != 404:
                    problems.append(f"{response_id} of {team}: own key {own.status_code}, {other}'s "
                                    f"{theirs.status_code}")
        return problems

    def _usage(self, verdicts: list[Verdict], wall_start: float) -> list[str]:
        base = self.cluster.live()[0].url
        records = {team: usage_records(base, team, wall_start - 5, time.time() + 5) for team in TEAMS}
        client = self.cluster.redis.client()
        try:
            spent = {team: spend(client, self.cluster.prefix, team) for team in TEAMS}
        finally:
            client.close()
        return usage_problems(verdicts, records, spent)

    def _idle_readings(self) -> dict[str, Any]:
        return {replica.name: {**self.cluster.reading(replica), "open_streams": _open_streams(replica.url)}
                for replica in self.cluster.live()}

    async def _settled_readings(self) -> dict[str, Any]:
        await asyncio.sleep(2.0)  # background polls and closing connections settle
        return {**self._idle_readings(), "simulator_connections": self.cluster.simulator_connections()}


def _auth(team: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TEAMS[team]}"}


def _open_streams(url: str) -> float:
    """Streams a replica is serving now, by its own ``interlock_open_streams`` gauge."""
    text = httpx.get(url + "/metrics", timeout=10).content
    return sum(float(value) for value in _OPEN_STREAMS.findall(text))


def _brief(verdict: Verdict) -> dict[str, Any]:
    return {"index": verdict.index, "row": verdict.row, "outcome": verdict.outcome, "reason": verdict.reason,
            "status": verdict.status}
