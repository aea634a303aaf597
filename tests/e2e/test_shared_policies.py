"""Two gateway processes sharing one Redis are one gateway to the teams: a rate limit across both
admits what it says, not twice that; a budget spent through one is spent for the other; usage
recorded by either is read through either; a policy file change reaches both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.auth import hash_key
from tests.gateway_process import GatewayProcess, spawn_gateway, unique_redis_prefix, write_gateway_config
from tests.gateway_server import delete_redis_prefix
from tests.spec_validation import validate_error_body, validate_resource

RPM = 10
PRICE = {"input": 10000.0, "output": 10000.0}
"""Per million tokens: any response spends the 0.01 budget."""


def _team(name: str, **rules: Any) -> dict[str, Any]:
    return {"keys": [{"sha256": hash_key(f"sk-{name}"), "name": name}], **rules}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    root = tmp_path_factory.mktemp("replicas")
    policies = root / "policies"
    policies.mkdir()
    (policies / "counted.yaml").write_text(yaml.safe_dump(_team("counted", limits={"key": {"rpm": RPM}})))
    (policies / "thrifty.yaml").write_text(yaml.safe_dump(_team("thrifty", limits={"team": {"daily_budget": 0.01}})))
    prefix = unique_redis_prefix()
    models = {"sim": {"deployments": [{"provider": "sim", "model": "sim-1", "price": PRICE}]}}
    config = write_gateway_config(root / "gateway.yaml", store_prefix=prefix, models=models, policies_dir="policies")
    try:
        with spawn_gateway(config) as first, spawn_gateway(config) as second:
            yield first, second
    finally:
        delete_redis_prefix(prefix)


def _client(replica: GatewayProcess, team: str) -> httpx.Client:
    return httpx.Client(base_url=replica.base_url, headers={"Authorization": f"Bearer sk-{team}"}, timeout=30)


def test_a_rate_limit_counts_requests_through_both_replicas(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    clients = [_client(replica, "counted") for replica in replicas]
    try:
        statuses: list[int] = []
        for index in range(2 * RPM):
            reply = clients[index % 2].post("/v1/responses", json={"model": "sim", "input": f"request {index}"})
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                validate_resource(reply.json())
            else:
                validate_error_body(reply.json())
                assert "rpm" in reply.json()["error"]["message"] and "retry-after" in reply.headers
        assert statuses.count(200) == RPM, statuses
        assert statuses.count(429) == RPM
        assert statuses[:RPM] == [200] * RPM, "the first ten pass, whichever replica took them"
    finally:
        for client in clients:
            client.close()


def test_a_budget_spent_through_one_replica_is_spent_for_the_other(
        replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    first, second = (_client(replica, "thrifty") for replica in replicas)
    try:
        spent = first.post("/v1/responses", json={"model": "sim", "input": "spend it"})
        assert spent.status_code == 200
        refused = second.post("/v1/responses", json={"model": "sim", "input": "and again"})
        assert refused.status_code == 429, refused.text
        validate_error_body(refused.json())
        assert "daily budget" in refused.json()["error"]["message"]
        usage = second.get("/v1/usage").json()
        assert [record["response_id"] for record in usage["data"]] == [spent.json()["id"]]
        assert usage["totals"]["cost"] > 0.01
    finally:
        first.close()
        second.close()


def test_a_policy_change_reaches_both_replicas(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    config = Path(replicas[0].log_path).parent / "policies" / "newcomer.yaml"
    clients = [_client(replica, "newcomer") for replica in replicas]
    try:
        assert [client.get("/v1/models").status_code for client in clients] == [401, 401]
        config.write_text(yaml.safe_dump(_team("newcomer")))
        deadline = time.monotonic() + 15
        while [client.get("/v1/models").status_code for client in clients] != [200, 200]:
            assert time.monotonic() < deadline, "a replica did not reload"
            time.sleep(0.2)
    finally:
        config.unlink(missing_ok=True)
        for client in clients:
            client.close()
