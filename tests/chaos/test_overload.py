"""``listen.max_in_flight``: past it a worker answers at once with 503 ``server_overloaded`` and
``retry-after``, streams count until their last byte, probes are never refused, and every way a
request ends gives its place back."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from proxy.overload import overload_middleware
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve
from tests.spec_validation import parse_sse, validate_error_body, validate_stream

CAP = 4
AUTH = {"Authorization": f"Bearer {TEAM_A_KEY}"}
SLOW = {"model": "slow", "input": "a stream that takes a second or so " * 2, "stream": True}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    store = tmp_path_factory.mktemp("store") / "store.db"
    providers = {"sim": {"dialect": "openai_responses", "base_url": "embedded"},
                 "slow": {"dialect": "openai_responses", "base_url": "embedded",
                          "headers": {"x-sim-token-delay-ms": "40"}}}
    models = {name: {"deployments": [{"provider": name, "model": "sim-1"}]} for name in providers}
    settings = gateway_settings(f"sqlite:///{store}", providers=providers, models=models,
                                listen={"max_in_flight": CAP})
    with serve(settings) as gateway:
        yield gateway


def _assert_refused(reply: httpx.Response) -> None:
    assert reply.status_code == 503, reply.text
    validate_error_body(reply.json())
    assert reply.json()["error"]["code"] == "server_overloaded"
    assert reply.headers["retry-after"] == "1" and reply.headers["retry-after-ms"] == "1000"
    assert reply.headers["x-should-retry"] == "true" and reply.headers["x-request-id"].startswith("req_")


async def _stream(http: httpx.AsyncClient, opened: asyncio.Event) -> list[dict[str, Any]]:
    async with http.stream("POST", "/v1/responses", json=SLOW, headers=AUTH) as reply:
        assert reply.status_code == 200
        chunks = []
        async for chunk in reply.aiter_text():
            chunks.append(chunk)
            opened.set()
    events, done = parse_sse("".join(chunks))
    assert done
    validate_stream(events)
    return events


async def test_past_the_cap_requests_are_refused_at_once_and_served_again_after(running: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
        opened = [asyncio.Event() for _ in range(CAP)]
        streams = [asyncio.create_task(_stream(http, event)) for event in opened]
        await asyncio.gather(*(event.wait() for event in opened))  # CAP streams mid-way
        refused = await http.post("/v1/responses", json={"model": "sim", "input": "one more"}, headers=AUTH)
        _assert_refused(refused)
        assert refused.elapsed.total_seconds() < 1, "refused at once, not queued"
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(probe)).status_code == 200, probe
        for events in await asyncio.gather(*streams):
            assert events[-1]["type"] == "response.completed", "the streams in flight are not disturbed"
        served = await http.post("/v1/responses", json={"model": "sim", "input": "one more"}, headers=AUTH)
        assert served.status_code == 200, served.text


async def test_every_ending_gives_the_place_back(running: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
        # More of each than the cap: a place kept by any of them would refuse the streams below.
        for _ in range(CAP + 1):
            assert (await http.post("/v1/responses", json={"model": "nope", "input": "x"},
                                    headers=AUTH)).status_code == 404
            assert (await http.post("/v1/responses", content=b"{", headers=AUTH)).status_code == 400
            async with http.stream("POST", "/v1/responses", json=SLOW, headers=AUTH) as reply:
                await anext(reply.aiter_bytes())  # the client leaves mid-stream
        await _streams_ended(http)
        opened = [asyncio.Event() for _ in range(CAP)]
        for events in await asyncio.gather(*(_stream(http, event) for event in opened)):
            assert events[-1]["type"] == "response.completed"


async def _streams_ended(http: httpx.AsyncClient) -> None:
    """Until the gateway has noticed every client that left (its open-streams gauge is 0)."""
    for _ in range(100):
        metrics = (await http.get("/metrics")).text
        if not re.search(r"^interlock_open_streams\{[^}]*\} [1-9]", metrics, re.M):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("streams left open by their clients never ended")


async def test_no_cap_leaves_the_app_as_it_is() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert overload_middleware(None)(app) is app


def test_the_setting_is_validated(tmp_path: Path) -> None:
    with pytest.raises(msgspec.ValidationError, match="max_in_flight"):
        gateway_settings(f"sqlite:///{tmp_path / 's.db'}", listen={"max_in_flight": 0})
