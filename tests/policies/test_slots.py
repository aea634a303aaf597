"""Every multi-key Redis operation keeps its keys in one hash slot, so it runs on Cluster.

Each command the limits and circuits write is read back from the wire; a script's keys are its
``numkeys`` first arguments. Names that could break a hash tag (braces, colons) are used on
purpose."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from policies.backend import circuit_key, connect, team_key
from policies.circuit import CircuitBoard
from policies.limits import UsageRecord
from policies.limits_redis import RedisLimits
from tests.policies.conftest import REDIS_URL, policy

_KEYLESS = ("SCRIPT", "HELLO", "CLIENT", "PING", "SELECT", "AUTH")
"""Commands with no keys: the handshake of a new connection, a script's loading."""


def _spy(client: Redis, sent: list[tuple[str, list[bytes]]]) -> None:
    """Record the keys of every command ``client``'s connections write, alone, in a pipeline or
    in a script's batch (which writes to a connection of its own, made by the client's pool)."""

    def record(args: list[bytes]) -> None:
        name = args[0].decode().upper()
        if name in ("EVALSHA", "EVAL"):
            keys = args[3:3 + int(args[2])]  # name, script or digest, numkeys, keys...
        elif name == "MGET":
            keys = args[1:]
        elif name in ("XRANGE", "GET"):
            keys = args[1:2]
        elif name in _KEYLESS:
            keys = []
        else:
            raise AssertionError(f"a command this test does not know yet: {name}")
        sent.append((name, keys))

    def recording(send: Callable[..., Any]) -> Callable[..., Any]:
        def written(command: Any, *args: Any, **options: Any) -> Any:
            wire = command.encode() if isinstance(command, str) else command
            for args_ in _commands(wire if isinstance(wire, bytes) else b"".join(wire)):
                record(args_)
            return send(command, *args, **options)

        return written

    pool = client.connection_pool
    make = pool.make_connection

    def make_recording() -> Any:
        connection = make()
        connection.send_packed_command = recording(connection.send_packed_command)
        return connection

    pool.make_connection = make_recording  # type: ignore[method-assign]


def _commands(wire: bytes) -> Iterator[list[bytes]]:
    """The RESP arrays (commands) in ``wire``."""
    at = 0
    while at < len(wire):
        end = wire.index(b"\r\n", at)
        count, at = int(wire[at + 1:end]), end + 2
        args = []
        for _ in range(count):
            end = wire.index(b"\r\n", at)
            size, at = int(wire[at + 1:end]), end + 2
            args.append(wire[at:at + size])
            at += size + 2
        yield args


def _usage(team: str, key: str) -> UsageRecord:
    return UsageRecord(ts=time.time(), team=team, key=key, model="gpt", deployment="d", tier="default",
                       input_tokens=3, cached_tokens=0, output_tokens=4, cost=0.25, latency_ms=1.0)


async def test_every_multi_key_operation_stays_in_one_slot(prefix: str) -> None:
    client = connect(REDIS_URL)
    assert isinstance(client, Redis)
    sent: list[tuple[str, list[bytes]]] = []
    _spy(client, sent)
    limits = RedisLimits(client, prefix=prefix)
    board = CircuitBoard(failures=2, cooldown_s=30, redis=client, prefix=prefix)
    quota = {"rpm": 100, "tpm": 10000, "daily_budget": 50, "monthly_budget": 500}
    operations: list[Callable[[], Awaitable[object]]] = []
    for team, key in (("team-a", "main"), ("b:{x}", "k:{y}"), ("c%3Ad", "")):
        chosen = policy(team=team, key=key or None,
                        limits={"key": quota, "team": quota, "models": {"g*": quota, "gpt": quota}})

        async def admit_and_settle(chosen: Any = chosen, team: str = team, key: str = key) -> None:
            reservation = await limits.admit(chosen, "gpt", reserve_tokens=10)
            await limits.settle(reservation, _usage(team, key))

        operations += [admit_and_settle, lambda chosen=chosen: limits.peek(chosen, "gpt"),
                       lambda team=team: limits.usage(team, 0, time.time())]
    operations += [lambda: board.record("openai/gpt-4o", ok=False), lambda: board.record("a{b}/c:d", ok=False),
                   lambda: board.refresh(["openai/gpt-4o", "a{b}/c:d", "groq/llama"])]
    try:
        for operation in operations:
            await operation()
    finally:
        await limits.close()

    multi = [(name, keys) for name, keys in sent if len(keys) > 1]
    assert {name for name, _ in multi} == {"EVALSHA", "MGET"}
    assert len(multi) >= 10 and max(len(keys) for _, keys in multi) == 16  # 4 scopes x (rpm, tpm, day, month)
    for name, keys in multi:
        slots = {key_slot(key) for key in keys}
        assert len(slots) == 1, f"{name} spans slots {sorted(slots)}: {keys}"


@pytest.mark.parametrize(("team", "other"), [("a", "a:b"), ("x}", "x"), ("{t}", "t"), ("p%3Aq", "p:q")])
def test_names_cannot_spell_each_others_keys(team: str, other: str) -> None:
    assert team_key("interlock:", team, "team", "rpm") != team_key("interlock:", other, "team", "rpm")
    assert team_key("interlock:", team, "usage").count("{") == 1
    assert circuit_key("interlock:", "x") != team_key("interlock:", "%circuit", "x")


def test_keys_read_as_documented() -> None:
    assert team_key("interlock:", "team-a", "team", "rpm") == "{interlock:team-a}:team:rpm"
    assert circuit_key("interlock:", "openai/gpt-4o") == "{interlock:%circuit}:openai/gpt-4o"
