"""What clients see when upstreams fail: retries before the first byte, fallback to the next
deployment, well-formed errors with retry hints, and streams that always end with a terminal event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Api
from tests.gateway_server import RunningGateway, gateway_settings, serve
from tests.spec_validation import parse_sse, validate_error_body, validate_stream


def _provider(dialect: str = "openai_responses", **headers: str) -> dict[str, Any]:
    return {"dialect": dialect, "base_url": "embedded", "headers": headers,
            "timeouts": {"connect": 1, "first_byte": 2, "idle": 0.5, "total": 10}}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    providers = {
        "sim": _provider(),
        "sim-chat": _provider("openai_chat"),
        "down": _provider(**{"x-sim-fault": "status:503"}),
        "limited": _provider(**{"x-sim-fault": "status:429"}),
        "refusing": _provider(**{"x-sim-fault": "status:400"}),
        "flaky": _provider(**{"x-sim-fault": "status:500", "x-sim-fail-times": "1", "x-sim-fault-key": "flaky"}),
        "reset": _provider(**{"x-sim-fault": "reset"}),
        "cut": _provider(**{"x-sim-fault": "reset-after-first-byte"}),
        "cut-chat": _provider("openai_chat", **{"x-sim-fault": "reset-after-first-byte"}),
        "stalls": _provider(**{"x-sim-fault": "stall-mid-stream"}),
        "silent": _provider(**{"x-sim-fault": "stall"}),
        "garbled": _provider(**{"x-sim-fault": "malformed"}),
        "trickle": _provider(**{"x-sim-fault": "trickle", "x-sim-trickle-delay-ms": "0"}),
    }
    models = {name: {"deployments": [{"provider": name, "model": "sim-1"}]} for name in providers}
    models["fallback"] = {"deployments": [{"provider": "down", "model": "a"}, {"provider": "reset", "model": "b"},
                                          {"provider": "sim", "model": "c"}]}
    models["no-fallback-on-400"] = {"deployments": [{"provider": "refusing", "model": "a"},
                                                    {"provider": "sim", "model": "b"}]}
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with serve(gateway_settings(url, providers=providers, models=models)) as gateway:
        yield gateway


def _post(api: Api, body: dict[str, Any]) -> Any:
    return api.http.post("/v1/responses", json=body)


def test_falls_back_to_the_next_deployment(api: Api, upstream_log: Any) -> None:
    body = api.create({"model": "fallback", "input": "still here?"})
    assert body["output"][0]["content"][0]["text"] == "Echo: still here?"
    models = [r["body"]["model"] for r in upstream_log()]
    assert models == ["a", "a", "b", "b", "c"], "two tries per deployment, then the next one"


def test_retries_before_the_first_byte(api: Api, upstream_log: Any) -> None:
    events = api.stream({"model": "flaky", "input": "again"})
    assert events[-1]["type"] == "response.completed"
    assert len(upstream_log()) == 2


def test_client_errors_are_not_retried_nor_rerouted(api: Api, upstream_log: Any) -> None:
    reply = _post(api, {"model": "no-fallback-on-400", "input": "x"})
    assert reply.status_code == 400
    validate_error_body(reply.json())
    assert len(upstream_log()) == 1


def test_unavailable_upstream_gives_503_with_retry_hint(api: Api) -> None:
    reply = _post(api, {"model": "down", "input": "x"})
    assert reply.status_code == 503
    validate_error_body(reply.json())
    assert reply.headers["x-should-retry"] == "true"
    assert reply.json()["error"]["type"] == "service_unavailable"


def test_rate_limited_upstream_gives_429_with_retry_after(api: Api) -> None:
    reply = _post(api, {"model": "limited", "input": "x", "stream": True})
    assert reply.status_code == 429, reply.text
    validate_error_body(reply.json())
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["x-should-retry"] == "true"


def test_connection_reset_before_reply(api: Api) -> None:
    reply = _post(api, {"model": "reset", "input": "x"})
    assert reply.status_code == 502
    validate_error_body(reply.json())


def test_silent_upstream_times_out(api: Api) -> None:
    reply = _post(api, {"model": "silent", "input": "x"})
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize("model", ["cut", "cut-chat", "stalls", "garbled"])
def test_stream_failing_after_first_byte_ends_with_error_and_failed(api: Api, model: str) -> None:
    reply = _post(api, {"model": model, "input": "a somewhat longer question for the stream", "stream": True})
    assert reply.status_code == 200
    events, saw_done = parse_sse(reply.text)
    assert saw_done
    validate_stream(events)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    stored = api.get(f"/v1/responses/{failed['id']}")
    assert stored["status"] == "failed"


@pytest.mark.parametrize("model", ["cut", "garbled"])
def test_non_stream_failure_after_first_byte_is_an_error(api: Api, model: str) -> None:
    reply = _post(api, {"model": model, "input": "x"})
    assert reply.status_code in (502, 504), reply.text
    validate_error_body(reply.json())


def test_trickled_reply_is_reassembled(api: Api) -> None:
    events = api.stream({"model": "trickle", "input": "one byte at a time"})
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Echo: one byte at a time"
