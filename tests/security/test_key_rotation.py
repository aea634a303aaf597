"""Rotating a team's key without downtime (docs/security.md): add the new key, let both work
while clients move, remove the old one. Through a live gateway that reloads, for a key in a team
policy file (file watch) and for one in the gateway file's ``teams`` (a real process, SIGHUP).
While each reload happens, the key that must keep working is used without pause and never
refused."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from proxy.auth import hash_key
from tests.conftest import Api
from tests.gateway_process import spawn_gateway, write_gateway_config
from tests.gateway_server import gateway_settings, serve
from tests.spec_validation import validate_error_body

OLD_KEY = "sk-rotation-old-3b1f9e"
NEW_KEY = "sk-rotation-new-a7c204"


def _keys(*secrets: str) -> list[dict[str, str]]:
    return [{"sha256": hash_key(secret), "name": "old" if secret == OLD_KEY else "new"} for secret in secrets]


def _replace(path: Path, document: dict[str, Any]) -> None:
    """Write the whole file, then rename it into place: a reload never reads half of it."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(yaml.safe_dump(document))
    os.replace(scratch, path)


def _status(base_url: str, key: str) -> int:
    return httpx.get(base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


@contextmanager
def _in_use(base_url: str, key: str) -> Iterator[list[int]]:
    """Calls with ``key`` back to back until the block ends; yields the statuses other than 200."""
    refused: list[int] = []
    done = threading.Event()

    def call() -> None:
        while not done.is_set():
            status = _status(base_url, key)
            if status != 200:
                refused.append(status)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    try:
        yield refused
    finally:
        done.set()
        worker.join(15)


def _wait_until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the gateway did not pick up the change"
        time.sleep(0.1)


def _rotate(base_url: str, write: Callable[[list[dict[str, str]]], None], reload: Callable[[], None]) -> None:
    """The procedure of docs/security.md, checked step by step."""
    with closing(Api(base_url, OLD_KEY)) as old:
        stored = old.create({"model": "sim", "input": "made with the old key"})
        with _in_use(base_url, OLD_KEY) as refused_old:
            write(_keys(OLD_KEY, NEW_KEY))  # 1. add the new key next to the old one
            reload()
            _wait_until(lambda: _status(base_url, NEW_KEY) == 200)
        assert refused_old == [], "the old key was refused while the new one was added"
    with closing(Api(base_url, NEW_KEY)) as new:
        # 2. both work; the team's responses are the team's, whichever key made them
        assert _status(base_url, OLD_KEY) == 200
        assert new.get(f"/v1/responses/{stored['id']}")["id"] == stored["id"]
        continued = new.create({"model": "sim", "input": "go on", "previous_response_id": stored["id"]})
        with _in_use(base_url, NEW_KEY) as refused_new:
            write(_keys(NEW_KEY))  # 3. remove the old key once no client uses it
            reload()
            _wait_until(lambda: _status(base_url, OLD_KEY) == 401)
        assert refused_new == [], "the new key was refused while the old one was removed"
        assert new.get(f"/v1/responses/{continued['id']}")["previous_response_id"] == stored["id"]
    gone = httpx.get(f"{base_url}/v1/responses/{stored['id']}", headers={"Authorization": f"Bearer {OLD_KEY}"})
    assert gone.status_code == 401
    validate_error_body(gone.json())


def test_a_key_in_a_team_policy_file_rotates_without_downtime(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    team_file = policies / "rotating.yaml"
    _replace(team_file, {"keys": _keys(OLD_KEY)})
    settings = gateway_settings(f"sqlite:///{tmp_path / 'store.db'}", policies_dir=str(policies))
    with serve(settings) as gateway:
        _rotate(gateway.base_url, lambda keys: _replace(team_file, {"keys": keys}), reload=lambda: None)


def test_a_key_in_the_gateway_file_rotates_without_downtime(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"

    def write(keys: list[dict[str, str]]) -> None:
        scratch = write_gateway_config(tmp_path / "next.yaml", store=f"sqlite:///{tmp_path / 'store.db'}",
                                       teams={"rotating": {"keys": keys}})
        os.replace(scratch, config)

    write(_keys(OLD_KEY))
    with spawn_gateway(config) as gateway:
        _rotate(gateway.base_url, write, reload=lambda: os.kill(gateway.pid, signal.SIGHUP))
