"""``truncation`` on the live path: an input over the deployment's context window is refused
before any upstream call, or (``auto``) sent without its oldest turns; a deployment with a larger
window is tried before refusing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Api
from tests.gateway_server import RunningGateway, gateway_settings, serve

WINDOW = 200
"""Tokens: the small deployment's window. Each turn below is about 60."""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    models = {
        "small": {"deployments": [{"provider": "sim", "model": "small", "context_window": WINDOW}]},
        "small-then-large": {"deployments": [{"provider": "sim", "model": "small", "context_window": WINDOW},
                                             {"provider": "sim", "model": "large", "context_window": 100_000}]},
    }
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with serve(gateway_settings(url, models=models)) as gateway:
        yield gateway


def _conversation(turns: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for turn in range(turns):
        items.append({"role": "user", "content": f"question {turn} " + "words " * 36})
        items.append({"type": "function_call", "call_id": f"call_{turn}", "name": "lookup", "arguments": "{}"})
        items.append({"type": "function_call_output", "call_id": f"call_{turn}", "output": "fine"})
    items.append({"role": "user", "content": "and now?"})
    return items


def test_an_input_over_the_window_is_refused_before_any_upstream_call(api: Api, upstream_log: Any) -> None:
    error = api.create({"model": "small", "input": _conversation(6)}, expect=400)
    assert error["error"]["code"] == "context_length_exceeded" and error["error"]["param"] == "input"
    assert upstream_log() == []


def test_auto_drops_the_oldest_turns_and_keeps_calls_with_their_outputs(api: Api, upstream_log: Any) -> None:
    body = api.create({"model": "small", "input": _conversation(6), "truncation": "auto"})
    assert body["status"] == "completed" and body["truncation"] == "auto"
    sent = upstream_log()[0]["body"]["input"]
    assert sent[0]["role"] == "system" and sent[-1]["content"] == "and now?"
    assert len(sent) < len(_conversation(6))
    calls = {item["call_id"] for item in sent if item.get("type") == "function_call"}
    outputs = {item["call_id"] for item in sent if item.get("type") == "function_call_output"}
    assert calls == outputs and calls, "calls and their outputs are dropped together"
    assert "call_5" in calls and "call_0" not in calls, "the oldest go first"


def test_a_larger_window_is_tried_before_refusing(api: Api, upstream_log: Any) -> None:
    reply = api.http.post("/v1/responses", json={"model": "small-then-large", "input": _conversation(6)})
    assert reply.status_code == 200 and reply.headers["x-interlock-deployment"].endswith("sim/large")
    assert [entry["body"]["model"] for entry in upstream_log()] == ["large"]
