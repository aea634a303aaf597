"""``RedisQueue``: jobs shared by every replica, in a Redis stream read through a consumer group.

``{prefix}jobs`` is the stream (each entry's ``job`` field a msgpack ``Job``), read by the group
``workers`` in which every replica is its own consumer. An entry stays pending while its replica
runs it; the replica renews its lease by resetting the entry's idle time (XCLAIM JUSTID, which
counts no delivery). An entry idle for longer than the lease has lost its replica: XAUTOCLAIM
hands it to another, counting one more delivery, so a job's run number is its entry's delivery
count plus the runs it had before a replica handed it back. A finished job is acknowledged and
deleted. Every command touches the one stream key, so this runs on Redis Cluster too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from proxy.jobs.queue import Claim, Job, decode_job, encode_job, handed_back
from proxy.store.redis import connection_pool

_GROUP = "workers"
_MAX_CONNECTIONS = 8

# KEYS: the stream. ARGV: group, consumer, lease in ms, scan cursor. Takes over one entry whose
# replica stopped renewing it; returns the next cursor, then the entry's id, fields and deliveries.
_TAKE_OVER = """
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', 1)
local entry = reply[2][1]
if entry == nil then
    return {reply[1]}
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
return {reply[1], entry[1], entry[2], pending[1][4]}
"""

# KEYS: the stream. ARGV: group, entry id, consumer, deliveries when claimed, action (renew, done or
# release), the job to queue again (release). Acts only while the consumer holds the entry as it
# claimed it: a replica that lost its job must not renew, finish or hand back another's run.
_HOLDER = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1]
if pending == nil or pending[2] ~= ARGV[3] or pending[4] ~= tonumber(ARGV[4]) then
    return 0
end
if ARGV[5] == 'renew' then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
    return 1
end
if ARGV[5] == 'release' then
    redis.call('XADD', KEYS[1], '*', 'job', ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: the stream. ARGV: group, consumer. A consumer is removed only once it holds nothing:
# removing it would drop its pending entries, and with them their jobs.
_LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


class RedisQueue:
    """A ``JobQueue`` every replica using the same Redis and prefix shares."""

    shared = True

    def __init__(self, url: str, *, prefix: str, lease_s: float) -> None:
        self._url = url
        self._stream = f"{prefix}jobs"
        self._lease_ms = max(int(lease_s * 1000), 1)
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._cursor = "0-0"
        self._client: Redis | None = None

    async def start(self) -> None:
        # Connections open on first use, as the store's do: the gateway starts while Redis is away.
        self._client = Redis.from_pool(connection_pool(self._url, _MAX_CONNECTIONS))

    async def close(self) -> list[Job]:
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):  # tidying only: an idle consumer is harmless
                await self._redis.register_script(_LEAVE)(keys=[self._stream], args=[_GROUP, self._consumer])
            await self._client.aclose()
            self._client = None
        return []  # waiting jobs stay in Redis for the other replicas

    async def put(self, job: Job) -> None:
        await self._redis.xadd(self._stream, {"job": encode_job(job)})

    async def take(self, timeout: float) -> Claim | None:
        try:
            return await self._take(timeout)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        # The first take on this Redis (or after the stream was deleted): the group reads the
        # stream from its start, so jobs queued before it are not missed.
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another replica created it first
            await self._redis.xgroup_create(self._stream, _GROUP, id="0", mkstream=True)
        return await self._take(timeout)

    async def _take(self, timeout: float) -> Claim | None:
        taken_over = cast(list[Any], await self._redis.register_script(_TAKE_OVER)(
            keys=[self._stream], args=[_GROUP, self._consumer, self._lease_ms, self._cursor]))
        self._cursor = taken_over[0].decode()
        if len(taken_over) > 1:
            entry_id, fields, deliveries = taken_over[1:]
            job = decode_job(dict(zip(fields[::2], fields[1::2], strict=True))[b"job"])
            return Claim(job, job.runs_before + int(deliveries), entry_id.decode())
        # [[stream, [(entry id, {field: value})]]], or nothing after the wait
        reply = cast(list[Any], await self._redis.xreadgroup(_GROUP, self._consumer, {self._stream: ">"}, count=1,
                                                              block=max(int(timeout * 1000), 1)))
        if not reply:
            return None
        entry_id, entry = reply[0][1][0]
        job = decode_job(entry[b"job"])
        return Claim(job, job.runs_before + 1, entry_id.decode())

    async def renew(self, claim: Claim) -> bool:
        return await self._as_holder(claim, "renew")

    async def done(self, claim: Claim) -> None:
        await self._as_holder(claim, "done")

    async def release(self, claim: Claim) -> None:
        await self._as_holder(claim, "release", encode_job(handed_back(claim)))

    async def _as_holder(self, claim: Claim, action: str, *extra: bytes) -> bool:
        deliveries = claim.attempt - claim.job.runs_before
        held = await self._redis.register_script(_HOLDER)(
            keys=[self._stream], args=[_GROUP, claim.ticket, self._consumer, deliveries, action, *extra])
        return bool(held)

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError("RedisQueue is not started")
        return self._client
