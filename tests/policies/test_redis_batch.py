"""``ScriptPipe`` and ``BatchedScript`` against the real Redis: a lone call goes out at once,
concurrent calls share pipelines and each gets its own reply, calls of two scripts on one pipe
run in the order they were made, an unknown script is loaded and its calls sent again, an
unreachable server fails every waiting call, a caller that leaves takes nothing from the others,
a slow exchange is cut at the client's timeout without leaving a late reply for the next, a
connection Redis dropped is replaced at once, and through a Sentinel the batches reach the
master it names."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from policies.backend import RedisClient, connect, reconnect_once
from policies.redis_batch import BatchedScript, ScriptPipe, _packed
from tests.policies.conftest import REDIS_URL, closed_port

# Increments the key by the argument and returns the new value, so replies tell calls apart.
_COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
_FAIL_ON_ZERO = "if ARGV[1] == '0' then return redis.error_reply('zero refused') end return ARGV[1]"
# Runs for ARGV[1] milliseconds of the server's clock, then returns it.
_SPIN = ("local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
         "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > ARGV[1] * 1000 return ARGV[1]")

Scripts = Callable[..., BatchedScript]


@pytest.fixture
async def scripts(redis: Redis) -> AsyncIterator[Scripts]:
    """Makes ``BatchedScript`` s (on ``redis`` unless another client is given), closed afterwards."""
    made: list[BatchedScript] = []

    def make(source: str, client: RedisClient = redis) -> BatchedScript:
        made.append(BatchedScript(client, source))
        return made[-1]

    yield make
    for script in made:
        await script.close()


def _count_batches(script: BatchedScript) -> list[int]:
    """The size of every batch ``script``'s pipe sends, as it sends it."""
    sizes: list[int] = []
    run_all = script.pipe.run_all

    async def counted(calls: Any, **options: Any) -> list[object]:
        sizes.append(len(calls))
        return await run_all(calls, **options)

    script.pipe.run_all = counted  # type: ignore[method-assign]
    return sizes


async def test_concurrent_calls_share_pipelines_and_get_their_own_replies(redis: Redis, prefix: str,
                                                                         scripts: Scripts) -> None:
    script = scripts(_COUNT)
    await redis.script_load(_COUNT)  # else the first pipeline is sent twice: refused, loaded, again
    sizes = _count_batches(script)
    key = "{" + prefix + "}:count"
    replies = await asyncio.gather(*(script([key], [step]) for step in [1] * 40 + [1000]))
    assert sorted(replies)[:40] == list(range(1, 41))  # each call ran once, in some order
    assert max(replies) == 1040 and replies[-1] == 1040  # the last call sent ran last
    assert sum(sizes) == 41 and len(sizes) < 41 and max(sizes) > 1
    assert await redis.get(key) == b"1040"


async def test_a_lone_call_is_sent_at_once_and_calls_after_it_batch_again(prefix: str, scripts: Scripts) -> None:
    script = scripts(_COUNT)
    key = "{" + prefix + "}:count"
    assert await script([key], [5]) == 5
    assert await script([key], [5]) == 10


async def test_a_call_with_nothing_in_flight_goes_out_from_its_own_task(prefix: str, scripts: Scripts) -> None:
    """No sender task, so the call does not wait its turn behind the loop's ready callbacks."""
    script = scripts(_COUNT)
    key = "{" + prefix + "}:count"
    sent_from: list[asyncio.Task[Any] | None] = []
    run_all = script.pipe.run_all

    async def spy(calls: Any, **options: Any) -> list[object]:
        sent_from.append(asyncio.current_task())
        return await run_all(calls, **options)

    script.pipe.run_all = spy  # type: ignore[method-assign]
    caller = asyncio.ensure_future(script([key], [1]))
    assert await caller == 1
    assert sent_from == [caller]


async def test_run_all_beside_the_calls_shares_the_connection_in_turn(redis: Redis, prefix: str,
                                                                     scripts: Scripts) -> None:
    """``run_all`` (the settlements an outage kept, sent again) while calls are on the wire:
    each exchange has the connection to itself, so no reply goes to another's caller."""
    script = scripts(_COUNT)
    key = "{" + prefix + "}:count"
    replayed, *replies = await asyncio.gather(script.run_all([([key], [1000])] * 5),
                                              *(script([key], [1]) for _ in range(20)))
    assert all(isinstance(reply, int) for reply in [*replayed, *replies])
    assert len({*replayed, *replies}) == 25  # every reply a different running total
    assert await redis.get(key) == b"5020"


