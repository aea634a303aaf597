"""Shared fixtures: a running gateway per store backend, raw HTTP helpers that validate every
body and event against the spec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.gateway_server import (
    TEAM_A_KEY,
    TEAM_B_KEY,
    RunningGateway,
    serve_backend,
)
from tests.security.leak_scan import LeakScan
from tests.spec_validation import parse_sse, validate_error_body, validate_resource, validate_stream

LEAK_SCAN = LeakScan()
"""Fails the run when a test secret shows up in logs, error bodies, spans, metrics or stores."""


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(LEAK_SCAN, "interlock-leak-scan")


@pytest.fixture(scope="session", autouse=True)
def _leak_scan_temp_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    LEAK_SCAN.temp_root = tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """The real gateway on a loopback socket, once per store backend (Redis for real)."""
    with serve_backend(request.param, tmp_path_factory.mktemp("store")) as gateway:
        yield gateway


class Api:
    """Raw HTTP to the gateway; every reply is checked against the spec before a test sees it."""

    def __init__(self, base_url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30,
                                 event_hooks={"response": [LEAK_SCAN.record_reply]})

    def create(self, body: dict[str, Any], *, expect: int = 200, **kw: Any) -> dict[str, Any]:
        reply = self.http.post("/v1/responses", json=body, **kw)
        assert reply.headers.get("x-request-id", "").startswith("req_")
        assert reply.status_code == expect, reply.text
        data = reply.json()
        if expect == 200:
            validate_resource(data)
        else:
            validate_error_body(data)
        return data

    def stream(self, body: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
        reply = self.http.post("/v1/responses", json={**body, "stream": True}, **kw)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("text/event-stream")
        events, saw_done = parse_sse(reply.text)
        assert saw_done, "stream did not end with data: [DONE]"
        validate_stream(events)
        return events

    def get(self, path: str, *, expect: int = 200, **kw: Any) -> dict[str, Any]:
        reply = self.http.get(path, **kw)
        assert reply.status_code == expect, reply.text
        data = reply.json()
        if expect >= 400:
            validate_error_body(data)
        return data

    def delete(self, path: str, *, expect: int = 200) -> dict[str, Any]:
        reply = self.http.delete(path)
        assert reply.status_code == expect, reply.text
        data = reply.json()
        if expect >= 400:
            validate_error_body(data)
        return data

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def api(running: RunningGateway) -> Iterator[Api]:
    client = Api(running.base_url, TEAM_A_KEY)
    yield client
    client.close()


@pytest.fixture
def api_b(running: RunningGateway) -> Iterator[Api]:
    client = Api(running.base_url, TEAM_B_KEY)
    yield client
    client.close()


@pytest.fixture
def simulator_url(running: RunningGateway) -> str:
    url = running.gateway.simulator_url
    assert url is not None, "the test gateway runs the embedded simulator"
    return url


@pytest.fixture
def upstream_log(simulator_url: str) -> Iterator[Any]:
    """What the simulator received, oldest first; cleared before the test."""
    httpx.delete(simulator_url + "/_sim/requests")

    def read() -> list[dict[str, Any]]:
        return httpx.get(simulator_url + "/_sim/requests").json()

    yield read
