"""``JobRunner``: background responses run as jobs by a bounded pool of workers, on any replica.

    submit()  store the response ``queued``, write its first event, queue the job
    cancel()  record a cancel; the run holding the job stops within a second and ends it
    close()   stop taking jobs, let running ones finish within the grace period, hand back the rest

A run rebuilds the request's ``Turn`` from the job, writes ``response.in_progress`` (the log
refuses it once the response was cancelled, or when a later run superseded this one), stores the
response ``in_progress`` and appends every event the engine produces as it comes. Beside it a
watcher renews the run's lease and polls the log for a cancel; either stops the run by cancelling
its task, which closes the upstream call and kills a running tool sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

import msgspec

from proxy.decoding import decode_create_request
from proxy.engine import Engine, Turn
from proxy.errors import GatewayError, ServerError
from proxy.jobs.log import OPENING_EVENTS, conclude, failure, logged, opening, started
from proxy.jobs.queue import Claim, Job, JobQueue
from proxy.schema.events import TERMINAL_EVENTS, ResponseCreated
from proxy.schema.response import ResponseResource
from proxy.settings import JobsConfig
from proxy.store.base import LoggedEvent

log = logging.getLogger("interlock.jobs")

_WATCH_S = 0.5
"""How often a run's watcher looks for a cancel: the run stops within about this long."""
_TAKE_WAIT_S = 1.0
"""How long one take waits for a job; also how often an idle replica looks for lapsed leases."""
_QUEUE_TROUBLE_PAUSE_S = 1.0
_CANCEL_WAIT_S = 3.0
"""How long a cancel waits for the run to end the response before answering."""
_SHUT_DOWN = "The gateway shut down before the response finished."

_Stop = Literal["cancel", "lease_lost", "shutdown"]


@dataclass(slots=True)
class _Run:
    claim: Claim
    task: asyncio.Task[None]
    """The run itself; cancelled to stop it."""
    stop: _Stop | None = None

    def halt(self, reason: _Stop) -> None:
        if self.stop is None:
            self.stop = reason
            self.task.cancel()