_PUSH = "return redis.call('RPUSH', KEYS[1], ARGV[1])"
_PUSH_MARKED = "return redis.call('RPUSH', KEYS[1], 'marked ' .. ARGV[1])"


async def test_calls_of_two_scripts_on_one_pipe_run_in_the_order_they_were_made(redis: Redis, prefix: str) -> None:
    """What lets a settlement the reply did not wait for still count before the next admission:
    whichever script a call is of, and whether it goes alone or in a batch, Redis runs it after
    every call made before it."""
    pipe = ScriptPipe(redis)
    push, marked = pipe.make(_PUSH), pipe.make(_PUSH_MARKED)
    for source in (_PUSH, _PUSH_MARKED):  # a script the server must load first runs after its batch
        await redis.script_load(source)
    key = "{" + prefix + "}:log"
    sizes = _count_batches(push)
    try:
        made = [(marked, f"marked {step}") if step % 3 == 1 else (push, str(step)) for step in range(30)]
        await asyncio.gather(*(script([key], [text.removeprefix("marked ")]) for script, text in made))
        assert [item.decode() for item in await redis.lrange(key, 0, -1)] == [text for _, text in made]
        assert len(sizes) < 30 and max(sizes) > 1  # batched, each batch mixing both scripts
    finally:
        await pipe.close()


async def test_a_posted_call_is_sent_before_its_reply_comes(prefix: str, scripts: Scripts) -> None:
    script = scripts(_SPIN)
    posted = script.post(["{" + prefix + "}:spin"], [300])
    await asyncio.wait_for(posted.sent, 0.2)
    assert not posted.reply.done()  # the server is still running it
    assert await posted.reply == b"300"


