"""Team policies on the live request path: service tiers, caps, limits and budgets, storing,
circuit breaking, usage, explain and reload — through real HTTP, on both store backends (SQLite
keeps limits in the process; Redis shares them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.auth import hash_key
from tests.conftest import Api
from tests.gateway_server import RunningGateway, gateway_settings, serve_backend
from tests.spec_validation import parse_sse, validate_error_body, validate_stream

ADMIN_KEY = "sk-test-admin"
PRICE = {"input": 10000.0, "output": 10000.0}
"""Per million tokens: a hundredth of a unit a token, so any response spends the 0.01 budget."""


def _team(name: str, **rules: Any) -> dict[str, Any]:
    return {"keys": [{"sha256": hash_key(f"sk-{name}"), "name": name[:1]}], **rules}


TEAMS: dict[str, dict[str, Any]] = {
    "open": _team("open", models=["*"], service_tier={"max": "priority"}),
    "flexer": _team("flexer", service_tier={"default": "flex"}),
    "capped": _team("capped", service_tier={"max": "default"}),
    "strict": _team("strict", service_tier={"max": "default", "above_max": "reject"}),
    "metered": _team("metered", limits={"key": {"rpm": 3}}),
    "thrifty": _team("thrifty", limits={"team": {"daily_budget": 0.01}}),
    "nostore": _team("nostore", store=False),
    "narrow": _team("narrow", models=["tiered"], providers={"deny": ["sim-chat"]}),
}


def _provider(dialect: str = "openai_responses", first_byte: float = 2, **headers: str) -> dict[str, Any]:
    return {"dialect": dialect, "base_url": "embedded", "headers": headers,
            "timeouts": {"connect": 1, "first_byte": first_byte, "idle": 1, "total": 10}}


def _settings(url: str, prefix: str, policies: Path) -> Any:
    providers = {"sim": _provider(), "sim-chat": _provider("openai_chat"),
                 "down": _provider(**{"x-sim-fault": "status:503"}),
                 "limited": _provider(**{"x-sim-fault": "status:429"}),
                 "busy-once": _provider(**{"x-sim-fault": "status:429", "x-sim-fail-times": "1",
                                           "x-sim-fault-key": "busy-once"}),
                 "silent": _provider(first_byte=0.3, **{"x-sim-fault": "stall"}),
                 "slow": _provider(**{"x-sim-token-delay-ms": "100"})}
    models = {
        "tiered": {"deployments": [
            {"provider": "sim", "model": "prio-1", "tiers": ["default", "priority"],
             "native_tiers": {"priority": "priority"}, "price": PRICE},
            {"provider": "sim", "model": "flex-1", "tiers": ["flex"], "native_tiers": {"flex": "flex"},
             "price": {"input": 1.0, "output": 1.0}},
            {"provider": "sim-chat", "model": "std-1"},
        ]},
        "prio-or-default": {"deployments": [
            {"provider": "down", "model": "prio-down", "tiers": ["priority"], "native_tiers": {"priority": "priority"}},
            {"provider": "sim", "model": "flex-only", "tiers": ["flex"]},
            {"provider": "sim-chat", "model": "std"},
        ]},
        "breaker": {"deployments": [{"provider": "down", "model": "broken"}, {"provider": "sim", "model": "whole"}]},
        "priced": {"deployments": [{"provider": "sim", "model": "p", "price": PRICE}]},
        "limited-then-ok": {"deployments": [{"provider": "limited", "model": "busy"},
                                            {"provider": "sim", "model": "ok"}]},
        "silent-then-ok": {"deployments": [{"provider": "silent", "model": "mute"},
                                           {"provider": "sim", "model": "ok"}]},
        "slow": {"deployments": [{"provider": "slow", "model": "slow"}]},
        "flex-waits": {"deployments": [{"provider": "busy-once", "model": "later", "tiers": ["flex"]},
                                       {"provider": "sim", "model": "other"}]},
    }
    return gateway_settings(url, store_prefix=prefix, providers=providers, models=models, teams={},
                            policies_dir=str(policies), circuit={"failures": 2, "cooldown_s": 60},
                            admin_keys=[{"sha256": hash_key(ADMIN_KEY), "name": "ops"}])


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    policies = tmp_path_factory.mktemp("policies")
    for team, document in TEAMS.items():
        (policies / f"{team}.yaml").write_text(yaml.safe_dump(document))
    with serve_backend(request.param, tmp_path_factory.mktemp("store"),
                       lambda url, prefix: _settings(url, prefix, policies)) as gateway:
        yield gateway


@pytest.fixture
def policies_dir(running: RunningGateway) -> Path:
    directory = running.settings.policies_dir
    assert directory is not None
    return Path(directory)


@pytest.fixture
def as_team(running: RunningGateway) -> Iterator[Any]:
    clients: list[Api] = []

    def make(team: str) -> Api:
        client = Api(running.base_url, f"sk-{team}")
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _sent(upstream_log: Any) -> list[tuple[str, str | None]]:
    """(model, service_tier) of each upstream request, oldest first."""
    return [(entry["body"]["model"], entry["body"].get("service_tier")) for entry in upstream_log()]


# -- service_tier -----------------------------------------------------------------------------

def test_priority_asks_the_native_priority_tier_and_reports_it(as_team: Any, upstream_log: Any) -> None:
    reply = as_team("open").http.post("/v1/responses", json={"model": "tiered", "input": "hi",
                                                              "service_tier": "priority"})
    assert reply.status_code == 200
    assert reply.json()["service_tier"] == "priority"
    assert _sent(upstream_log) == [("prio-1", "priority")]
    assert reply.headers["x-interlock-deployment"] == "tiered#0:sim/prio-1"
    assert reply.headers["x-interlock-attempts"] == "1"
    assert float(reply.headers["x-interlock-overhead-ms"]) >= 0


def test_flex_prefers_the_flex_deployment(as_team: Any, upstream_log: Any) -> None:
    body = as_team("open").create({"model": "tiered", "input": "hi", "service_tier": "flex"})
    assert body["service_tier"] == "flex"
    assert _sent(upstream_log) == [("flex-1", "flex")]


def test_default_never_reaches_a_flex_deployment_nor_asks_a_tier(as_team: Any, upstream_log: Any) -> None:
    body = as_team("open").create({"model": "tiered", "input": "hi", "service_tier": "default"})
    assert body["service_tier"] == "default"
    assert _sent(upstream_log) == [("prio-1", None)]


def test_auto_means_the_teams_default(as_team: Any, upstream_log: Any) -> None:
    body = as_team("flexer").create({"model": "tiered", "input": "hi", "service_tier": "auto"})
    assert body["service_tier"] == "flex"
    assert _sent(upstream_log) == [("flex-1", "flex")]


def test_priority_falls_back_to_default_never_to_flex(as_team: Any, upstream_log: Any) -> None:
    events = as_team("open").stream({"model": "prio-or-default", "input": "hi", "service_tier": "priority"})
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["service_tier"] == "default"
    sent = _sent(upstream_log)
    assert ("flex-only", None) not in sent
    assert sent[-1] == ("std", None)
    assert sent[0] == ("prio-down", "priority")


def test_asking_above_the_cap_is_served_at_the_cap(as_team: Any, upstream_log: Any) -> None:
    body = as_team("capped").create({"model": "tiered", "input": "hi", "service_tier": "priority"})
    assert body["service_tier"] == "default"
    assert _sent(upstream_log) == [("prio-1", None)]


def test_asking_above_the_cap_is_refused_when_the_policy_says_so(as_team: Any, upstream_log: Any) -> None:
    error = as_team("strict").create({"model": "tiered", "input": "hi", "service_tier": "priority"}, expect=403)
    assert error["error"]["code"] == "service_tier_not_allowed"
    assert error["error"]["param"] == "service_tier"
    assert upstream_log() == []


# -- limits, budgets, usage ---------------------------------------------------------------------

def test_rpm_limit_answers_429_naming_the_limit_with_retry_after(as_team: Any, upstream_log: Any) -> None:
    api = as_team("metered")
    remaining = []
    for _ in range(3):
        reply = api.http.post("/v1/responses", json={"model": "tiered", "input": "hi"})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(reply.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    refused = api.http.post("/v1/responses", json={"model": "tiered", "input": "hi", "stream": True})
    assert refused.status_code == 429
    validate_error_body(refused.json())
    assert "key 'm' rpm" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert len(upstream_log()) == 3, "a refused request never reaches the upstream"


def test_budget_is_enforced_after_it_is_spent(as_team: Any) -> None:
    api = as_team("thrifty")
    first = api.create({"model": "priced", "input": "spend a little"})
    usage = first["usage"]
    assert (usage["input_tokens"] + usage["output_tokens"]) * PRICE["input"] / 1e6 > 0.01
    error = api.create({"model": "priced", "input": "and more"}, expect=429)
    assert "daily budget" in error["error"]["message"]


def test_usage_records_every_response_for_its_own_team_only(as_team: Any, running: RunningGateway) -> None:
    api = as_team("open")
    plain = api.create({"model": "priced", "input": "count me"})
    events = api.stream({"model": "priced", "input": "count me too"})
    streamed = events[-1]["response"]
    page = api.get("/v1/usage")
    assert page["team"] == "open"
    records = {record["response_id"]: record for record in page["data"]}
    for response in (plain, streamed):
        record = records[response["id"]]
        assert record["input_tokens"] == response["usage"]["input_tokens"]
        assert record["output_tokens"] == response["usage"]["output_tokens"]
        assert record["deployment"] == "priced#0:sim/p" and record["tier"] == "default" and record["key"] == "o"
        expected = (response["usage"]["input_tokens"] + response["usage"]["output_tokens"]) * PRICE["input"] / 1e6
        assert record["cost"] == pytest.approx(expected)
    assert page["totals"]["requests"] == len(page["data"])
    assert api.get("/v1/usage", params={"team": "thrifty"}, expect=404)["error"]["code"] == "unknown_team"
    admin = Api(running.base_url, ADMIN_KEY)
    try:
        seen = admin.get("/v1/usage", params={"team": "open"})
        assert {r["response_id"] for r in seen["data"]} >= {plain["id"], streamed["id"]}
        assert admin.get("/v1/usage", expect=400)["error"]["param"] == "team"
        assert admin.create({"model": "priced", "input": "hi"}, expect=401)["error"]["code"] == "invalid_api_key"
    finally:
        admin.close()


def test_a_policy_that_forbids_storing(as_team: Any) -> None:
    api = as_team("nostore")
    error = api.create({"model": "tiered", "input": "hi", "store": True}, expect=403)
    assert error["error"]["code"] == "store_not_allowed"
    body = api.create({"model": "tiered", "input": "hi"})
    assert body["store"] is False
    api.get(f"/v1/responses/{body['id']}", expect=404)


def test_models_lists_what_the_policy_allows(as_team: Any) -> None:
    assert [model["id"] for model in as_team("narrow").get("/v1/models")["data"]] == ["tiered"]
    as_team("narrow").get("/v1/models/priced", expect=404)
    assert "priced" in {model["id"] for model in as_team("open").get("/v1/models")["data"]}


# -- retries and fallback --------------------------------------------------------------------------

def test_a_429_with_a_long_retry_after_falls_back_at_once(as_team: Any, upstream_log: Any) -> None:
    reply = as_team("open").http.post("/v1/responses", json={"model": "limited-then-ok", "input": "hi"})
    assert reply.status_code == 200 and reply.headers["x-interlock-attempts"] == "2"
    assert [model for model, _ in _sent(upstream_log)] == ["busy", "ok"]


def test_a_timeout_before_the_first_byte_is_retried_then_falls_back(as_team: Any, upstream_log: Any) -> None:
    events = as_team("open").stream({"model": "silent-then-ok", "input": "hi"})
    assert events[-1]["type"] == "response.completed"
    assert [model for model, _ in _sent(upstream_log)] == ["mute", "mute", "ok"]


def test_flex_waits_for_capacity_instead_of_failing_fast(as_team: Any, upstream_log: Any) -> None:
    started = time.monotonic()
    reply = as_team("open").http.post("/v1/responses", json={"model": "flex-waits", "input": "hi",
                                                              "service_tier": "flex"})
    assert reply.status_code == 200 and reply.headers["x-interlock-attempts"] == "2"
    assert [model for model, _ in _sent(upstream_log)] == ["later", "later"], "the retry-after was waited out"
    assert time.monotonic() - started >= 1.0
    assert reply.json()["service_tier"] == "flex"


# -- circuits ------------------------------------------------------------------------------------

def test_an_open_circuit_skips_the_failing_deployment(as_team: Any, upstream_log: Any) -> None:
    api = as_team("open")
    first = api.http.post("/v1/responses", json={"model": "breaker", "input": "hi"})
    assert first.status_code == 200 and first.headers["x-interlock-attempts"] == "3"
    assert [model for model, _ in _sent(upstream_log)] == ["broken", "broken", "whole"]
    deadline = time.monotonic() + 5
    while True:  # the circuit opened after two failures; other replicas see it within a refresh
        upstream_log_before = len(upstream_log())
        second = api.http.post("/v1/responses", json={"model": "breaker", "input": "hi"})
        assert second.status_code == 200
        if second.headers["x-interlock-attempts"] == "1":
            break
        assert time.monotonic() < deadline, "the circuit never opened"
    assert upstream_log()[upstream_log_before]["body"]["model"] == "whole"


# -- explain --------------------------------------------------------------------------------------

def test_explain_needs_an_admin_key(as_team: Any, running: RunningGateway) -> None:
    body = {"team": "open", "request": {"model": "tiered", "input": "hi"}}
    reply = as_team("open").http.post("/v1/policy/explain", json=body)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "admin_key_required"
    assert httpx.post(running.base_url + "/v1/policy/explain", json=body).status_code == 401


def test_explain_gives_candidates_and_every_exclusion(running: RunningGateway) -> None:
    admin = Api(running.base_url, ADMIN_KEY)
    try:
        reply = admin.http.post("/v1/policy/explain", json={
            "team": "narrow", "key": "n", "request": {"model": "tiered", "input": "hi", "service_tier": "flex"}})
        assert reply.status_code == 200, reply.text
        result = reply.json()
        assert result["refused"] is None and result["tier"] == "flex"
        assert [c["deployment"] for c in result["candidates"]] == ["tiered#1:sim/flex-1", "tiered#0:sim/prio-1"]
        reasons = {entry["deployment"]: {r["code"] for r in entry["reasons"]} for entry in result["considered"]}
        assert "provider_denied" in reasons["tiered#2:sim-chat/std-1"]
        refused = admin.http.post("/v1/policy/explain", json={
            "team": "narrow", "request": {"model": "priced", "input": "hi"}}).json()
        assert refused["refused"]["status"] == 403 and refused["refused"]["code"] == "model_not_allowed"
        bad = admin.http.post("/v1/policy/explain", json={"team": "narrow"})
        assert bad.status_code == 400
        validate_error_body(bad.json())
    finally:
        admin.close()


# -- reload ----------------------------------------------------------------------------------------

def _wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the gateway did not pick up the change"
        time.sleep(0.2)


def test_policy_files_reload_and_an_invalid_one_changes_nothing(running: RunningGateway, policies_dir: Path) -> None:
    path = policies_dir / "late.yaml"
    http = httpx.Client(base_url=running.base_url, headers={"Authorization": "Bearer sk-late"}, timeout=10)
    try:
        assert http.get("/v1/models").status_code == 401
        path.write_text(yaml.safe_dump(_team("late", models=["priced"])))
        _wait_for(lambda: http.get("/v1/models").status_code == 200)
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["priced"]

        path.write_text("models: [priced\nkeys: {")  # broken YAML: refused, the old policy stays
        time.sleep(3)
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["priced"]
        assert http.post("/v1/responses", json={"model": "priced", "input": "still served"}).status_code == 200

        path.write_text(yaml.safe_dump(_team("late", models=["priced", "tiered"], store="yes")))  # wrong type
        time.sleep(3)
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["priced"]

        path.write_text(yaml.safe_dump(_team("late", models=["priced", "tiered"])))
        _wait_for(lambda: len(http.get("/v1/models").json()["data"]) == 2)
    finally:
        path.unlink(missing_ok=True)
        http.close()


def test_a_reload_never_disturbs_a_request_in_flight(running: RunningGateway, policies_dir: Path) -> None:
    path = policies_dir / "leaving.yaml"
    path.write_text(yaml.safe_dump(_team("leaving")))
    http = httpx.Client(base_url=running.base_url, headers={"Authorization": "Bearer sk-leaving"}, timeout=30)
    try:
        _wait_for(lambda: http.get("/v1/models").status_code == 200)
        with http.stream("POST", "/v1/responses", json={"model": "slow", "input": "take your time " * 20,
                                                         "stream": True}) as reply:
            assert reply.status_code == 200
            chunks = reply.iter_text()
            received = next(chunks)
            path.unlink()  # the team and its key go away while its response streams
            _wait_for(lambda: http.get("/v1/models").status_code == 401)
            received += "".join(chunks)
        events, done = parse_sse(received)
        assert done and events[-1]["type"] == "response.completed"
        validate_stream(events)
    finally:
        path.unlink(missing_ok=True)
        http.close()
