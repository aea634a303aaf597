"""The run-wide secrets scan (tests/security/leak_scan.py) finds a secret wherever it is planted,
and nothing in clean material. The run's own scan is the plugin registered in tests/conftest.py."""

from __future__ import annotations

import logging
import types
import uuid
from pathlib import Path

import httpx
import redis

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
