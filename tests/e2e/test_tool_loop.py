"""Server-side tools: the gateway runs registered tools in its sandbox between model turns."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.conftest import Api
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve

CALCULATOR = {"name": "calculator", "description": "Evaluate arithmetic.", "kind": "python",
              "target": "tools.builtin.calculator:evaluate",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"], "additionalProperties": False}}
CLOCK = {"name": "clock", "description": "The time.", "kind": "python", "target": "tools.builtin.clock:now",
         "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}
LINGER = {"name": "linger", "description": "Runs for a while.", "kind": "command", "timeout_s": 30,
          "target": ["/bin/sleep", "8.25"],
          "parameters": {"type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]}}
SLOW = {"name": "slow", "description": "Takes too long.", "kind": "command", "timeout_s": 0.5,
        "target": ["/bin/sleep", "30"],
        "parameters": {"type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]}}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather (client side)",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ENABLE_CALCULATOR = {"type": "function", "name": "calculator"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    providers = {"sim": {"dialect": "openai_responses", "base_url": "embedded"},
                 "sim-chat": {"dialect": "openai_chat", "base_url": "embedded"},
                 "sim-par": {"dialect": "openai_responses", "base_url": "embedded", "headers": {"x-sim-parallel": "2"}}}
    models = {name: {"deployments": [{"provider": name, "model": "sim-1"}]} for name in providers}
    settings = gateway_settings(f"sqlite:///{tmp_path_factory.mktemp('store') / 's.db'}", providers=providers,
                                models=models, tools=[CALCULATOR, CLOCK, SLOW, LINGER])
    settings.teams["team-a"].tools = ["calculator", "clock", "slow", "linger"]
    with serve(settings) as gateway:
        yield gateway


def _run(api: Api, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The final resource, from a JSON reply or from a validated stream's terminal event."""
    return api.stream(body)[-1]["response"] if stream else api.create(body)


modes = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


def _types(resource: dict[str, Any]) -> list[str]:
    return [item["type"] for item in resource["output"]]


def _text(resource: dict[str, Any]) -> str:
    return "".join(part["text"] for item in resource["output"] if item["type"] == "message"
                   for part in item["content"])


@pytest.mark.parametrize("model", ["sim", "sim-chat"])
def test_registered_tool_runs_between_turns(api: Api, model: str, upstream_log: Any) -> None:
    body = {"model": model, "input": "compute 42", "tools": [ENABLE_CALCULATOR]}
    whole = api.create(body)
    assert _types(whole) == ["function_call", "function_call_output", "message"]
    assert whole["output"][1]["output"] == "42" and whole["output"][1]["call_id"] == whole["output"][0]["call_id"]
    assert _text(whole) == "Tool said: 42"
    first_turn = upstream_log()[-2]["body"]
    tools = first_turn["tools"]
    described = tools[0] if model == "sim" else tools[0]["function"]
    assert described["description"] == "Evaluate arithmetic.", "the model sees the registered definition"
    assert whole["usage"]["input_tokens"] > 0

    events = api.stream(body)
    streamed = events[-1]["response"]
    assert _types(streamed) == _types(whole) and _text(streamed) == _text(whole)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.completed") == 1
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_text.delta")
    assert streamed["usage"] == whole["usage"]
    stored = api.get(f"/v1/responses/{streamed['id']}")
    assert _types(stored) == _types(whole)


@modes
def test_server_and_client_tools_in_one_turn(api: Api, stream: bool) -> None:
    first = _run(api, {"model": "sim-par", "input": "compute 4", "tools": [ENABLE_CALCULATOR, WEATHER]}, stream)
    assert _types(first) == ["function_call", "function_call", "function_call_output"]
    client_call = first["output"][1]
    assert client_call["name"] == "get_weather"
    second = api.create({"model": "sim", "previous_response_id": first["id"], "tools": [ENABLE_CALCULATOR, WEATHER],
                         "input": [{"type": "function_call_output", "call_id": client_call["call_id"],
                                    "output": "sunny"}]})
    assert _text(second) == "Tool said: 4; sunny"


@modes
def test_max_tool_calls_reached_is_incomplete(api: Api, stream: bool) -> None:
    reply = _run(api, {"model": "sim-par", "input": "compute 2", "max_tool_calls": 1,
                       "tools": [ENABLE_CALCULATOR, {"type": "function", "name": "slow"}]}, stream)
    assert reply["status"] == "incomplete"
    assert reply["incomplete_details"] == {"reason": "max_tool_calls"}


