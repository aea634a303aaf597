"""Circuit transitions, in memory and shared through the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from policies.backend import connect
from policies.circuit import CircuitBoard
from policies.router import prepare, route
from policies.tiers import decide_tier
from tests.policies.conftest import REDIS_URL, catalogue_model, policy

Board = Callable[[], CircuitBoard]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def new_board(request: pytest.FixtureRequest, prefix: str, clock: Clock) -> AsyncIterator[Board]:
    """Boards sharing one state through Redis (each with its own connection), or lone boards."""
    clients = []

    def make() -> CircuitBoard:
        redis = connect(REDIS_URL) if request.param == "redis" else None
        clients.append(redis)
        return CircuitBoard(failures=3, cooldown_s=30, redis=redis, prefix=prefix, clock=clock)

    yield make
    for client in clients:
        if client is not None:
            await client.aclose()


async def test_transitions(new_board: Board, clock: Clock) -> None:
    board = new_board()
    assert board.state("p/m").state == "closed"
    for failures in (1, 2):
        state = await board.record("p/m", ok=False)
        assert (state.state, state.failures) == ("closed", failures)
    opened = await board.record("p/m", ok=False)
    assert (opened.state, opened.failures, opened.retry_at) == ("open", 3, clock.now + 30)
    clock.now += 29.9
    assert board.state("p/m").state == "open"
    clock.now += 0.2
    assert board.state("p/m").state == "half_open"
    reopened = await board.record("p/m", ok=False)  # the trial failed: another cool-down
    assert (reopened.state, reopened.retry_at) == ("open", clock.now + 30)
    clock.now += 31
    assert board.state("p/m").state == "half_open"
    closed = await board.record("p/m", ok=True)
    assert (closed.state, closed.failures) == ("closed", 0)


async def test_a_success_resets_the_count(new_board: Board) -> None:
    board = new_board()
    await board.record("p/m", ok=False)
    await board.record("p/m", ok=False)
    await board.record("p/m", ok=True)
    assert (await board.record("p/m", ok=False)).state == "closed"


async def test_failures_in_flight_while_open_do_not_extend_it(new_board: Board, clock: Clock) -> None:
    board = new_board()
    for _ in range(3):
        await board.record("p/m", ok=False)
    clock.now += 10
    late = await board.record("p/m", ok=False)
    assert late.retry_at == clock.now - 10 + 30


async def test_state_is_shared_through_redis(prefix: str, clock: Clock) -> None:
    clients = [connect(REDIS_URL), connect(REDIS_URL)]
    first, second = (CircuitBoard(failures=2, cooldown_s=30, redis=client, prefix=prefix, clock=clock)
                     for client in clients)
    await first.record("openai/gpt-4o", ok=False)
    await second.record("openai/gpt-4o", ok=False)  # consecutive across the two processes
    await first.refresh(["openai/gpt-4o", "groq/llama-70b"])
    assert first.state("openai/gpt-4o").state == "open"
    chosen = policy()
    found = route(prepare(catalogue_model("gpt"), chosen), decide_tier("default", chosen), circuits=first.state)
    assert "openai" not in [c.spec.provider for c in found.candidates]
    await second.record("openai/gpt-4o", ok=True)
    await first.refresh(["openai/gpt-4o"])
    assert first.state("openai/gpt-4o").state == "closed"
    for client in clients:
        assert client is not None
        await client.aclose()


async def test_run_keeps_refreshing_after_an_error(prefix: str, clock: Clock) -> None:
    client = connect(REDIS_URL)
    writer, reader = (CircuitBoard(failures=1, cooldown_s=30, redis=client, prefix=prefix, clock=clock)
                      for _ in range(2))
    calls: list[int] = []

    def upstreams() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("catalogue mid-swap")
        return ["p/m"]

    task = asyncio.create_task(reader.run(upstreams, interval=0.01))
    try:
        await writer.record("p/m", ok=False)
        for _ in range(500):
            if reader.state("p/m").state == "open":
                break
            await asyncio.sleep(0.01)
        assert reader.state("p/m").state == "open" and len(calls) >= 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert client is not None
        await client.aclose()