class JobRunner:
    def __init__(self, *, engine: Engine, queue: JobQueue, config: JobsConfig) -> None:
        self._engine = engine
        self._store = engine.store
        self._queue = queue
        self._config = config
        self._slots = asyncio.Semaphore(config.workers)
        self._runs: dict[asyncio.Task[None], _Run] = {}
        """Each job's supervising task and its run."""
        self._taker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._queue.start()
        self._taker = asyncio.create_task(self._take_jobs(), name="job taker")

    async def close(self) -> None:
        if self._taker is not None:
            self._taker.cancel()
            await asyncio.gather(self._taker, return_exceptions=True)
        if self._runs:
            await asyncio.wait(list(self._runs), timeout=self._config.shutdown_grace_s)
        for run in self._runs.values():
            run.halt("shutdown")
        await asyncio.gather(*self._runs, return_exceptions=True)
        for job in await self._queue.close():  # no other replica will run these
            try:
                await conclude(self._store, job.principal.team, job.response_id, error=ServerError(_SHUT_DOWN))
            except Exception:
                log.exception("could not end background response %s at shutdown", job.response_id)

    async def submit(self, turn: Turn, body: bytes) -> ResponseResource:
        """Queue the response; returns it as stored, ``queued``. ``body``: the request's JSON."""
        resource, team = turn.resource, turn.principal.team
        resource.status = "queued"
        await self._store.save(team, resource, turn.stored_input)
        await self._store.append_events(team, resource.id, 0, opening(resource))
        await self._queue.put(Job(response_id=resource.id, principal=turn.principal, body=body,
                                  created_at=resource.created_at))
        return msgspec.structs.replace(resource, output=[])

    async def cancel(self, team: str, resource: ResponseResource) -> ResponseResource:
        """Cancel the queued or running ``resource``; returns it as it ends: ``cancelled``, or as
        it ended when it ended first."""
        state = await self._store.request_cancel(team, resource.id)
        if state is not None and not state.closed:
            if state.attempt == 0:  # no run has started: end it here rather than wait for a worker
                await conclude(self._store, team, resource.id, error=None, unless_started=True)
            await self._until_closed(team, resource.id, _CANCEL_WAIT_S)
        stored = await self._store.load(team, resource.id)
        current = stored.response if stored is not None else resource
        if state is not None and state.cancel_requested and current.status in ("queued", "in_progress"):
            # The cancel is recorded, so this is how the response ends once its run notices.
            return msgspec.structs.replace(current, status="cancelled", output=[])
        return current

    async def _until_closed(self, team: str, response_id: str, timeout: float) -> None:
        """Wait, ``timeout`` seconds at most, for the response's event log to close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = await self._store.event_log_state(team, response_id)
        while state is not None and not state.closed and (left := deadline - loop.time()) > 0:
            await self._store.wait_events(team, response_id, attempt=state.attempt, after=state.next_sequence - 1,
                                          timeout=left)
            state = await self._store.event_log_state(team, response_id)

    # -- workers -------------------------------------------------------------------------------
    async def _take_jobs(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                claim = await self._queue.take(_TAKE_WAIT_S)
            except Exception:
                self._slots.release()
                log.exception("could not take a job from the queue")
                await asyncio.sleep(_QUEUE_TROUBLE_PAUSE_S)
                continue
            except BaseException:
                self._slots.release()
                raise
            if claim is None:
                self._slots.release()
                continue
            run = _Run(claim, asyncio.create_task(self._attempt(claim), name=f"job {claim.job.response_id}"))
            supervisor = asyncio.create_task(self._supervise(run), name=f"job watch {claim.job.response_id}")
            self._runs[supervisor] = run
            supervisor.add_done_callback(self._supervised)

    def _supervised(self, supervisor: asyncio.Task[None]) -> None:
        del self._runs[supervisor]
        self._slots.release()

    async def _supervise(self, run: _Run) -> None:
        claim = run.claim
        job = claim.job
        try:
            await self._watch(run)
            if not run.task.cancelled() and (error := run.task.exception()) is not None:
                log.error("background response %s crashed", job.response_id, exc_info=error)
                await conclude(self._store, job.principal.team, job.response_id,
                               error=ServerError(f"internal error: {type(error).__name__}"))
            if run.stop == "lease_lost":
                return  # another replica runs the job now
            if run.stop == "shutdown":
                await self._queue.release(claim)
                return
            if run.stop == "cancel":
                await conclude(self._store, job.principal.team, job.response_id, error=None)
            await self._queue.done(claim)
        except Exception:  # the lease lapses and another replica runs the job
            log.exception("could not finish the job of background response %s", job.response_id)

    async def _watch(self, run: _Run) -> None:
        """Until the run ends: renew its lease every third of it, and stop the run on a cancel or
        when the lease was lost."""
        claim = run.claim
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not run.task.done():
            await asyncio.wait([run.task], timeout=_WATCH_S)
            if run.task.done() or run.stop is not None:
                continue
            try:
                state = await self._store.event_log_state(claim.job.principal.team, claim.job.response_id)
                if state is not None and state.cancel_requested:
                    run.halt("cancel")
                elif loop.time() - renewed >= self._config.lease_s / 3:
                    if not await self._queue.renew(claim):
                        log.warning("lost the lease on background response %s", claim.job.response_id)
                        run.halt("lease_lost")
                    renewed = loop.time()
            except Exception:  # a passing store or queue failure; the run goes on
                log.exception("could not watch background response %s", claim.job.response_id)

    async def _attempt(self, claim: Claim) -> None:
        """One run of the job, from the start."""
        job = claim.job
        team, response_id = job.principal.team, job.response_id
        state = await self._store.event_log_state(team, response_id)
        if state is None or state.closed:
            return  # deleted, or ended already
        if state.cancel_requested:
            await conclude(self._store, team, response_id, error=None)
            return
        if claim.attempt > self._config.max_attempts:
            runs = claim.attempt - 1
            message = (f"The gateway replica running this response stopped before it finished; after "
                       f"{runs} run{'s' if runs > 1 else ''} it is not run again.")
            await conclude(self._store, team, response_id, error=ServerError(message))
            return
        try:
            turn = await self._engine.prepare(job.principal, decode_create_request(job.body),
                                              response_id=response_id, charge_limits=False)
        except GatewayError as exc:  # the request no longer passes (a policy changed meanwhile)
            await conclude(self._store, team, response_id, error=exc)
            return
        resource = turn.resource
        resource.created_at = job.created_at
        if not await self._store.append_events(team, response_id, claim.attempt, started(resource)):
            return  # cancelled and ended while queued, or superseded by a later run
        await self._store.save(team, resource, turn.stored_input)
        try:
            opened = await self._engine.open(turn, stream=True)
        except GatewayError as exc:
            events = failure(resource, exc, OPENING_EVENTS + 1)  # after this run's in_progress
            await self._store.save(team, resource, turn.stored_input)
            await self._close_log(claim, events)
            return
        async with contextlib.aclosing(self._engine.events(opened)) as batches:
            async for batch in batches:
                if not batch or isinstance(batch[0], ResponseCreated):
                    continue  # nothing, or the engine's opening events: the log has its own
                if isinstance(batch[-1], TERMINAL_EVENTS):
                    await self._close_log(claim, logged(batch))  # the engine stored the response first
                elif not await self._store.append_events(team, response_id, claim.attempt, logged(batch)):
                    return  # superseded by a later run

    async def _close_log(self, claim: Claim, events: list[LoggedEvent]) -> None:
        """Append the run's terminal events; a cancel recorded meanwhile wins over them."""
        team, response_id = claim.job.principal.team, claim.job.response_id
        if await self._store.append_events(team, response_id, claim.attempt, events, closing="finished"):
            return
        state = await self._store.event_log_state(team, response_id)
        if state is not None and state.cancel_requested:
            await conclude(self._store, team, response_id, error=None)