@modes
def test_tool_error_and_timeout_go_back_to_the_model(api: Api, stream: bool) -> None:
    failed = _run(api, {"model": "sim", "input": "compute banana", "tools": [ENABLE_CALCULATOR]}, stream)
    assert failed["output"][1]["output"].startswith("Error:")
    assert _text(failed).startswith("Tool said: Error:")
    slow = _run(api, {"model": "sim", "input": "wait", "tools": [{"type": "function", "name": "slow"}]}, stream)
    assert slow["output"][1]["output"].startswith("Error:") and "did not finish" in slow["output"][1]["output"]


@modes
def test_team_without_the_tool_gets_the_call_back(api_b: Api, stream: bool) -> None:
    reply = _run(api_b, {"model": "sim", "input": "compute 9", "tools": [ENABLE_CALCULATOR]}, stream)
    assert _types(reply) == ["function_call"], "not allowed to team-b: returned like any client tool"


def test_openai_sdk_streams_the_loop(running: RunningGateway) -> None:
    with OpenAI(base_url=running.base_url + "/v1", api_key=TEAM_A_KEY, max_retries=0) as client, \
            client.responses.stream(model="sim", input="compute 7",
                                    tools=[ENABLE_CALCULATOR]) as stream:  # type: ignore[list-item]
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["function_call", "function_call_output", "message"]
    assert final.output_text == "Tool said: 7"
    assert json.loads(final.output[0].arguments) == {"expression": "7"}  # type: ignore[union-attr]


@modes
def test_parallel_server_calls(api: Api, stream: bool) -> None:
    reply = _run(api, {"model": "sim-par", "input": "compute UTC",
                       "tools": [ENABLE_CALCULATOR, {"type": "function", "name": "clock"}]}, stream)
    assert _types(reply) == ["function_call", "function_call", "function_call_output", "function_call_output",
                             "message"]
    calls, outputs = reply["output"][:2], reply["output"][2:4]
    assert [o["call_id"] for o in outputs] == [c["call_id"] for c in calls]
    assert outputs[0]["output"].startswith("Error:") and "UTC" in outputs[1]["output"]


def _lingering() -> int:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in listing.splitlines() if line.strip() == "/bin/sleep 8.25")


def _wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_client_disconnect_stops_the_running_sandbox(running: RunningGateway) -> None:
    body = json.dumps({"model": "sim", "input": "go", "stream": True,
                       "tools": [{"type": "function", "name": "linger"}]}).encode()
    request = (f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEAM_A_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    # A raw socket: the client stays connected without reading, then goes away mid-tool.
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while b"response.function_call_arguments.done" not in received:
            received += conn.recv(65536)
        assert _wait_for(lambda: _lingering() == 1, 5), "the tool runs while the client is connected"
    started = time.monotonic()
    assert _wait_for(lambda: _lingering() == 0, 5), "the sandbox outlived the client"
    assert time.monotonic() - started < 5


def test_loop_deadline_stops_tools_and_the_loop(tmp_path: Any) -> None:
    providers = {"sim": {"dialect": "openai_responses", "base_url": "embedded"}}
    settings = gateway_settings(f"sqlite:///{tmp_path / 's.db'}", providers=providers,
                                models={"sim": {"deployments": [{"provider": "sim", "model": "sim-1"}]}},
                                tools=[{**SLOW, "timeout_s": 20}], tool_loop={"deadline_s": 1.0})
    settings.teams["team-a"].tools = ["slow"]
    with serve(settings) as gateway, httpx.Client(base_url=gateway.base_url, timeout=30,
                                                  headers={"Authorization": f"Bearer {TEAM_A_KEY}"}) as client:
        started = time.monotonic()
        reply = client.post("/v1/responses", json={"model": "sim", "input": "wait",
                                                   "tools": [{"type": "function", "name": "slow"}]}).json()
        elapsed = time.monotonic() - started
    assert elapsed < 10, "the tool was stopped at the loop deadline, not at its own timeout"
    assert reply["status"] == "incomplete" and reply["incomplete_details"] == {"reason": "deadline"}
    assert _types(reply) == ["function_call", "function_call_output"]
    assert "did not finish" in reply["output"][1]["output"]
