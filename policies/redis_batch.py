"""``ScriptPipe``: Lua script calls that share one Redis connection and go out in pipelines, in
the order they are made; ``BatchedScript``, one script called through it.

Every request runs two scripts (admission, settlement). Sent one by one, redis-py spends about
80 µs of CPU on each call (connection checkout, packing, a timeout, a round trip) — more than the
rest of the request's own work; in a pipeline of 32 it is under 20 µs a call. A call made while
nothing is in flight goes out at once, alone; calls made while one is in flight wait and go
together in the next pipeline (no timer), so batches grow with load and cost nothing when idle.
Both scripts share the pipe, so Redis runs them in the order the worker made them: a settlement
the reply did not wait for is still counted before any admission made after it.

Scripts are called by their SHA; a server that does not know one (restarted, failed over) gets it
loaded and the affected calls sent again (after the rest of their batch: the one place where
calls do not run in the order they were made).

Batches go out one at a time, so the pipe keeps a connection of its own (made like the client's
pool makes them) and writes to it directly rather than through redis-py's pipeline, which in
this hot path (twice a request) cost a pool checkout with a readiness read, a task per write
(``wait_for``), a timer per reply and a shielded reset task. The whole exchange has one
deadline, the connection's ``socket_timeout``; a dropped connection is retried as the client's
own retry policy says. A Cluster client routes each call to its slot, so it keeps redis-py's
pipeline (a team's keys share a slot, so its calls still run in order).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from policies.backend import RedisClient

_Arg = str | bytes | int | float
ScriptCall = tuple[Sequence[str | bytes], Sequence[_Arg]]
"""``(keys, args)`` of one call."""
_Call = tuple["BatchedScript", Sequence[str | bytes], Sequence[_Arg]]


class Posted(NamedTuple):
    """A call ``ScriptPipe.post`` queued."""

    sent: asyncio.Future[None]
    """Done once the call's bytes are handed to the kernel, or sending them failed (the reply
    then carries the error): from then on the call is Redis's to run even if this process is
    killed. With a Cluster client, once answered."""
    reply: asyncio.Future[object]
    """Its reply, or the Redis error it got."""


def _mark_sent(posted: Sequence[Posted]) -> None:
    for each in posted:
        if not each.sent.done():
            each.sent.set_result(None)

_HEADS_KEPT = 1024
"""Packed command heads kept (one per script and key list): scripts x teams x keys x models."""

_MAX_BATCH = 256
"""Calls per pipeline: bounds one reply's size and the wait of the calls behind it."""