_KILLED_AFTER_SENT = """
import asyncio, os, signal, sys
from redis.asyncio import Redis
from policies.redis_batch import ScriptPipe

async def main() -> None:
    push = ScriptPipe(Redis.from_url(sys.argv[1])).make(sys.argv[2])
    posted = [push.post([sys.argv[3]], [str(step)]) for step in range(50)]
    await posted[-1].sent
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_calls_sent_are_run_by_redis_when_the_process_is_killed_right_after(redis: Redis, prefix: str) -> None:
    """What ``sent`` promises the reply to a client: a replica SIGKILLed the moment after it
    loses none of the calls (here 50 in one batch, written by the pipe's sender task)."""
    await redis.script_load(_PUSH)
    for attempt in range(3):
        key = "{" + prefix + "}:killed:" + str(attempt)
        killed = await asyncio.create_subprocess_exec(sys.executable, "-c", _KILLED_AFTER_SENT, REDIS_URL, _PUSH,
                                                      key, cwd=Path(__file__).resolve().parents[2])
        assert await killed.wait() == -signal.SIGKILL
        for _ in range(100):  # the server may still be reading what the kernel delivered
            if await redis.llen(key) == 50:
                break
            await asyncio.sleep(0.01)
        assert [int(item) for item in await redis.lrange(key, 0, -1)] == list(range(50))


async def test_a_script_the_server_forgot_is_loaded_again(redis: Redis, prefix: str, scripts: Scripts) -> None:
    script = scripts(_COUNT)
    key = "{" + prefix + "}:count"
    await script([key], [1])
    await redis.script_flush()
    assert await asyncio.gather(script([key], [1]), script([key], [1])) in ([2, 3], [3, 2])
    assert await redis.get(key) == b"3"


async def test_one_calls_error_is_its_own(scripts: Scripts) -> None:
    script = scripts(_FAIL_ON_ZERO)
    results = await asyncio.gather(script(["k"], [1]), script(["k"], [0]), script(["k"], [2]),
                                   return_exceptions=True)
    assert results[0] == b"1" and results[2] == b"2"
    assert isinstance(results[1], ResponseError) and "zero refused" in str(results[1])
    all_at_once = await script.run_all([(["k"], [3]), (["k"], [0])])
    assert all_at_once[0] == b"3" and isinstance(all_at_once[1], ResponseError)


async def test_an_unreachable_server_fails_every_waiting_call() -> None:
    client = connect(f"redis://127.0.0.1:{closed_port()}/0")  # the gateway's own client settings
    assert client is not None
    script = BatchedScript(client, _COUNT)
    try:
        results = await asyncio.gather(*(script(["k"], [1]) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(result, RedisConnectionError) for result in results)
        with pytest.raises(RedisConnectionError):  # and the next call tries again
            await script(["k"], [1])
    finally:
        await script.close()
        await client.aclose()


async def test_a_caller_that_leaves_does_not_disturb_the_others(redis: Redis, prefix: str, scripts: Scripts) -> None:
    script = scripts(_COUNT)
    key = "{" + prefix + "}:count"
    calls = [asyncio.ensure_future(script([key], [1])) for _ in range(10)]
    calls[3].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert len([result for result in results if isinstance(result, int)]) == 9
    # The cancelled caller's call may or may not have been sent; nothing else is lost.
    assert int(await redis.get(key) or 0) in (9, 10)
    assert await script([key], [0]) in (9, 10)


async def test_a_slow_exchange_is_cut_at_the_timeout_and_leaves_no_late_reply(prefix: str) -> None:
    client = connect(REDIS_URL, timeout=0.2)
    assert client is not None
    script = BatchedScript(client, _SPIN)
    try:
        with pytest.raises(RedisTimeoutError):
            await script(["{" + prefix + "}:spin"], [600])
        await asyncio.sleep(0.6)  # the server is busy with the script until then
        # On the connection that timed out, the next reply read would be the spin's "600".
        assert await script(["{" + prefix + "}:spin"], [1]) == b"1"
    finally:
        await script.close()
        await client.aclose()


async def test_a_connection_redis_dropped_is_replaced_at_once(redis: Redis, prefix: str) -> None:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(REDIS_URL, client_name=name, retry=reconnect_once())  # the gateway's retry policy
    script = BatchedScript(client, _COUNT)
    key = "{" + prefix + "}:count"
    try:
        assert await script([key], [1]) == 1
        ours = [line for line in (await redis.execute_command("CLIENT", "LIST")).decode().splitlines()
                if f" name={name} " in line]
        assert len(ours) == 1  # the script's own connection
        await redis.execute_command("CLIENT", "KILL", "ID", ours[0].split()[0].removeprefix("id="))
        assert await script([key], [1]) == 2  # sent again on a new connection, not an error
    finally:
        await script.close()
        await client.aclose()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[int]:
    """A Sentinel on loopback that names the machine's Redis master of ``itest``; its port."""
    server = shutil.which("redis-server")
    assert server, "redis-server is on every machine that runs these tests"
    port = closed_port()
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its configuration as it learns
    config.write_text(f"bind 127.0.0.1\nport {port}\nsentinel monitor itest 127.0.0.1 6379 1\n")
    process = subprocess.Popen([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_a_sentinel_clients_batches_go_to_the_master_it_names(sentinel: int, redis: Redis, prefix: str) -> None:
    client = connect(f"redis+sentinel://127.0.0.1:{sentinel}/itest")
    assert client is not None
    script = BatchedScript(client, _COUNT)
    key = "{" + prefix + "}:count"
    try:
        for _ in range(50):  # until the Sentinel listens
            try:
                assert await script([key], [1]) == 1
                break
            except RedisConnectionError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the Sentinel never answered")
        assert sorted(await asyncio.gather(*(script([key], [1]) for _ in range(10)))) == list(range(2, 12))
        assert await redis.get(key) == b"11"
    finally:
        await script.close()
        await client.aclose()


def test_batches_are_packed_byte_for_byte_as_redis_py_packs_them() -> None:
    words = ("EVALSHA", "a" * 40, 3, b"{p:team}:rpm", b"{p:team}:tpm", "{p:team}:day", b"1764143000.25", b"", 1.5,
             0.1, -7, 2**70, "caf\u00e9", b"\r\n$*")
    assert b"*%d\r\n%s" % (len(words), _packed(words)) == Connection().pack_command(*words)[0]


async def test_each_key_list_is_packed_once_and_calls_differing_in_arguments_get_their_own(
        scripts: Scripts, prefix: str) -> None:
    """The cached head of a call (its SHA and keys) is shared by calls with the same keys and
    the same number of arguments; the replies prove what Redis received."""
    script = scripts("return {KEYS[1], ARGV[1], #ARGV}")
    key = f"{prefix}:k"
    assert await script((key,), [b"a"]) == [key.encode(), b"a", 1]
    assert await script([key], [b"b"]) == [key.encode(), b"b", 1]  # a list of the same keys: the same head
    assert await script((key,), [b"c", 2]) == [key.encode(), b"c", 2]
    assert await script((key + "2",), [b"d"]) == [(key + "2").encode(), b"d", 1]
    sha = script.sha
    assert sorted(script.pipe._heads) == [(sha, (key,), 1), (sha, (key,), 2), (sha, (key + "2",), 1)]
