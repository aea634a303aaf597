"""The conformance suite, end to end: every feature against every wire dialect, through the real
gateway and the simulator speaking that dialect. Every reply and event is validated against the
spec; streaming and non-streaming must agree, usage included.

A dialect joins by adding a ``Dialect`` row below (and its simulator module). A feature a
provider cannot honour is listed in ``UNSUPPORTED`` with the 400 it returns instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Api
from tests.gateway_server import RunningGateway, gateway_settings, serve


@dataclass(frozen=True)
class Dialect:
    name: str
    base_url: str = "embedded"
    auth_env: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


DIALECTS = [
    Dialect("openai_responses"),
    Dialect("openai_chat"),
    Dialect("anthropic", extra={"auth": "x-api-key"}),
    Dialect("cohere", base_url="embedded/v2"),
    Dialect("ollama", base_url="embedded/"),  # the simulator's root: Ollama's path is /api/chat
    # The simulator's root: Bedrock's path is /model/{id}/converse. Its model is not Claude, so
    # reasoning.effort is dropped as the catalogue would for such a model.
    Dialect("bedrock", base_url="embedded/", extra={"quirks": {"reasoning_effort": False}}),
    Dialect("gemini", base_url="embedded/v1beta"),
]

UNSUPPORTED: dict[tuple[str, str], str] = {
    # (dialect, feature) -> the error code the gateway answers with instead
    ("cohere", "file"): "unsupported_feature",
    ("ollama", "file"): "unsupported_feature",
    ("ollama", 'tool_choice:"required"'): "unsupported_feature",
    ("ollama", 'tool_choice:{"type": "function", "name": "get_time"}'): "unsupported_feature",
    ("ollama", 'tool_choice:{"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", '
               '"name": "get_time"}]}'): "unsupported_feature",
}

FAULTS = {"400": 400, "401": 502, "404": 400, "429": 429, "500": 502, "503": 503}
"""Upstream status -> what the caller gets (401: the gateway's own credentials are wrong)."""

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"type": "function", "name": "get_time", "description": "Time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PIXEL = "data:image/png;base64," + base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def _provider(dialect: Dialect, **headers: str) -> dict[str, Any]:
    return {"dialect": dialect.name, "base_url": dialect.base_url, "headers": headers,
            "timeouts": {"connect": 2, "first_byte": 5, "idle": 5, "total": 20}, **dialect.extra}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    providers: dict[str, Any] = {}
    for dialect in DIALECTS:
        providers[dialect.name] = _provider(dialect)
        providers[f"{dialect.name}-parallel"] = _provider(dialect, **{"x-sim-parallel": "2"})
        for status in FAULTS:
            providers[f"{dialect.name}-{status}"] = _provider(dialect, **{"x-sim-fault": f"status:{status}"})
    models = {name: {"deployments": [{"provider": name, "model": "sim-model"}]} for name in providers}
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with serve(gateway_settings(url, providers=providers, models=models,
                                retry={"attempts": 1, "backoff_base": 0.01, "backoff_max": 0.05})) as gateway:
        yield gateway


every_dialect = pytest.mark.parametrize("dialect", [d.name for d in DIALECTS])


def _text(resource: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in resource["output"] if item["type"] == "message"
                   for part in item["content"])


def _skip_unsupported(api: Api, dialect: str, feature: str, body: dict[str, Any]) -> bool:
    code = UNSUPPORTED.get((dialect, feature))
    if code is None:
        return False
    error = api.create({"model": dialect, **body}, expect=400)
    assert error["error"]["code"] == code
    return True


def _both(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """Non-streaming and streaming replies for the same request: same items, same usage."""
    whole = api.create(body)
    events = api.stream(body)
    final = events[-1]["response"]

    def shape(resource: dict[str, Any]) -> list[Any]:
        return [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in resource["output"]]

    assert shape(final) == shape(whole)
    assert final["usage"] == whole["usage"]
    assert final["status"] == whole["status"]
    return whole


@every_dialect
def test_text(api: Api, dialect: str) -> None:
    reply = _both(api, {"model": dialect, "input": "Hello there"})
    assert _text(reply) == "Echo: Hello there"
    usage = reply["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@every_dialect
def test_system_and_developer_messages(api: Api, dialect: str) -> None:
    reply = _both(api, {"model": dialect, "instructions": "Be brief.", "input": [
        {"role": "system", "content": "You are a test."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Say hi"}]})
    assert _text(reply) == "Echo: Say hi"


@every_dialect
def test_multi_turn(api: Api, dialect: str) -> None:
    first = api.create({"model": dialect, "input": "first"})
    second = api.create({"model": dialect, "input": "second", "previous_response_id": first["id"]})
    assert _text(second) == "Echo: second"
    replayed = api.create({"model": dialect, "input": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "Echo: one"},
        {"role": "user", "content": "two"}]})
    assert _text(replayed) == "Echo: two"


@every_dialect
def test_image_and_file_input(api: Api, dialect: str) -> None:
    body = {"model": dialect, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "describe"}, {"type": "input_image", "image_url": PIXEL}]}]}
    if _skip_unsupported(api, dialect, "image", body):
        return
    assert _text(_both(api, body)) == "Echo: describe"
    pdf = {"type": "input_file", "filename": "a.pdf",
           "file_data": "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 tiny").decode()}
    body = {"model": dialect, "input": [{"role": "user", "content": [{"type": "input_text", "text": "read"}, pdf]}]}
    if _skip_unsupported(api, dialect, "file", body):
        return
    assert _text(api.create(body)) == "Echo: read"


