"""``BatchedScript``: a Lua script whose concurrent calls share one Redis pipeline.

Every request runs two scripts (admission, settlement). Sent one by one, redis-py spends about
80 µs of CPU on each call (connection checkout, packing, a timeout, a round trip) — more than the
rest of the request's own work; in a pipeline of 32 it is under 20 µs a call. A call made while
nothing is in flight goes out at once, alone; calls made while one is in flight wait and go
together in the next pipeline (no timer), so batches grow with load and cost nothing when idle.

The script is called by its SHA; a server that does not know it (restarted, failed over) gets it
loaded and the affected calls sent again.

Batches go out one at a time, so each script keeps a connection of its own (made like the
client's pool makes them) and writes to it directly rather than through redis-py's pipeline,
which in this hot path (twice a request) cost a pool checkout with a readiness read, a task per
write (``wait_for``), a timer per reply and a shielded reset task. The whole exchange has one
deadline, the connection's ``socket_timeout``; a dropped connection is retried as the client's
own retry policy says. A Cluster client routes each call to its slot, so it keeps redis-py's
pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from policies.backend import RedisClient

ScriptCall = tuple[Sequence[str | bytes], Sequence[str | bytes | int | float]]
"""``(keys, args)`` of one call."""
_Arg = str | bytes | int | float

_HEADS_KEPT = 1024
"""Packed command heads kept per script (one per distinct key list): teams x keys x models."""

_MAX_BATCH = 256
"""Calls per pipeline: bounds one reply's size and the wait of the calls behind it."""


class BatchedScript:
    def __init__(self, redis: RedisClient, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = redis.register_script(source).sha
        self._waiting: list[tuple[ScriptCall, asyncio.Future[object]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._busy = False
        """A call or a batch is on the wire: calls made meanwhile wait for the next batch."""
        self._connection: AbstractConnection | None = None
        """The connection batches go out on (not a Cluster's), made at the first one."""
        self._exchanging = asyncio.Lock()
        """Held while a batch is on ``_connection``: ``run_all`` may be called beside the calls."""
        self._heads: dict[tuple[tuple[str | bytes, ...], int], bytes] = {}
        """Each key list's packed ``EVALSHA sha numkeys keys...`` (with the command's length): a
        policy's keys repeat on every request, so only the arguments are packed per call."""

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()

    async def __call__(self, keys: Sequence[str | bytes], args: Sequence[str | bytes | int | float]) -> object:
        """The script's reply; a Redis error raised as redis-py raises it."""
        loop = asyncio.get_running_loop()
        if not self._busy:
            # Nothing on the wire: send at once, from this task (a sender task would first wait
            # its turn behind every callback ready on the loop, which a lone request would feel).
            self._busy = True
            try:
                result = (await self.run_all([(keys, args)]))[0]
            finally:
                self._busy = False
                if self._waiting:
                    self._busy = True
                    self._sender = loop.create_task(self._send_waiting())
            if isinstance(result, Exception):
                raise result
            return result
        reply: asyncio.Future[object] = loop.create_future()
        self._waiting.append(((keys, args), reply))
        return await reply

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:_MAX_BATCH], self._waiting[_MAX_BATCH:]
                try:
                    replies = await self.run_all([call for call, _ in batch])
                except asyncio.CancelledError:
                    for _, reply in batch:
                        reply.cancel()
                    raise
                except Exception as exc:
                    for _, reply in batch:
                        if not reply.done():
                            reply.set_exception(exc)
                    continue
                for (_, reply), result in zip(batch, replies, strict=True):
                    if reply.done():  # its caller left
                        continue
                    if isinstance(result, Exception):
                        reply.set_exception(result)
                    else:
                        reply.set_result(result)
        finally:
            self._sender = None
            self._busy = False
            for _, reply in self._waiting:  # only when cancelled: nothing will send these
                reply.cancel()
            self._waiting = []

    async def run_all(self, calls: Sequence[ScriptCall]) -> list[object]:
        """Every call in one pipeline, in order: each one's reply, or the error it got. A
        connection failure raises (some calls may have run, as with a single command)."""
        replies = await self._pipeline(calls)
        unknown = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            await self._redis.script_load(self._source)
            for index, reply in zip(unknown, await self._pipeline([calls[i] for i in unknown]), strict=True):
                replies[index] = reply
        return replies

    async def _pipeline(self, calls: Sequence[ScriptCall]) -> list[object]:
        if not isinstance(self._redis, Redis):  # a Cluster: redis-py routes each call to its node
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))
        packed = b"".join([self._head(keys, len(args)) + _packed(args) for keys, args in calls])
        if self._connection is None:
            self._connection = self._redis.connection_pool.make_connection()
        connection = self._connection
        async with self._exchanging:
            return await connection.retry.call_with_retry(
                lambda: _exchange(connection, packed, len(calls)), lambda _: connection.disconnect())

    def _head(self, keys: Sequence[str | bytes], arg_count: int) -> bytes:
        """``EVALSHA`` with this script's SHA and ``keys``, packed, for a call of ``arg_count``
        arguments."""
        entry = (tuple(keys), arg_count)
        head = self._heads.get(entry)
        if head is None:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            head = b"*%d\r\n%s" % (3 + len(keys) + arg_count, _packed(("EVALSHA", self._sha, len(keys), *keys)))
            self._heads[entry] = head
        return head


def _packed(args: Sequence[_Arg]) -> bytes:
    """``args`` as RESP bulk strings, as redis-py packs them (a float as its ``repr``) but several
    times faster: the arguments here are nearly all bytes already, and nothing is large enough to
    be worth redis-py's splitting of big values into separate writes. A command is ``*<count>``
    and then its packed words."""
    out: list[bytes] = []
    for arg in args:
        if not isinstance(arg, bytes):
            arg = (arg if isinstance(arg, str) else repr(arg)).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


async def _exchange(connection: AbstractConnection, packed: bytes, count: int) -> list[object]:
    """Send ``count`` packed commands in one write and read each one's reply (an error reply in
    its place), all within the connection's ``socket_timeout``."""
    deadline = connection.socket_timeout
    # Cleared while the exchange runs, so that redis-py neither wraps the write in a task nor
    # arms a timer per reply: the deadline below covers both. No one else holds the connection.
    connection.socket_timeout = None
    try:
        async with asyncio.timeout(deadline):
            await connection.send_packed_command(packed, check_health=False)
            replies: list[object] = []
            for _ in range(count):
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
    except TimeoutError:
        await connection.disconnect(nowait=True)  # replies may still be on their way: never reuse it
        raise RedisTimeoutError(f"Timeout exchanging with Redis (after {deadline} s)") from None
    finally:
        connection.socket_timeout = deadline
