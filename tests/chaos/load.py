"""Steady traffic for chaos and soak runs: an open loop starting ``rate`` requests a second
whatever is in flight (a server that stalls is charged for the requests queued behind the
stall), each drawn from a ``Mix`` by a seeded generator so a run can be repeated."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import aiohttp

from tests.chaos.scenarios import HEALTHY_SLOW, TEAMS, UPSTREAM_FAULTS
from tests.chaos.traffic import Client, Expectation, Kind, Reply, Shot

ABORT_AFTER_EVENTS = 3
"""``response.created``, ``.in_progress``, then the first item: the client leaves mid-stream."""
HEALTHY_PADDING = 12
"""Words added to a healthy request, so its stream lasts about a second at the model's pace."""


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of request."""

    stream_share: float = 0.5
    tools_share: float = 0.2
    """Requests offering the server-side calculator: a tool loop of two model turns."""
    background_share: float = 0.1
    """Of the requests that do not stream, and offer no tool."""
    fault_share: float = 0.0
    """Sent to the upstream fault aliases, in turn; the rest go to the healthy alias."""
    abort_share: float = 0.0
    """Of the healthy streams: the client leaves after ``ABORT_AFTER_EVENTS`` events."""


class Load:
    """``run`` sends until stopped; the driver changes ``mix``, ``row`` and ``expect`` between
    fault windows, and may ``pause`` to read a quiet gateway."""

    def __init__(self, client: Client, mix: Mix, *, rate: float, seed: int, row: str) -> None:
        self.client = client
        self.mix = mix
        self.rate = rate
        self.row = row
        """The report row of healthy requests: the fault window they start in."""
        self.expect = Expectation()
        """What healthy requests may end in, in the current window."""
        self.replies: list[asyncio.Task[Reply]] = []
        self.paused = False
        self._random = random.Random(seed)
        self._faults = 0

    def shot(self, index: int) -> Shot:
        mix, pick = self.mix, self._random.random
        stream = pick() < mix.stream_share
        kind: Kind = "plain"
        roll = pick()
        if roll < mix.tools_share:
            kind = "tools"
        elif not stream and roll < mix.tools_share + mix.background_share:
            kind = "background"
        team = list(TEAMS)[index % len(TEAMS)]
        if pick() < mix.fault_share:
            fault = UPSTREAM_FAULTS[self._faults % len(UPSTREAM_FAULTS)]
            self._faults += 1
            return Shot(index=index, row=fault.label, team=team, model=fault.alias, kind=kind, stream=stream,
                        expect=Expectation(fault.documented_statuses(), fault.fails_mid_stream))
        abort = ABORT_AFTER_EVENTS if stream and pick() < mix.abort_share else None
        return Shot(index=index, row=self.row, team=team, model=HEALTHY_SLOW, kind=kind, stream=stream,
                    expect=self.expect, abort_after_events=abort, padding=HEALTHY_PADDING)

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        period = 1.0 / self.rate
        due = time.monotonic()
        index = 0
        while not stop.is_set():
            await asyncio.sleep(max(due - time.monotonic(), 0))
            due += period
            if self.paused:
                due = time.monotonic()  # a pause is not made up for afterwards
                continue
            self.replies.append(asyncio.create_task(self.client.send(session, self.shot(index))))
            index += 1

    async def quiet(self, limit_s: float) -> int:
        """Pause and wait, ``limit_s`` at most, for the requests in flight to end; how many did not."""
        self.paused = True
        pending = [task for task in self.replies if not task.done()]
        if not pending:
            return 0
        _, unfinished = await asyncio.wait(pending, timeout=limit_s)
        return len(unfinished)

    async def results(self) -> list[Reply]:
        return list(await asyncio.gather(*self.replies))