class ScriptPipe:
    """Calls of Lua scripts sharing one connection, sent and run in the order they are made: a
    settlement made before an admission is counted before it (``make`` a ``BatchedScript`` per
    script)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._waiting: list[tuple[_Call, Posted]] = []
        self._sender: asyncio.Task[None] | None = None
        self._busy = False
        """A call or a batch is on the wire: calls made meanwhile wait for the next batch."""
        self._connection: AbstractConnection | None = None
        """The connection batches go out on (not a Cluster's), made at the first one."""
        self._exchanging = asyncio.Lock()
        """Held while a batch is on ``_connection``: ``run_all`` may be called beside the calls."""
        self._heads: dict[tuple[str, tuple[str | bytes, ...], int], bytes] = {}
        """Each script's and key list's packed ``EVALSHA sha numkeys keys...`` (with the
        command's length): a policy's keys repeat on every request, so only the arguments are
        packed per call."""

    def make(self, source: str) -> BatchedScript:
        return BatchedScript(self, source)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()

    async def call(self, call: _Call) -> object:
        """The call's reply; a Redis error raised as redis-py raises it."""
        if self._busy:
            return await self.post(call).reply
        # Nothing on the wire: send at once, from this task (a sender task would first wait its
        # turn behind every callback ready on the loop, which a lone request would feel).
        self._busy = True
        try:
            result = (await self.run_all([call]))[0]
        finally:
            self._busy = False
            if self._waiting:
                self._busy = True
                self._sender = asyncio.get_running_loop().create_task(self._send_waiting())
        if isinstance(result, Exception):
            raise result
        return result

    def post(self, call: _Call) -> Posted:
        """Queue ``call`` now, behind every call made before it, and have it sent. For a caller
        that goes on before the reply comes."""
        loop = asyncio.get_running_loop()
        posted = Posted(sent=loop.create_future(), reply=loop.create_future())
        self._waiting.append((call, posted))
        if not self._busy:
            self._busy = True
            self._sender = loop.create_task(self._send_waiting())
        return posted

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:_MAX_BATCH], self._waiting[_MAX_BATCH:]
                posted = [each for _, each in batch]
                sent = functools.partial(_mark_sent, posted)
                try:
                    replies = await self.run_all([call for call, _ in batch], on_sent=sent)
                except asyncio.CancelledError:
                    sent()  # or failed to be: the reply says which
                    for each in posted:
                        each.reply.cancel()
                    raise
                except Exception as exc:
                    sent()
                    for each in posted:
                        if not each.reply.done():
                            each.reply.set_exception(exc)
                    continue
                for each, result in zip(posted, replies, strict=True):
                    if each.reply.done():  # its caller left
                        continue
                    if isinstance(result, Exception):
                        each.reply.set_exception(result)
                    else:
                        each.reply.set_result(result)
        finally:
            self._sender = None
            self._busy = False
            for _, each in self._waiting:  # only when cancelled: nothing will send these
                each.sent.cancel()
                each.reply.cancel()
            self._waiting = []

    async def run_all(self, calls: Sequence[_Call], *, on_sent: Callable[[], None] | None = None) -> list[object]:
        """Every call in one pipeline, in order: each one's reply, or the error it got. A
        connection failure raises (some calls may have run, as with a single command).
        ``on_sent``: called once the calls are written to the connection (a Cluster's: once
        they are answered)."""
        replies = await self._pipeline(calls, on_sent)
        unknown = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            for source in dict.fromkeys(calls[index][0].source for index in unknown):
                await self._redis.script_load(source)
            for index, reply in zip(unknown, await self._pipeline([calls[i] for i in unknown], None), strict=True):
                replies[index] = reply
        return replies

    async def _pipeline(self, calls: Sequence[_Call], on_sent: Callable[[], None] | None) -> list[object]:
        if not isinstance(self._redis, Redis):  # a Cluster: redis-py routes each call to its node
            pipe = self._redis.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = list(await pipe.execute(raise_on_error=False))
            if on_sent is not None:  # no earlier moment is seen through redis-py's pipeline
                on_sent()
            return replies
        packed = b"".join([self._head(script.sha, keys, len(args)) + _packed(args) for script, keys, args in calls])
        if self._connection is None:
            self._connection = self._redis.connection_pool.make_connection()
        connection = self._connection
        async with self._exchanging:
            return await connection.retry.call_with_retry(
                lambda: _exchange(connection, packed, len(calls), on_sent), lambda _: connection.disconnect())

    def _head(self, sha: str, keys: Sequence[str | bytes], arg_count: int) -> bytes:
        """``EVALSHA`` with ``sha`` and ``keys``, packed, for a call of ``arg_count`` arguments."""
        entry = (sha, tuple(keys), arg_count)
        head = self._heads.get(entry)
        if head is None:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            head = b"*%d\r\n%s" % (3 + len(keys) + arg_count, _packed(("EVALSHA", sha, len(keys), *keys)))
            self._heads[entry] = head
        return head


class BatchedScript:
    """One script, called through a ``ScriptPipe``: of its own (``BatchedScript(redis, source)``)
    or shared with other scripts (``pipe.make(source)``)."""

    def __init__(self, redis: RedisClient | ScriptPipe, source: str) -> None:
        self.pipe = redis if isinstance(redis, ScriptPipe) else ScriptPipe(redis)
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()  # what Redis names it by

    async def close(self) -> None:
        await self.pipe.close()

    async def __call__(self, keys: Sequence[str | bytes], args: Sequence[_Arg]) -> object:
        """The script's reply; a Redis error raised as redis-py raises it."""
        return await self.pipe.call((self, keys, args))

    def post(self, keys: Sequence[str | bytes], args: Sequence[_Arg]) -> Posted:
        """``ScriptPipe.post`` of a call of this script."""
        return self.pipe.post((self, keys, args))

    async def run_all(self, calls: Sequence[ScriptCall]) -> list[object]:
        """``ScriptPipe.run_all`` of calls of this script."""
        return await self.pipe.run_all([(self, keys, args) for keys, args in calls])


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


async def _exchange(connection: AbstractConnection, packed: bytes, count: int,
                    on_sent: Callable[[], None] | None) -> list[object]:
    """Send ``count`` packed commands in one write (then call ``on_sent``) and read each one's
    reply (an error reply in its place), all within the connection's ``socket_timeout``."""
    deadline = connection.socket_timeout
    # Cleared while the exchange runs, so that redis-py neither wraps the write in a task nor
    # arms a timer per reply: the deadline below covers both. No one else holds the connection.
    connection.socket_timeout = None
    try:
        async with asyncio.timeout(deadline):
            await connection.send_packed_command(packed, check_health=False)
            if on_sent is not None:
                on_sent()
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
