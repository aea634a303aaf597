"""The WebSocket transport of ``/v1/responses`` against the real gateway, both store backends: the
captured Codex session replayed frame by frame, the Agents SDK's own WebSocket transport running a
tool, and the transport's rules (authentication on the upgrade, one response in flight,
connection-local continuation and its eviction, warm-ups, the connection time limit). Every event
and error frame is checked against the spec's schemas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as serve_websockets
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from tests.conftest import Api
from tests.gateway_server import (
    TEAM_A_KEY,
    TEAM_B_KEY,
    RunningGateway,
    gateway_settings,
    serve,
    serve_backend,
)
from tests.spec_validation import SHARED, TERMINAL, validate_error_body, validate_stream, validate_websocket_error

CLIENTS = SHARED / "fixtures" / "clients"
_HANDSHAKE_HEADERS = {"host", "connection", "upgrade", "authorization", "user-agent"}


def _provider(dialect: str = "openai_responses", **headers: str) -> dict[str, Any]:
    return {"dialect": dialect, "base_url": "embedded", "headers": headers}


PROVIDERS = {
    "sim": _provider(),
    "sim-chat": _provider("openai_chat"),
    "slow": _provider(**{"x-sim-token-delay-ms": "30"}),
    "late": _provider(**{"x-sim-latency-ms": "2000"}),
    "down": _provider(**{"x-sim-fault": "status:503"}),
    "cut": _provider(**{"x-sim-fault": "reset-after-first-byte"}),
}
MODELS = {name: {"deployments": [{"provider": name, "model": "sim-1"}]} for name in PROVIDERS}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """The gateway with upstreams that are slow or fail, once per store backend."""
    with serve_backend(request.param, tmp_path_factory.mktemp("store"), lambda url, prefix: gateway_settings(
            url, store_prefix=prefix, providers=PROVIDERS, models=MODELS)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway whose connections last one second."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    settings = gateway_settings(url, providers=PROVIDERS, models=MODELS, websocket={"max_connection_s": 1.0})
    with serve(settings) as gateway:
        yield gateway


def _url(running: RunningGateway) -> str:
    return running.base_url.replace("http://", "ws://") + "/v1/responses"


def _connect(running: RunningGateway, key: str | None = TEAM_A_KEY, *, headers: dict[str, str] | None = None,
             **options: Any) -> Any:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(_url(running), additional_headers={**auth, **(headers or {})}, **options)


async def _send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def _events(ws: ClientConnection, *, opaque: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """One response's events, up to its terminal event, checked as an SSE stream would be."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in TERMINAL:
        event = json.loads(await ws.recv())
        assert not (event["type"] == "error" and "status" in event), f"error frame: {event}"
        events.append(event)
    validate_stream(events, opaque_types=opaque)
    return events


async def _turn(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame; the response its terminal event carries."""
    await _send(ws, frame)
    return (await _events(ws))[-1]["response"]


async def _error(ws: ClientConnection, frame: dict[str, Any] | str) -> dict[str, Any]:
    """Send a frame that must be refused; the error frame's ``error`` and ``status``."""
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    reply = json.loads(await ws.recv())
    validate_websocket_error(reply)
    return {**reply["error"], "status": reply["status"]}


def _text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value, to look for text whatever shape a dialect gives it."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [text for inner in value for text in _strings(inner)] if isinstance(value, list) else []


def _captured(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CLIENTS / name).read_text().splitlines()]


# ------------------------------------------------------------------------------ real clients
@pytest.mark.parametrize("model", ["sim", "sim-chat"])
async def test_codex_session_replays(running: RunningGateway, api: Api, upstream_log: Any, model: str) -> None:
    """Codex's three frames: a ``generate: false`` warm-up, a turn continuing it, and the tool
    result continuing that turn; all ``store: false`` with ``stream: true``, over one connection
    opened with Codex's own upgrade headers."""
    records = _captured("codex-websocket.jsonl")
    frames = [record["body"] for record in records if record["method"] == "WS"]
    upgrade = next(r for r in records if r["method"] == "GET" and "accepted" in r["capture_server_answered"])
    headers = {name: value for name, value in upgrade["headers"].items()
               if name.lower() not in _HANDSHAKE_HEADERS and not name.lower().startswith("sec-websocket")}
    assert [frame.get("generate") for frame in frames] == [False, None, None]

    replies: list[dict[str, Any]] = []
    async with _connect(running, headers=headers, user_agent_header=upgrade["headers"]["User-Agent"]) as ws:
        assert ws.response.headers["x-request-id"].startswith("req_")
        for frame in frames:
            frame = {**frame, "model": model}
            if replies:
                frame["previous_response_id"] = replies[-1]["id"]
                calls = [item for item in replies[-1]["output"] if item["type"] == "function_call"]
                # The tool result answers the call this gateway made, as Codex would.
                frame["input"] = [{**item, "call_id": calls[-1]["call_id"]} if item["type"] == "function_call_output"
                                  else item for item in frame["input"]]
            replies.append(await _turn(ws, frame))

    warm_up, call, answer = replies
    assert warm_up["status"] == "completed" and warm_up["output"] == []
    assert [(item["type"], item.get("name")) for item in call["output"]] == [("function_call", "exec_command")]
    tool_output = frames[2]["input"][0]["output"]
    assert _text(answer) == f"Tool said: {tool_output[:200]}"
    sent = upstream_log()
    assert len(sent) == 2, "the warm-up calls no model"
    conversation = _strings(sent[-1]["body"])
    for text in (frames[0]["input"][0]["content"][0]["text"], frames[1]["input"][-1]["content"][0]["text"],
                 tool_output):
        assert text in conversation, "the last turn must see the warm-up's and every later turn's items"
    for reply in replies:
        api.get(f"/v1/responses/{reply['id']}", expect=404)


