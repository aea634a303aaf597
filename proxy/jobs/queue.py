"""What a background job is, and the ``JobQueue`` protocol its backends implement.

A job holds what a worker needs to rebuild the response's ``Turn`` anywhere: the caller, the raw
request body and the id (and creation time) of the response that was stored as ``queued``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import msgspec

from proxy.auth import Principal


class Job(msgspec.Struct, kw_only=True, frozen=True):
    response_id: str
    principal: Principal
    body: bytes
    """The create request's JSON, decoded again by the worker."""
    created_at: int
    """The queued response's ``created_at``, kept by every run."""
    runs_before: int = 0
    """Runs this job had before it was handed back to the queue (at a replica's shutdown)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Job)


def encode_job(job: Job) -> bytes:
    return _encoder.encode(job)


def decode_job(raw: bytes) -> Job:
    return _decoder.decode(raw)


class Claim(NamedTuple):
    """A job taken from the queue by this replica."""

    job: Job
    attempt: int
    """Which run this is, from 1; every take of the same job counts, a taken-over one included."""
    ticket: str
    """The queue's handle on the claim (a Redis stream entry id)."""


def handed_back(claim: Claim) -> Job:
    """The claimed job as it goes back to the queue: its run so far counted."""
    return msgspec.structs.replace(claim.job, runs_before=claim.attempt)


class JobQueue(Protocol):
    """Where jobs wait for a worker, and which replica holds each running one."""

    shared: bool
    """Whether other replicas take from this queue (and so can take a handed-back job)."""

    async def start(self) -> None: ...

    async def close(self) -> list[Job]:
        """Release connections; returns the jobs still waiting that no other replica will run."""
        ...

    async def put(self, job: Job) -> None: ...

    async def take(self, timeout: float) -> Claim | None:
        """The next job (first one whose replica stopped renewing its lease), waiting up to
        ``timeout`` seconds; None when there is none."""
        ...

    async def renew(self, claim: Claim) -> bool:
        """Extend the lease; False when the claim was lost (another replica took the job over)."""
        ...

    async def done(self, claim: Claim) -> None:
        """Remove the finished job, if this replica still holds it."""
        ...

    async def release(self, claim: Claim) -> None:
        """Hand the job back for another replica to run from the start, counting this run."""
        ...
