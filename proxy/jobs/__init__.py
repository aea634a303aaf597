"""Background responses (``background: true``) as jobs that run on any replica: a queue (a Redis
stream read through a consumer group, or in-process with SQLite), a bounded pool of workers per
replica, cancellation, and the event log clients replay and follow (docs/background.md)."""

from __future__ import annotations

from proxy.jobs.local import LocalQueue
from proxy.jobs.queue import JobQueue
from proxy.jobs.redis_queue import RedisQueue
from proxy.jobs.runner import JobRunner
from proxy.jobs.stream import event_stream

__all__ = ["JobQueue", "JobRunner", "event_stream", "open_job_queue"]


def open_job_queue(store_url: str, *, prefix: str, lease_s: float) -> JobQueue:
    """The queue that goes with the response store ``store_url``: shared through Redis when the
    store is Redis, else in this process."""
    if store_url.startswith(("redis://", "rediss://")):
        return RedisQueue(store_url, prefix=prefix, lease_s=lease_s)
    return LocalQueue()
