"""The soak: steady mixed traffic (some upstream faults, some clients leaving mid-stream) for
minutes, read at regular quiet moments; then a storm of streams aborted mid-way; then more
concurrent requests than ``listen.max_in_flight`` allows.

Readings are taken with the load paused and the requests in flight ended, so they show what a
replica keeps, not what it is busy with: resident memory, open descriptors, asyncio tasks, and
connections to the upstream (its keep-alive pool, which empties after 15 idle seconds).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import httpx
import msgspec

from tests.bench.loadgen import percentiles
from tests.chaos.accounting import table
from tests.chaos.cluster import Cluster, Replica, other_fds
from tests.chaos.load import ABORT_AFTER_EVENTS, HEALTHY_PADDING, Load, Mix
from tests.chaos.scenarios import HEALTHY_LONG, TEAMS, UPSTREAM_FAULTS
from tests.chaos.traffic import Client, Expectation, Reply, Shot, client_session
from tests.chaos.verdicts import Verdict, judge

STEADY = "steady load"
STORM = "abort storm"
OVERLOAD = "over max_in_flight"
GROWTH_LIMIT = 0.05
"""Resident memory and descriptors may grow this much after warm-up (issue #9)."""
_QUIET_LIMIT_S = 30.0
_SETTLE_S = 1.0
"""After the storm, before reading: far less than the seconds an unclosed upstream stream lasts."""
_CONNECTION_SLACK = 2
_GROWING: dict[str, Callable[[dict[str, Any]], float]] = {
    "rss_mb": lambda reading: float(reading["rss_mb"]),
    "fds": lambda reading: float(other_fds(reading)),
    "tasks": lambda reading: float(reading["tasks"]),
}
"""The figures whose growth after warm-up is checked, from a replica's reading."""


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 20.0
    rate: float = 12.0
    sample_s: float = 30.0
    """Load between two readings."""
    warmup_share: float = 0.25
    """Readings in this first part of the run are warm-up: growth counts from the first after it."""
    mix: Mix = field(default_factory=lambda: Mix(fault_share=0.1, abort_share=0.3))
    aborted_streams: int = 2000
    storm_concurrency: int = 40
    """Streams open at once across the replicas; under their ``max_in_flight``, or the cap
    refuses some (an aborted stream holds its place until the gateway notices the client left)."""
    overload_factor: int = 3
    """The overload burst opens this many times ``max_in_flight`` streams at one replica."""
    seed: int = 20


class SoakRun:
    def __init__(self, cluster: Cluster, options: SoakOptions, *, max_in_flight: int) -> None:
        self.cluster = cluster
        self.options = options
        self.max_in_flight = max_in_flight
        self.load = Load(Client(replicas=lambda: cluster.replicas), options.mix, rate=options.rate,
                         seed=options.seed, row=STEADY)
        self.samples: list[dict[str, Any]] = []

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        async with client_session() as session:
            await self._steady(session, started)
            storm = await self._storm(session)
            overload = await self._overload(session)
        replies = [*await self.load.results(), *storm.pop("replies"), *overload.pop("replies")]
        verdicts = [judge(reply) for reply in replies]  # after the load: validation takes milliseconds each
        growth = self._growth()
        return {
            "options": asdict(self.options),
            "max_in_flight": self.max_in_flight,
            "rows": table(verdicts, (STEADY, *(fault.label for fault in UPSTREAM_FAULTS), STORM, OVERLOAD)),
            "samples": self.samples,
            "growth": growth,
            "storm": storm,
            "overload": overload,
            "problems": [*_bad(verdicts), *_too_much(growth), *storm["leaks"], *overload["problems"]],
        }

    # -- steady load and readings ----------------------------------------------------------------
    async def _steady(self, session: aiohttp.ClientSession, started: float) -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(self.load.run(session, stop))
        ends = started + self.options.minutes * 60
        while time.monotonic() < ends:
            await asyncio.sleep(min(self.options.sample_s, max(ends - time.monotonic(), 0)))
            self.samples.append({"t": round(time.monotonic() - started, 1), **await self._quiet_reading()})
            self.load.paused = False
        stop.set()
        await runner
        await self.load.quiet(_QUIET_LIMIT_S)

    async def _quiet_reading(self) -> dict[str, Any]:
        unfinished = await self.load.quiet(_QUIET_LIMIT_S)
        readings = await asyncio.to_thread(self._readings)
        return {"unfinished": unfinished, **readings}

    def _readings(self) -> dict[str, Any]:
        return {"replicas": {replica.name: self.cluster.reading(replica) for replica in self.cluster.live()},
                "simulator_connections": self.cluster.simulator_connections()}

    def _growth(self) -> dict[str, dict[str, float]]:
        """Per replica and figure: the change from the first reading after warm-up to the last,
        each the median of two readings, as a share of the first. Descriptors are counted without
        pooled connections: the upstream keep-alive pool's vary with the last seconds' traffic (idle
        ones close after 15 s; the abort storm checks them), Redis pools keep what the busiest
        moment needed, up to their bounds."""
        warm = [sample for sample in self.samples
                if sample["t"] >= self.options.warmup_share * self.options.minutes * 60]
        if len(warm) < 2:
            return {}
        first, last = warm[:2], warm[-2:]
        growth: dict[str, dict[str, float]] = {}
        for name in first[0]["replicas"]:
            growth[name] = {}
            for figure, read in _GROWING.items():
                before = statistics.median(read(sample["replicas"][name]) for sample in first)
                after = statistics.median(read(sample["replicas"][name]) for sample in last)
                growth[name][figure] = round((after - before) / before, 4) if before else 0.0
        return growth

    # -- aborted streams ---------------------------------------------------------------------------
    async def _storm(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """Streams of seconds, each left by its client after the first events; then, within a
        second, every replica must be back to its tasks and upstream connections before."""
        before = await asyncio.to_thread(self._readings)
        slots = asyncio.Semaphore(self.options.storm_concurrency)
        first_index = len(self.load.replies) + 1_000_000

        async def one(index: int) -> Reply:
            shot = Shot(index=index, row=STORM, team=list(TEAMS)[index % 2], model=HEALTHY_LONG, kind="plain",
                        stream=True, expect=Expectation(), abort_after_events=ABORT_AFTER_EVENTS,
                        padding=HEALTHY_PADDING)
            async with slots:
                return await self.load.client.send(session, shot)

        began = time.monotonic()
        replies = await asyncio.gather(*(one(first_index + n) for n in range(self.options.aborted_streams)))
        took = time.monotonic() - began
        await asyncio.sleep(_SETTLE_S)
        after = await asyncio.to_thread(self._readings)
        return {"sent": len(replies), "aborted": sum(reply.aborted for reply in replies), "seconds": round(took, 1),
                "before": before, "after": after, "leaks": leaks(before, after), "replies": replies}

    # -- overload --------------------------------------------------------------------------------
    async def _overload(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """``overload_factor`` times ``max_in_flight`` long streams at once at one replica: each
        either streams to its end or is refused at once with 503 and ``retry-after``; probes keep
        answering and the replica serves normally afterwards."""
        replica = self.cluster.replicas[0]
        client = Client(replicas=lambda: [replica])
        count = self.max_in_flight * self.options.overload_factor
        first_index = len(self.load.replies) + 2_000_000
        shots = [Shot(index=first_index + n, row=OVERLOAD, team=list(TEAMS)[n % 2], model=HEALTHY_LONG,
                      kind="plain", stream=True, expect=Expectation(frozenset({503})), padding=HEALTHY_PADDING)
                 for n in range(count)]
        probing = asyncio.Event()
        probes = asyncio.create_task(_probe(replica, probing))
        replies = await asyncio.gather(*(client.send(session, shot) for shot in shots))
        probing.set()
        probe_statuses = await probes
        refused = [reply for reply in replies if reply.status == 503]
        codes = Counter(msgspec.json.decode(reply.body)["error"]["code"] for reply in refused)
        served = sum(reply.status == 200 for reply in replies)
        after = httpx.post(replica.url + "/v1/responses", json={"model": "sim", "input": "still serving?"},
                           headers={"Authorization": f"Bearer {TEAMS['team-a']}"}, timeout=30)
        problems = []
        if not refused or set(codes) != {"server_overloaded"}:
            problems.append(f"{count} requests at once, max_in_flight {self.max_in_flight}: refused {dict(codes)}")
        if served > self.max_in_flight:
            problems.append(f"{served} requests served at once, max_in_flight {self.max_in_flight}")
        if set(probe_statuses) != {200}:
            problems.append(f"/healthz answered {sorted(set(probe_statuses))} during the overload")
        if after.status_code != 200:
            problems.append(f"after the overload the replica answered {after.status_code}")
        if not replica.alive():
            problems.append(f"{replica.name} died")
        return {"sent": count, "served": served, "refused": len(refused),
                "refused_latency_ms": percentiles([reply.latency_ms for reply in refused], (50, 99)),
                "healthz": {str(status): probe_statuses.count(status) for status in set(probe_statuses)},
                "problems": problems, "replies": replies}


async def _probe(replica: Replica, done: asyncio.Event) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(timeout=5) as http:
        while not done.is_set():
            try:
                statuses.append((await http.get(replica.url + "/healthz")).status_code)
            except httpx.HTTPError:
                statuses.append(0)
            await asyncio.sleep(0.2)
    return statuses


def leaks(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What a replica holds after aborted streams that it did not hold before them."""
    problems = []
    for name, was in before["replicas"].items():
        now = after["replicas"].get(name)
        if now is None:
            problems.append(f"{name} is gone")
            continue
        if now["tasks"] > was["tasks"]:
            problems.append(f"{name}: {now['tasks']} asyncio tasks, {was['tasks']} before")
        if now["upstream_connections"] > was["upstream_connections"] + _CONNECTION_SLACK:
            problems.append(f"{name}: {now['upstream_connections']} upstream connections, "
                            f"{was['upstream_connections']} before")
        if other_fds(now) > other_fds(was) + _CONNECTION_SLACK:
            problems.append(f"{name}: {other_fds(now)} open descriptors besides its connections to the upstream "
                            f"and Redis, {other_fds(was)} before")
    if after["simulator_connections"] > before["simulator_connections"] + _CONNECTION_SLACK:
        problems.append(f"the upstream holds {after['simulator_connections']} connections, "
                        f"{before['simulator_connections']} before")
    return problems


def _bad(verdicts: list[Verdict]) -> list[str]:
    return [f"{v.row} #{v.index}: {v.outcome}: {v.reason}" for v in verdicts if v.outcome in ("lost", "malformed")]


def _too_much(growth: dict[str, dict[str, float]]) -> list[str]:
    """Memory and descriptors within ``GROWTH_LIMIT``; tasks not at all."""
    return [f"{name}: {figure} grew {share:.1%} after warm-up" for name, figures in growth.items()
            for figure, share in figures.items() if share > (0.0 if figure == "tasks" else GROWTH_LIMIT)]
