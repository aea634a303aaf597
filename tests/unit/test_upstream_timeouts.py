"""``providers.http.send`` and ``sse_reads`` against a real simulator: ``first_byte`` bounds the
wait for the reply's headers, ``idle`` the gaps between stream chunks after them, whichever of
the two is longer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest

from providers.base import PreparedCall
from providers.http import new_session, read_body, send, sse_reads
from proxy.errors import GatewayError, UpstreamError, UpstreamTimeout
from proxy.schema.upstream import Deployment, Timeouts


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    session = new_session()
    yield session
    await session.close()


def _call(sim: str, **headers: str) -> PreparedCall:
    return PreparedCall(url=sim + "/v1/responses", headers={"Content-Type": "application/json", **headers},
                        body={"model": "m", "input": "a somewhat longer question for the stream", "stream": True})


def _deployment(sim: str, *, first_byte: float, idle: float) -> Deployment:
    return Deployment(name="sim", provider="sim", dialect="openai_responses", base_url=sim, model="m",
                      timeouts=Timeouts(connect=1, first_byte=first_byte, idle=idle, total=20))


def _unexpected(status: int, headers: object, body: bytes) -> GatewayError:
    raise AssertionError(f"unexpected upstream status {status}: {body!r}")


async def _events(response: aiohttp.ClientResponse) -> list[str | None]:
    return [event async for events in sse_reads(response, "sim") for event, _ in events]


async def test_headers_may_take_longer_than_idle_within_first_byte(sim: str, session: aiohttp.ClientSession) -> None:
    # A slow first byte (a flex tier, a long prompt) with short gaps once the stream runs.
    call = _call(sim, **{"x-sim-latency-ms": "800"})
    response = await send(session, call, _deployment(sim, first_byte=5, idle=0.2), _unexpected)
    events = await _events(response)
    assert events[0] == "response.created" and events[-1] == "response.completed"


async def test_no_headers_within_first_byte_is_a_timeout(sim: str, session: aiohttp.ClientSession) -> None:
    call = _call(sim, **{"x-sim-latency-ms": "3000"})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.3s"):
        await send(session, call, _deployment(sim, first_byte=0.3, idle=10), _unexpected)
    assert time.monotonic() - started < 2.5, "bounded by first_byte, not by idle"


async def test_a_stall_after_the_headers_is_bounded_by_idle(sim: str, session: aiohttp.ClientSession) -> None:
    call = _call(sim, **{"x-sim-fault": "stall-mid-stream"})
    response = await send(session, call, _deployment(sim, first_byte=10, idle=0.3), _unexpected)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="stream stalled"):
        await _events(response)
    assert time.monotonic() - started < 5, "bounded by idle, not by first_byte"


async def test_a_cut_stream_is_an_upstream_error(sim: str, session: aiohttp.ClientSession) -> None:
    call = _call(sim, **{"x-sim-fault": "reset-after-first-byte"})
    response = await send(session, call, _deployment(sim, first_byte=5, idle=5), _unexpected)
    with pytest.raises(UpstreamError, match="stream was cut"):
        await _events(response)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_kept_alive_connection_is_reused_after_idle(sim: str, session: aiohttp.ClientSession,
                                                            stream: bool) -> None:
    # The idle bound ends with the reply: a connection back in the pool must not time out later
    # and fail the next request sent on it.
    deployment = _deployment(sim, first_byte=5, idle=0.2)
    for _ in range(2):
        call = msgspec.structs.replace(_call(sim), body={**_call(sim).body, "stream": stream})
        response = await send(session, call, deployment, _unexpected)
        if stream:
            assert (await _events(response))[-1] == "response.completed"
        else:
            assert (await read_body(response, "sim")).startswith(b"{")
        await asyncio.sleep(0.5)
