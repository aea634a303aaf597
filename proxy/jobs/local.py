"""``LocalQueue``: the jobs of the embedded (SQLite) default, kept and run in this process."""

from __future__ import annotations

import asyncio

from proxy.jobs.queue import Claim, Job, handed_back


class LocalQueue:
    """An in-process ``JobQueue``: nobody else takes its jobs, so leases never lapse."""

    shared = False

    def __init__(self) -> None:
        self._waiting: asyncio.Queue[Job] = asyncio.Queue()

    async def start(self) -> None:
        pass

    async def close(self) -> list[Job]:
        left = []
        while not self._waiting.empty():
            left.append(self._waiting.get_nowait())
        return left

    async def put(self, job: Job) -> None:
        self._waiting.put_nowait(job)

    async def take(self, timeout: float) -> Claim | None:
        try:
            async with asyncio.timeout(timeout):
                job = await self._waiting.get()
        except TimeoutError:
            return None
        return Claim(job, job.runs_before + 1, job.response_id)

    async def renew(self, claim: Claim) -> bool:
        return True

    async def done(self, claim: Claim) -> None:
        pass

    async def release(self, claim: Claim) -> None:
        # Only ``close`` sees it again: a replica releases its jobs when it stops.
        await self.put(handed_back(claim))
