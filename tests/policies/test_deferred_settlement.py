"""A settlement whose answer the reply does not wait for: ``Gate.settle`` returns once the limits
store has it (handed over), not answered; the next admission counts it all the same (in memory
and through the real Redis), ``usage`` and ``close`` wait for the answer, and a failed answer is
logged."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator

import pytest

from policies.backend import connect
from policies.circuit import CircuitBoard
from policies.gate import Gate
from policies.limits import Limits, MemoryLimits, Plan, Settlement, UsageRecord
from policies.limits_redis import RedisLimits
from proxy.auth import Principal
from proxy.decoding import ResponseRequest, decode_create_request
from proxy.errors import RateLimited
from proxy.schema.response import Usage
from tests.policies.conftest import REDIS_URL, store_with

MAIN = Principal(team="team-a", key_name="main")
# gpt-4o's default price: 1,000 input and 500 output tokens cost 0.0075, over a 0.005 budget.
OVER_BUDGET = Usage(input_tokens=1000, output_tokens=500)


def _request() -> ResponseRequest:
    return decode_create_request(json.dumps({"model": "gpt", "input": "hi"}).encode())


def _gate(store: Limits, **policy: object) -> Gate:
    return Gate(store_with(policy=policy), store, CircuitBoard(failures=3, cooldown_s=30), rng=random.Random(3))


class HeldLimits(MemoryLimits):
    """Counts at once, as memory does, but hands each settlement over only once ``handed`` is
    set and answers only once ``release`` is (or fails)."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.handed = asyncio.Event()
        self.release = asyncio.Event()
        self.answered = 0
        self._fail = fail

    def _account(self, plan: Plan, tokens: int, record: UsageRecord) -> Settlement:
        super()._account(plan, tokens, record)
        return Settlement(asyncio.ensure_future(self._answer()), sent=self.handed.wait())

    async def _answer(self) -> None:
        await self.release.wait()
        if self._fail:
            raise RuntimeError("the store refused the record")
        self.answered += 1


async def _settle_one(gate: Gate, usage: Usage = OVER_BUDGET) -> UsageRecord:
    ticket = await gate.admit(MAIN, _request())
    return await gate.settle(ticket, ticket.route.candidates[0], usage, response_id="resp_1")


async def _still_waiting(waiter: asyncio.Future[object]) -> bool:
    await asyncio.sleep(0.05)
    return not waiter.done()


async def test_settle_waits_for_the_hand_over_not_for_the_answer_and_usage_waits_for_it() -> None:
    limits = HeldLimits()
    gate = _gate(limits)
    settling = asyncio.ensure_future(_settle_one(gate))
    assert await _still_waiting(settling)
    limits.handed.set()
    record = await settling
    assert limits.answered == 0
    reading = asyncio.ensure_future(gate.usage("team-a", record.ts - 1, record.ts + 1))
    assert await _still_waiting(reading)
    limits.release.set()
    assert await reading == [record] and limits.answered == 1
    await gate.close()


async def test_close_waits_for_every_answer() -> None:
    limits = HeldLimits()
    limits.handed.set()
    gate = _gate(limits)
    await _settle_one(gate)
    await _settle_one(gate)
    closing = asyncio.ensure_future(gate.close())
    assert await _still_waiting(closing)
    limits.release.set()
    await closing
    assert limits.answered == 2


async def test_a_failed_answer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    limits = HeldLimits(fail=True)
    limits.handed.set()
    gate = _gate(limits)
    await _settle_one(gate)
    limits.release.set()
    with caplog.at_level(logging.ERROR, logger="interlock.policies"):
        await gate.accounted()
    assert "could not record the usage of response resp_1" in caplog.text
    await gate.close()


@pytest.fixture(params=["memory", "redis"])
async def limits(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Limits]:
    made: Limits = MemoryLimits() if request.param == "memory" else RedisLimits(connect(REDIS_URL), prefix=prefix)
    yield made
    await made.close()


async def test_the_next_admission_counts_a_settlement_not_yet_answered(limits: Limits) -> None:
    """Admitted straight after ``settle`` returns, with nothing awaited between: the spend is
    already counted, so the budget refuses; then the team's usage holds the record."""
    gate = _gate(limits, limits={"team": {"daily_budget": 0.005}})
    for _ in range(3):  # the first settlement may go out alone, later ones in a batch
        record = await _settle_one(gate, Usage(input_tokens=10, output_tokens=1))
        assert (await gate.usage("team-a", record.ts - 1, record.ts + 1))[-1] == record
    await _settle_one(gate)
    with pytest.raises(RateLimited) as refused:
        await gate.admit(MAIN, _request())
    assert refused.value.code == "budget_exceeded"
    await gate.accounted()
