"""Replicas sharing one Redis: a response made through one is read and continued through another
at once, a replica stopped with SIGTERM finishes the streams it has open before it exits, and a
replica asked with SIGUSR1 logs what it is doing."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_process import GatewayProcess, spawn_gateway, unique_redis_prefix, write_gateway_config
from tests.gateway_server import TEAM_A_KEY, delete_redis_prefix
from tests.spec_validation import parse_sse, validate_resource, validate_stream

AUTH = {"Authorization": f"Bearer {TEAM_A_KEY}"}


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    prefix = unique_redis_prefix()
    providers = {"sim": {"dialect": "openai_responses", "base_url": "embedded"},
                 "slow": {"dialect": "openai_responses", "base_url": "embedded",
                          "headers": {"x-sim-token-delay-ms": "50"}}}
    models = {"sim": {"deployments": [{"provider": "sim", "model": "sim-1"}]},
              "slow": {"deployments": [{"provider": "slow", "model": "sim-1"}]}}
    try:
        yield write_gateway_config(tmp_path / "gateway.yaml", store_prefix=prefix, providers=providers,
                                   models=models)
    finally:
        delete_redis_prefix(prefix)


def test_a_response_is_read_and_continued_through_another_replica(config: Path) -> None:
    with spawn_gateway(config) as first, spawn_gateway(config) as second:
        created = httpx.post(first.base_url + "/v1/responses", headers=AUTH, timeout=30,
                             json={"model": "sim", "input": "remember the word teal"}).json()
        validate_resource(created)
        read = httpx.get(f"{second.base_url}/v1/responses/{created['id']}", headers=AUTH, timeout=30)
        assert read.status_code == 200 and read.json()["output"] == created["output"]
        continued = httpx.post(second.base_url + "/v1/responses", headers=AUTH, timeout=30, json={
            "model": "sim", "input": "which word?", "previous_response_id": created["id"]})
        assert continued.status_code == 200
        validate_resource(continued.json())
        items = httpx.get(f"{first.base_url}/v1/responses/{continued.json()['id']}/input_items", headers=AUTH,
                          params={"order": "asc"}, timeout=30).json()["data"]
        texts = [part.get("text") for item in items for part in item.get("content", [])]
        assert "remember the word teal" in texts and "which word?" in texts


def _stream(replica: GatewayProcess, into: dict[str, object]) -> None:
    try:
        with httpx.stream("POST", replica.base_url + "/v1/responses", headers=AUTH, timeout=60,
                          json={"model": "slow", "input": "a long answer " * 15, "stream": True}) as reply:
            into["status"] = reply.status_code
            into["text"] = "".join(reply.iter_text())
    except httpx.HTTPError as exc:
        into["error"] = repr(exc)


def test_sigterm_lets_open_streams_finish(config: Path) -> None:
    with spawn_gateway(config) as leaving, spawn_gateway(config) as staying:
        results: list[dict[str, object]] = [{}, {}]
        threads = [threading.Thread(target=_stream, args=(leaving, result)) for result in results]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # both streams are open and mid-way (45 tokens at 50 ms)
        started = time.monotonic()
        leaving.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        exit_code = leaving.process.wait(60)
        for result in results:
            assert "error" not in result, result
            events, done = parse_sse(str(result["text"]))
            assert done and events[-1]["type"] == "response.completed"
            validate_stream(events)
        # uvicorn drains, then re-raises the signal it caught: ending "killed by SIGTERM" is its clean exit.
        assert exit_code in (0, -15) and time.monotonic() - started < 30, "it drained within the grace period"
        with pytest.raises(httpx.ConnectError):
            httpx.get(leaving.base_url + "/readyz", timeout=2)
        assert httpx.get(staying.base_url + "/readyz", timeout=5).status_code == 200


def test_sigusr1_logs_every_task_and_thread_stack(config: Path) -> None:
    with spawn_gateway(config) as gateway:
        httpx.get(gateway.base_url + "/readyz", timeout=10).raise_for_status()
        gateway.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "stacks of the" not in gateway.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = gateway.log()
        # Still serving: the signal only reports.
        assert httpx.get(gateway.base_url + "/readyz", timeout=10).status_code == 200
    assert "Current thread" in log  # faulthandler's dump of the threads
    assert "SIGUSR1: stacks of the" in log and "policy watch" in log  # the loop's tasks, by name