@asynccontextmanager
async def _recording_relay(target: str, sent: list[dict[str, Any]],
                           received: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A loopback WebSocket relay in front of the gateway that keeps every frame each way, so a
    test sees exactly what a client library sent and got. Yields the relay's HTTP base URL."""

    async def pump(source: Any, sink: Any, kept: list[dict[str, Any]]) -> None:
        async for message in source:
            kept.append(json.loads(message))
            await sink.send(message)

    async def relay(client: ServerConnection) -> None:
        assert client.request is not None
        headers = {"Authorization": client.request.headers["Authorization"]}
        async with connect(target, additional_headers=headers) as upstream:
            pumps = [asyncio.create_task(pump(client, upstream, sent)),
                     asyncio.create_task(pump(upstream, client, received))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async with serve_websockets(relay, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("streamed", [False, True])
async def test_agents_sdk_websocket_transport_runs_a_tool(running: RunningGateway, streamed: bool) -> None:
    from agents import Agent, OpenAIResponsesWSModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        calls.append(city)
        return f"Sunny in {city}"

    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    async with _recording_relay(_url(running), sent, received) as base_url:
        sdk = AsyncOpenAI(base_url=base_url, api_key=TEAM_A_KEY, max_retries=0)
        model = OpenAIResponsesWSModel(model="sim", openai_client=sdk)
        try:
            agent = Agent(name="weather", instructions="You are helpful.", tools=[get_weather], model=model)
            if streamed:
                streaming = Runner.run_streamed(agent, "What's the weather in Paris?")
                async for _event in streaming.stream_events():
                    pass
                final = streaming.final_output
            else:
                final = (await Runner.run(agent, "What's the weather in Paris?")).final_output
        finally:
            await model.close()
            await sdk.close()

    assert calls == ["Paris"]
    assert final == "Tool said: Sunny in Paris"
    assert [(frame["type"], frame["stream"]) for frame in sent] == [("response.create", True)] * 2
    ends = [index for index, event in enumerate(received) if event["type"] in TERMINAL]
    assert len(ends) == 2
    validate_stream(received[:ends[0] + 1])
    validate_stream(received[ends[0] + 1:])


# ------------------------------------------------------------------------------ the transport's rules
@pytest.mark.parametrize("key", [None, "sk-wrong"])
async def test_the_upgrade_needs_a_team_key(running: RunningGateway, key: str | None) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with _connect(running, key):
            pass
    reply = refused.value.response
    assert reply.status_code == 401
    assert reply.headers["x-request-id"].startswith("req_")
    validate_error_body(json.loads(reply.body or b""))


async def test_frames_wait_for_the_response_in_flight(running: RunningGateway) -> None:
    async with _connect(running) as ws:
        for word in ("first", "second"):
            await _send(ws, {"type": "response.create", "model": "slow", "input": f"the {word} of two turns"})
        first, second = await _events(ws), await _events(ws)
    assert _text(first[-1]["response"]) == "Echo: the first of two turns"
    assert _text(second[-1]["response"]) == "Echo: the second of two turns"


async def test_store_false_continues_only_on_its_connection(running: RunningGateway, api: Api,
                                                            upstream_log: Any) -> None:
    async with _connect(running) as ws:
        first = await _turn(ws, {"type": "response.create", "model": "sim", "input": "remember me", "store": False})
        second = await _turn(ws, {"type": "response.create", "model": "sim-chat", "input": "and now?",
                                  "store": False, "previous_response_id": first["id"]})
        assert "remember me" in _strings(upstream_log()[-1]["body"])
        # The connection keeps its latest response only.
        older = await _error(ws, {"type": "response.create", "model": "sim", "input": "x",
                                  "previous_response_id": first["id"]})
        assert older["code"] == "previous_response_not_found" and older["param"] == "previous_response_id"
    async with _connect(running) as other:
        elsewhere = await _error(other, {"type": "response.create", "model": "sim", "input": "x",
                                         "previous_response_id": second["id"]})
    assert (elsewhere["status"], elsewhere["code"]) == (404, "previous_response_not_found")
    assert api.create({"model": "sim", "input": "x", "previous_response_id": second["id"]},
                      expect=404)["error"]["code"] == "previous_response_not_found"
    api.get(f"/v1/responses/{second['id']}", expect=404)


async def test_stored_responses_continue_on_any_connection_of_the_team(running: RunningGateway, api: Api) -> None:
    stored = api.create({"model": "sim", "input": "kept in the store"})
    async with _connect(running) as ws:
        reply = await _turn(ws, {"type": "response.create", "model": "sim", "input": "next",
                                 "previous_response_id": stored["id"]})
    assert reply["previous_response_id"] == stored["id"] and _text(reply) == "Echo: next"
    async with _connect(running, TEAM_B_KEY) as other_team:
        refused = await _error(other_team, {"type": "response.create", "model": "sim", "input": "x",
                                            "previous_response_id": stored["id"]})
    assert refused["code"] == "previous_response_not_found"


FAILURES: dict[str, tuple[dict[str, Any], int | None]] = {
    "refused": ({"model": "sim", "max_output_tokens": 3}, 400),
    "upstream down": ({"model": "down"}, 503),
    "cut mid-stream": ({"model": "cut"}, None),
}


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_continuation_evicts_what_it_continued(running: RunningGateway, failure: str) -> None:
    fields, status = FAILURES[failure]
    async with _connect(running) as ws:
        first = await _turn(ws, {"type": "response.create", "model": "sim", "input": "one", "store": False})
        frame = {"type": "response.create", "input": "two", "store": False, "previous_response_id": first["id"],
                 **fields}
        if status is None:
            await _send(ws, frame)
            assert (await _events(ws))[-1]["type"] == "response.failed"
        else:
            assert (await _error(ws, frame))["status"] == status
        evicted = await _error(ws, {"type": "response.create", "model": "sim", "input": "two",
                                    "previous_response_id": first["id"]})
        assert evicted["code"] == "previous_response_not_found"
        assert _text(await _turn(ws, {"type": "response.create", "model": "sim", "input": "from the top"})) == \
            "Echo: from the top"


async def test_bad_frames_get_error_frames_and_the_connection_goes_on(running: RunningGateway) -> None:
    async with _connect(running) as ws:
        kept = await _turn(ws, {"type": "response.create", "model": "sim", "input": "keep me", "store": False})
        refusals = [
            await _error(ws, "{not json"),
            await _error(ws, {"type": "response.cancel", "response_id": kept["id"]}),
            await _error(ws, {"model": "sim", "input": "x"}),
            await _error(ws, {"type": "response.create", "model": "sim", "input": "x", "background": True}),
            await _error(ws, {"type": "response.create", "input": "x"}),
            await _error(ws, {"type": "response.create", "model": "nope", "input": "x"}),
        ]
        # Binary frames are read like text ones; refused frames that continued nothing evict nothing.
        await ws.send(json.dumps({"type": "response.create", "model": "sim", "input": "still here?",
                                  "previous_response_id": kept["id"]}).encode())
        reply = (await _events(ws))[-1]["response"]
    assert [(r["status"], r["code"], r["param"]) for r in refusals] == [
        (400, "invalid_json", None),
        (400, "invalid_value", "type"),
        (400, "invalid_request", None),
        (400, "unsupported_parameter", "background"),
        (400, "missing_required_parameter", "model"),
        (404, "model_not_found", "model"),
    ]
    assert _text(reply) == "Echo: still here?"


async def test_a_stored_warm_up_is_a_response_without_output(running: RunningGateway, api: Api,
                                                             upstream_log: Any) -> None:
    async with _connect(running) as ws:
        warm_up = await _turn(ws, {"type": "response.create", "model": "sim", "generate": False,
                                   "instructions": "be brief", "input": "prepared"})
        reply = await _turn(ws, {"type": "response.create", "model": "sim", "input": "go",
                                 "previous_response_id": warm_up["id"]})
    assert _text(reply) == "Echo: go"
    assert len(upstream_log()) == 1
    assert api.get(f"/v1/responses/{warm_up['id']}")["output"] == []
    listed = api.get(f"/v1/responses/{warm_up['id']}/input_items", params={"order": "asc"})["data"]
    assert [part["text"] for item in listed for part in item["content"]] == ["prepared"]


async def test_the_connection_ends_at_its_time_limit(short_lived: RunningGateway) -> None:
    async with _connect(short_lived) as idle:
        limit = json.loads(await idle.recv())
        with pytest.raises(ConnectionClosedOK):
            await idle.recv()
    validate_websocket_error(limit)
    assert limit["error"]["code"] == "websocket_connection_limit_reached"

    async with _connect(short_lived) as busy:
        # The first turn outlasts the limit and still finishes; the one queued behind it never starts.
        await _send(busy, {"type": "response.create", "model": "late", "input": "a long one"})
        await _send(busy, {"type": "response.create", "model": "sim", "input": "too late"})
        finished = (await _events(busy))[-1]["response"]
        limit = json.loads(await busy.recv())
        with pytest.raises(ConnectionClosedOK):
            await busy.recv()
    assert _text(finished) == "Echo: a long one"
    assert limit["error"]["code"] == "websocket_connection_limit_reached"
