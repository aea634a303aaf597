"""Micro-benchmark of the policy + limits step per request (not a test; figures in docs/policies.md).

    uv run python -m tests.policies.bench_admission [--requests N] [--redis redis://127.0.0.1:6379/0]

Measures, one request after another on one event loop: the pure policy step (policy lookup,
tier, store, route over a 5-deployment alias), ``Gate.admit`` (that plus the limits check: in
memory, or one Redis script call; a bare PING shows the round trip's share), and ``Gate.settle``
(after the response). The team has key, team and model limits and budgets, so every counter kind
is exercised. Redis keys go under a unique prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from policies.backend import connect
from policies.circuit import CircuitBoard
from policies.gate import Gate, decide
from policies.limits import Limits, MemoryLimits
from policies.limits_redis import RedisLimits
from policies.teams import PolicyStore
from proxy.auth import Principal
from proxy.decoding import decode_create_request
from proxy.schema.response import Usage
from tests.policies.conftest import ENV, settings_with

QUOTA = {"rpm": 10**9, "tpm": 10**12, "daily_budget": 10**9, "monthly_budget": 10**9}
POLICY = {"limits": {"key": QUOTA, "team": QUOTA, "models": {"gpt*": QUOTA}},
          "providers": {"prefer": ["azure-*", "openai"]}}
PRINCIPAL = Principal(team="team-a", key_name="main")
BODY = json.dumps({"model": "gpt", "input": "Say hello.", "service_tier": "priority",
                   "prompt_cache_key": "conversation-42"}).encode()


def _micros(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"mean {statistics.fmean(ordered):7.1f}  p50 {ordered[len(ordered) // 2]:7.1f}  p99 {p99:7.1f} µs"


async def _timed(count: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(count // 10, 500)):  # warm up: caches, script load, connections
        await step()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


async def _bench(name: str, limits: Limits, count: int) -> None:
    store = PolicyStore(settings_with(policy=POLICY), environ=ENV.get)
    gate = Gate(store, limits, CircuitBoard(failures=5, cooldown_s=30), rng=random.Random(1))
    request = decode_create_request(BODY)
    usage = Usage(input_tokens=120, output_tokens=80)
    ticket = await gate.admit(PRINCIPAL, request, input_tokens=len(BODY) // 4)
    candidate = ticket.route.candidates[0]

    async def pure() -> None:
        snapshot = store.current
        decide(snapshot, snapshot.policy(PRINCIPAL), request, circuits=gate.circuits.state, input_tokens=40)

    async def admit() -> None:
        await gate.admit(PRINCIPAL, request, input_tokens=40)

    async def settle() -> None:
        await gate.settle(ticket, candidate, usage, reported_tier="priority")

    if name == "memory":
        print(f"policy step (no I/O)      {_micros(await _timed(count, pure))}")
    print(f"admit, limits in {name:7}  {_micros(await _timed(count, admit))}")
    print(f"settle, limits in {name:7} {_micros(await _timed(count, settle))}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    await _bench("memory", MemoryLimits(retention_s=60), args.requests)
    prefix = f"bench-admission-{uuid.uuid4().hex[:8]}:"
    client = connect(args.redis)
    assert client is not None, "--redis must name a Redis server"
    try:
        print(f"Redis PING round trip     {_micros(await _timed(args.requests, client.ping))}")
        await _bench("redis", RedisLimits(client, prefix=prefix, retention_s=60), args.requests)
    finally:
        keys = [key async for key in client.scan_iter(match="{" + prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    print(f"({args.requests} sequential requests each; body {len(BODY)} bytes; "
          f"msgspec {msgspec.__version__})")


if __name__ == "__main__":
    asyncio.run(main())
