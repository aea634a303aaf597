"""``BatchedScript`` against the real Redis: a lone call goes out at once, concurrent calls
share pipelines and each gets its own reply, an unknown script is loaded and its calls sent
again, an unreachable server fails every waiting call, and a caller that leaves takes nothing
from the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from policies.backend import connect
from policies.redis_batch import BatchedScript
from tests.policies.conftest import closed_port

# Increments the key by the argument and returns the new value, so replies tell calls apart.
_COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
_FAIL_ON_ZERO = "if ARGV[1] == '0' then return redis.error_reply('zero refused') end return ARGV[1]"


def _count_pipelines(redis: Redis) -> list[int]:
    """The size of every pipeline ``redis`` sends, as it sends it."""
    sizes: list[int] = []
    make = redis.pipeline

    def pipeline(*args: Any, **options: Any) -> Any:
        made = make(*args, **options)
        execute = made.execute

        async def counted(*a: Any, **kw: Any) -> Any:
            sizes.append(len(made.command_stack))
            return await execute(*a, **kw)

        made.execute = counted  # type: ignore[method-assign]
        return made

    redis.pipeline = pipeline  # type: ignore[method-assign]
    return sizes


async def test_concurrent_calls_share_pipelines_and_get_their_own_replies(redis: Redis, prefix: str) -> None:
    script = BatchedScript(redis, _COUNT)
    await redis.script_load(_COUNT)  # else the first pipeline is sent twice: refused, loaded, again
    sizes = _count_pipelines(redis)
    key = "{" + prefix + "}:count"
    replies = await asyncio.gather(*(script([key], [step]) for step in [1] * 40 + [1000]))
    assert sorted(replies)[:40] == list(range(1, 41))  # each call ran once, in some order
    assert max(replies) == 1040 and replies[-1] == 1040  # the last call sent ran last
    assert sum(sizes) == 41 and len(sizes) < 41 and max(sizes) > 1
    assert await redis.get(key) == b"1040"


async def test_a_lone_call_is_sent_at_once_and_calls_after_it_batch_again(redis: Redis, prefix: str) -> None:
    script = BatchedScript(redis, _COUNT)
    key = "{" + prefix + "}:count"
    assert await script([key], [5]) == 5
    assert await script([key], [5]) == 10


async def test_a_call_with_nothing_in_flight_goes_out_from_its_own_task(redis: Redis, prefix: str) -> None:
    """No sender task, so the call does not wait its turn behind the loop's ready callbacks."""
    script = BatchedScript(redis, _COUNT)
    key = "{" + prefix + "}:count"
    sent_from: list[asyncio.Task[Any] | None] = []
    run_all = script.run_all

    async def spy(calls: Any) -> list[object]:
        sent_from.append(asyncio.current_task())
        return await run_all(calls)

    script.run_all = spy  # type: ignore[method-assign]
    caller = asyncio.ensure_future(script([key], [1]))
    assert await caller == 1
    assert sent_from == [caller]


async def test_a_script_the_server_forgot_is_loaded_again(redis: Redis, prefix: str) -> None:
    script = BatchedScript(redis, _COUNT)
    key = "{" + prefix + "}:count"
    await script([key], [1])
    await redis.script_flush()
    assert await asyncio.gather(script([key], [1]), script([key], [1])) in ([2, 3], [3, 2])
    assert await redis.get(key) == b"3"


async def test_one_calls_error_is_its_own(redis: Redis) -> None:
    script = BatchedScript(redis, _FAIL_ON_ZERO)
    results = await asyncio.gather(script(["k"], [1]), script(["k"], [0]), script(["k"], [2]),
                                   return_exceptions=True)
    assert results[0] == b"1" and results[2] == b"2"
    assert isinstance(results[1], ResponseError) and "zero refused" in str(results[1])
    all_at_once = await script.run_all([(["k"], [3]), (["k"], [0])])
    assert all_at_once[0] == b"3" and isinstance(all_at_once[1], ResponseError)


async def test_an_unreachable_server_fails_every_waiting_call() -> None:
    client = connect(f"redis://127.0.0.1:{closed_port()}/0")  # the gateway's own client settings
    assert client is not None
    try:
        script = BatchedScript(client, _COUNT)
        results = await asyncio.gather(*(script(["k"], [1]) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(result, RedisConnectionError) for result in results)
        with pytest.raises(RedisConnectionError):  # and the next call tries again
            await script(["k"], [1])
    finally:
        await client.aclose()


async def test_a_caller_that_leaves_does_not_disturb_the_others(redis: Redis, prefix: str) -> None:
    script = BatchedScript(redis, _COUNT)
    key = "{" + prefix + "}:count"
    calls = [asyncio.ensure_future(script([key], [1])) for _ in range(10)]
    calls[3].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert len([result for result in results if isinstance(result, int)]) == 9
    # The cancelled caller's call may or may not have been sent; nothing else is lost.
    assert int(await redis.get(key) or 0) in (9, 10)
    assert await script([key], [0]) in (9, 10)
