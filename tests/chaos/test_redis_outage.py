"""Redis, the response store, stopped and restarted under a running gateway: regressions of
what the chaos run found. A response that ends while the store is away still reaches its client
(a stream used to be cut without a terminal event, a JSON reply to be a 500); what needs the store
gets 503 ``store_unavailable`` with ``retry-after``; the first requests after a restart succeed
and are metered (they used to fail on pooled connections Redis had closed)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.backend import connect
from policies.limits_redis import RedisLimits
from tests.bench.procs import Processes
from tests.chaos.cluster import RedisServer
from tests.conftest import Api
from tests.gateway_process import unique_redis_prefix
from tests.gateway_server import TEAM_A_KEY, gateway_settings, serve
from tests.policies.conftest import policy
from tests.spec_validation import validate_error_body

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")

QUESTION = {"model": "sim", "input": "still answered?"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop (the shared one is never touched)."""
    with Processes(tmp_path / "logs", tmp_path / "children.pids") as procs:
        server = RedisServer(procs, tmp_path)
        server.start()
        yield server


@pytest.fixture
def api(redis_server: RedisServer) -> Iterator[Api]:
    with serve(gateway_settings(redis_server.url, store_prefix=unique_redis_prefix())) as running:
        client = Api(running.base_url, TEAM_A_KEY)
        yield client
        client.close()


def _answer(api: Api, stream: bool) -> dict[str, Any]:
    if not stream:
        return api.create(QUESTION)
    events = api.stream(QUESTION)
    assert events[-1]["type"] == "response.completed"
    return events[-1]["response"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_response_ending_while_the_store_is_down_reaches_its_client_unstored(
        api: Api, redis_server: RedisServer, stream: bool) -> None:
    redis_server.stop()
    answer = _answer(api, stream)
    assert answer["output"][0]["content"][0]["text"] == "Echo: still answered?"
    assert answer["store"] is False, "it says it was not stored"


def test_what_needs_the_store_gets_503_with_retry_after_while_it_is_down(
        api: Api, redis_server: RedisServer) -> None:
    stored = api.create(QUESTION)
    redis_server.stop()
    for reply in (api.http.get(f"/v1/responses/{stored['id']}"),
                  api.http.post("/v1/responses", json={**QUESTION, "background": True})):
        assert reply.status_code == 503, reply.text
        validate_error_body(reply.json())
        assert reply.json()["error"]["code"] == "store_unavailable"
        assert reply.headers["retry-after"] == "1" and reply.headers["x-should-retry"] == "true"


def test_the_first_requests_after_a_redis_restart_succeed(api: Api, redis_server: RedisServer) -> None:
    stored = api.create(QUESTION)  # the store's pool now holds a connection
    redis_server.stop()
    redis_server.start()  # with the data saved at the stop
    assert api.get(f"/v1/responses/{stored['id']}")["id"] == stored["id"]
    assert _answer(api, stream=True)["store"] is True


async def test_limits_stay_metered_across_a_redis_restart(redis_server: RedisServer) -> None:
    """Each pooled connection Redis closed used to fail one limits call: an unmetered admission,
    and a usage record left in memory, lost if the replica died before the next settlement."""
    client = connect(redis_server.url)
    assert client is not None
    limits = RedisLimits(client, prefix=unique_redis_prefix())
    chosen = policy(limits={"team": {"rpm": 1000}})
    try:
        await asyncio.gather(*(limits.admit(chosen, "gpt") for _ in range(4)))  # pooled connections
        redis_server.stop()
        redis_server.start()
        reservations = await asyncio.gather(*(limits.admit(chosen, "gpt") for _ in range(4)))
    finally:
        await limits.close()
    assert not any(reservation.degraded for reservation in reservations)
