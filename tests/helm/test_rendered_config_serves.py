"""The files the chart renders run the real gateway: the Deployment's probe paths answer, and a
team whose key lives in the policies ConfigMap is served, its responses stored in Redis (the local
one standing in for an external Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from proxy.auth import hash_key
from proxy.settings import load_settings
from tests.conftest import Api
from tests.gateway_server import TEAM_A_KEY, RunningGateway, delete_redis_prefix, serve
from tests.helm.chart import Rendered, render, write_mounts

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def release() -> Rendered:
    prefix = f"interlock-helm-{uuid.uuid4().hex[:12]}:"
    return render({
        "redis": {"mode": "external", "external": {"storeUrl": "redis://127.0.0.1:6379/0"}},
        "config": {"store_prefix": prefix},
        "policies": {"team-a": {"keys": [{"sha256": hash_key(TEAM_A_KEY), "name": "a"}], "models": ["sim"]}},
    })  # fmt: skip


@pytest.fixture(scope="module")
def served(release: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway_file = write_mounts(release, tmp_path_factory.mktemp("etc-interlock"))
    settings = load_settings(gateway_file)
    # serve() knows no config path, against which the pod resolves policies_dir: make it absolute
    assert settings.policies_dir is not None
    policies = gateway_file.parent / settings.policies_dir
    assert policies.is_dir()
    settings = msgspec.structs.replace(settings, policies_dir=str(policies))
    try:
        with serve(settings) as gateway:
            yield gateway
    finally:
        delete_redis_prefix(settings.store_prefix)


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_probe_paths_answer(release: Rendered, served: RunningGateway, probe: str) -> None:
    check = release.container[probe]["httpGet"]
    assert check["port"] == "http"
    reply = httpx.get(served.base_url + check["path"])
    assert reply.status_code == 200, reply.text


def test_requests_are_served_and_stored(served: RunningGateway) -> None:
    api = Api(served.base_url, TEAM_A_KEY)
    try:
        created = api.create({"model": "sim", "input": "Hello, cluster"})
        assert created["status"] == "completed"
        assert api.get(f"/v1/responses/{created['id']}")["id"] == created["id"]
        events = api.stream({"model": "sim", "input": "Hello again"})
        assert events[-1]["type"] == "response.completed"
    finally:
        api.close()
