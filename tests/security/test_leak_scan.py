"""The run-wide secrets scan (tests/security/leak_scan.py) finds a secret wherever it is planted,
and nothing in clean material. The run's own scan is the plugin registered in tests/conftest.py."""

from __future__ import annotations

import logging
import threading
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect as asyncio_connect
from websockets.sync.client import connect as sync_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as serve_websockets

from tests.gateway_server import TEAM_A_KEY, gateway_settings, serve
from tests.security.leak_scan import REDIS_URL, LeakScan, named_secrets

PLANTED = "planted-" + uuid.uuid4().hex
"""Not a run secret (its name says nothing of one): only the scanner under test looks for it."""


def test_named_secrets_are_the_tests_key_constants_and_the_environments() -> None:
    module = types.ModuleType("tests.e2e.example")
    module.TEAM_KEY = "sk-example-team"  # type: ignore[attr-defined]
    module.SEAL_KEY = "c2VhbC1rZXktb2YtMzItYnl0ZXM="  # type: ignore[attr-defined]
    module.SEAL_KEY_ENV = "INTERLOCK_TEST_SEAL_KEY"  # type: ignore[attr-defined]
    module.SHORT_KEY = "sk-1"  # type: ignore[attr-defined]
    module.MODEL = "sim-model-name"  # type: ignore[attr-defined]
    outside = types.ModuleType("proxy.example")
    outside.API_KEY = "not-a-test-constant"  # type: ignore[attr-defined]
    environ = {"INTERLOCK_SEAL_KEY": "env-seal-key-value", "OPENAI_API_KEY": "sk-env-openai", "HOME": "/root/home"}
    assert named_secrets([("tests.e2e.example", module), ("proxy.example", outside)], environ) == {
        "sk-example-team", "c2VhbC1rZXktb2YtMzItYnl0ZXM=", "env-seal-key-value", "sk-env-openai"}


def test_a_planted_secret_is_found_in_every_source(tmp_path: Path) -> None:
    scan = LeakScan(secrets=lambda: {PLANTED})
    scan.start()
    try:
        logging.getLogger("interlock.example").warning("upstream said %s", PLANTED)
    finally:
        scan.stop()
    request = httpx.Request("POST", "http://127.0.0.1/v1/responses")
    scan.record_reply(httpx.Response(401, request=request, text=f'{{"error": "{PLANTED}"}}'))
    scan.record_reply(httpx.Response(200, request=request, text="fine"))
    (tmp_path / "store.db").write_bytes(b"\x00SQLite\x00" + PLANTED.encode() + b"\x00")
    scan.read_files(tmp_path)
    key = f"interlock-test-{uuid.uuid4().hex[:12]}:leak"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.hset(key, "body", f"stored {PLANTED}")
        scan.read_redis()
    finally:
        client.delete(key)
        client.close()
    found = scan.scan()
    assert [leak.split(" in ", 1)[1].split(":", 1)[0] for leak in found] == ["log", "error body", "redis", "file"]
    assert all(leak.startswith("plan... in ") and PLANTED not in leak for leak in found)


def test_clean_material_has_no_leak(tmp_path: Path) -> None:
    scan = LeakScan(secrets=lambda: {PLANTED}, redis_url=None)
    request = httpx.Request("GET", "http://127.0.0.1/v1/responses/x")
    scan.record_reply(httpx.Response(404, request=request, text='{"error": "not found"}'))
    (tmp_path / "gateway.log").write_text(f"a key of {len(PLANTED)} characters was refused")
    scan.read_files(tmp_path)
    scan.read_redis()
    assert scan.scan() == []


def _sources(leaks: list[str]) -> list[str]:
    return [leak.split(" in ", 1)[1].split(":", 1)[0] for leak in leaks]


@pytest.mark.parametrize("name", ["interlock.engine", "providers.openai_responses", "aiohttp.client", "uvicorn.error"])
def test_debug_records_are_scanned_whatever_the_loggers_level(name: str) -> None:
    top = logging.getLogger(name.split(".")[0])
    run_level = top.level
    top.setLevel(logging.INFO)  # as a deployment's configuration leaves it
    scan = LeakScan(secrets=lambda: {PLANTED}, redis_url=None)
    scan.start()
    try:
        logging.getLogger(name).debug("raw upstream body: %r", PLANTED.encode())
    finally:
        scan.stop()
        level_after = top.level
        top.setLevel(run_level)
    assert _sources(scan.scan()) == ["log"]
    assert level_after == logging.INFO


def test_a_test_gateways_debug_and_uvicorn_records_reach_the_scan(tmp_path: Path) -> None:
    down = {"dialect": "openai_responses", "base_url": "embedded", "headers": {"x-sim-fault": "status:503"}}
    settings = gateway_settings(f"sqlite:///{tmp_path / 'store.db'}", providers={"down": down},
                                models={"down": {"deployments": [{"provider": "down", "model": "sim-1"}]}})
    scan = LeakScan(secrets=lambda: {PLANTED}, redis_url=None)
    scan.start()
    try:
        with serve(settings) as gateway:
            reply = httpx.post(gateway.base_url + "/v1/responses", json={"model": "down", "input": "hi"},
                               headers={"Authorization": f"Bearer {TEAM_A_KEY}"}, timeout=30)
    finally:
        scan.stop()
    assert reply.status_code == 503
    names = {line.split(" ", 1)[0] for line in scan.seen["log"]}
    assert "uvicorn.error" in names  # its start-up lines, at info
    # The raw upstream error body, logged at debug only.
    assert any(line.startswith("providers.openai_responses upstream error %s: %r") for line in scan.seen["log"])


@contextmanager
def _planting_server() -> Iterator[str]:
    """A loopback WebSocket server that sends each client one message holding the planted secret,
    in two frames split inside the secret (compressed: permessage-deflate is on by default)."""

    def plant(connection: ServerConnection) -> None:
        connection.send([f'{{"type": "error", "message": "{PLANTED[:12]}', f'{PLANTED[12:]}"}}'])

    with serve_websockets(plant, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        finally:
            server.shutdown()
            thread.join()


async def _receive(url: str, client: str) -> str | bytes:
    if client == "sync":
        with sync_connect(url) as sync_ws:
            return sync_ws.recv()
    async with asyncio_connect(url) as asyncio_ws:
        return await asyncio_ws.recv()


@pytest.mark.parametrize("client", ["sync", "asyncio"])
async def test_a_secret_in_a_websocket_frame_is_found(client: str) -> None:
    scan = LeakScan(secrets=lambda: {PLANTED}, redis_url=None)
    with _planting_server() as url:
        scan.start()
        try:
            message = await _receive(url, client)
        finally:
            scan.stop()
    assert PLANTED in message
    assert message in scan.seen["websocket frame"]
    assert _sources(scan.scan()) == ["websocket frame"]