@every_dialect
def test_function_tool_round_trip(api: Api, dialect: str) -> None:
    first = _both(api, {"model": dialect, "input": "Weather in Oslo", "tools": [WEATHER]})
    call = first["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    second = _both(api, {"model": dialect, "tools": [WEATHER], "input": [
        {"role": "user", "content": "Weather in Oslo"}, call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "rainy"}]})
    assert _text(second) == "Tool said: rainy"


@every_dialect
def test_parallel_calls(api: Api, dialect: str) -> None:
    reply = _both(api, {"model": f"{dialect}-parallel", "input": "Weather and time in Rome",
                        "tools": [WEATHER, TIME]})
    calls = [item for item in reply["output"] if item["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert len({c["call_id"] for c in calls}) == 2
    outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": c["name"]} for c in calls]
    follow = api.create({"model": dialect, "tools": [WEATHER, TIME],
                         "input": [{"role": "user", "content": "Weather and time in Rome"}, *calls, *outputs]})
    assert _text(follow) == "Tool said: get_weather; get_time"


@every_dialect
@pytest.mark.parametrize(("choice", "expect"), [
    ("none", None), ("auto", "get_weather"), ("required", "get_weather"),
    ({"type": "function", "name": "get_time"}, "get_time"),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}, "get_time"),
])
def test_tool_choice(api: Api, dialect: str, choice: Any, expect: str | None) -> None:
    body = {"model": dialect, "input": "Rome", "tools": [WEATHER, TIME], "tool_choice": choice}
    if _skip_unsupported(api, dialect, f"tool_choice:{json.dumps(choice)}", body):
        return
    reply = _both(api, body)
    calls = [item["name"] for item in reply["output"] if item["type"] == "function_call"]
    assert calls == ([expect] if expect else [])


@every_dialect
def test_json_schema_output(api: Api, dialect: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
              "required": ["city", "temp"], "additionalProperties": False}
    reply = _both(api, {"model": dialect, "input": "Oslo weather as JSON",
                        "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema,
                                            "strict": True}}})
    assert json.loads(_text(reply)) == {"city": "JSON", "temp": 1}
    assert reply["text"]["format"]["type"] == "json_schema"


@every_dialect
def test_max_output_tokens_gives_incomplete(api: Api, dialect: str) -> None:
    reply = _both(api, {"model": dialect, "input": " ".join(["word"] * 60), "max_output_tokens": 16})
    assert reply["status"] == "incomplete"
    assert reply["incomplete_details"] == {"reason": "max_output_tokens"}
    assert reply["usage"]["output_tokens"] <= 16


@every_dialect
@pytest.mark.parametrize("status", list(FAULTS))
def test_upstream_errors(api: Api, dialect: str, status: str) -> None:
    for stream in (False, True):
        reply = api.http.post("/v1/responses", json={"model": f"{dialect}-{status}", "input": "x", "stream": stream})
        assert reply.status_code == FAULTS[status], reply.text
        error = reply.json()["error"]
        assert error["message"] and error["type"]
        assert reply.headers["x-should-retry"] == ("true" if FAULTS[status] in (429, 502, 503) and status != "401"
                                                   else "false")


REASONING_ON_THE_WIRE = {
    "openai_responses": lambda body: body["reasoning"]["effort"] == "medium",
    "openai_chat": lambda body: body["reasoning_effort"] == "medium",
    "anthropic": lambda body: body["thinking"]["type"] == "enabled" and body["thinking"]["budget_tokens"] >= 1024,
    "gemini": lambda body: body["generationConfig"]["thinkingConfig"]["thinkingBudget"] > 0,
    # The simulator's Bedrock model is not Claude: its deployment drops reasoning.effort.
    "bedrock": lambda body: "additionalModelRequestFields" not in body,
    "cohere": lambda body: body["thinking"]["type"] == "enabled",
    "ollama": lambda body: body["think"] is True,
}


@every_dialect
def test_reasoning_effort_reaches_the_provider(api: Api, dialect: str, upstream_log: Any) -> None:
    reply = _both(api, {"model": dialect, "input": "Think first", "reasoning": {"effort": "medium"},
                        "max_output_tokens": 4096})
    assert _text(reply) == "Echo: Think first"
    assert reply["reasoning"]["effort"] == "medium"
    sent = upstream_log()[-1]["body"]
    assert REASONING_ON_THE_WIRE[dialect](sent), sent
