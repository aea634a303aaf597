"""Ollama native dialect (``providers.ollama``) against recorded traffic.

Every interaction of every cassette in ``ollama/`` is either a ``Case`` below or listed in
``SKIPPED`` with its reason (``test_every_recorded_interaction_is_accounted_for`` enforces that).
The cases work as in ``test_cohere_translation`` (with the machinery of ``_cases``): ``prepare()``
must produce the recorded body up to the listed ``Ignore``s, ``run()`` replays the interaction,
and the normalised output, usage, status, upstream model, spec validity of the resource and of
every event, or the mapped error, must match the recording.

What no recording shows (errors inside a stream, replies without call ids, stream framing,
simulator faults) is covered with synthetic interactions and the simulator's Ollama dialect.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from providers.ollama import OllamaProvider
from providers.simulator import start_simulator
from proxy.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UnsupportedFeature,
    UpstreamError,
    UpstreamUnavailable,
)
from proxy.schema.deltas import Delta
from proxy.schema.items import Compaction, Item, OpaqueItem
from proxy.schema.request import Tool
from proxy.schema.upstream import Deployment
from tests.conformance._cases import (
    API_KEY,
    Case,
    Failure,
    Ignore,
    Long,
    Outcome,
    assert_accounted_for,
    assistant,
    build,
    call,
    case_params,
    check_case,
    collect,
    decoded_request,
    fco,
    offline,
    recorded_ids,
    replayed,
    summary,
    text,
    thought,
    to_json,
    usage_tuple,
    user,
)
from tests.conformance.cassette import Interaction, load, replay, synthetic
from tests.spec_validation import validate_stream

DIR = "ollama"
BASE_URL = "http://127.0.0.1:11434"
URL = BASE_URL + "/api/chat"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="

EMPTY_TOOLS = Ignore("tools", "the recording's client sends an empty tools list; the adapter leaves tools out", [])
SEED = Ignore("options.seed", "seed is not a Responses parameter", 42)
EMPTY_FORMAT = Ignore("format", "the older ollama SDK sends format:\"\" for plain text; the adapter leaves it out", "")
EMPTY_OPTIONS = Ignore("options", "the older ollama SDK sends empty options; the adapter sends options only when "
                       "it has some", {})
KEEP_ALIVE = Ignore("keep_alive", "the older ollama SDK sends keep_alive:null; the server default applies", None)
OLD_SDK = (EMPTY_FORMAT, EMPTY_OPTIONS, KEEP_ALIVE)
TOOL_NAME = Ignore("messages.*.tool_name", "the recording's client predates tool_name; the adapter adds the name of "
                   "the call the result answers, which newer servers use", "get_current_weather", added=True)
QWEN = "qwen3.6:latest"
WEATHER_TOOL = {"type": "function", "name": "get_current_weather", "description": "Get the current weather in a city.",
                "parameters": {"type": "object", "required": ["city"],
                               "properties": {"city": {"type": "string", "description": "The city name."}}}}

CASES: list[Case] = [
    Case("text-nonstream", "ollama/chat-text-llama3.yaml", 0,
         {"model": "team-model", "input": [user("Tell me a joke about OpenTelemetry")]},
         Outcome([text(Long("A joke about OpenTelemetry!\n\nWhy did the OpenTelem",
                            'etch", but I hope it brings a smile to your face!)', 256))], (17, 0, 66, 0, 83), "llama3"),
         normalise=OLD_SDK),
    Case("thinking-nonstream", "ollama/chat-text-thinking.yaml", 0,
         {"model": "team-model", "input": "Why is the sky blue? Answer in one sentence.", "temperature": 0},
         Outcome([thought(Long("Here's a thinking process:\n\n1.  **Analyze User Inp",
                               "ood. Meets all criteria. Output matches response.\u2705", 1430)),
                  text(Long("The sky appears blue because Earth's atmosphere sc",
                            ", and human eyes are more sensitive to blue light.", 188))], (21, 0, 369, 0, 390), QWEN),
         normalise=(SEED, EMPTY_TOOLS)),
    Case("thinking-stream", "ollama/chat-stream-thinking-ndjson.yaml", 0,
         {"model": "team-model", "input": "Count from 1 to 5, digits only.", "temperature": 0, "stream": True},
         Outcome([thought(Long("Here's a thinking process:\n\n1.  **Analyze User Input:**\n   -",
                               "andard.\n   Done. \n   Output matches response.\u2705\n   [Proceeds]", 3064)),
                  text("1\n2\n3\n4\n5")], (21, 0, 889, 0, 910), QWEN),
         normalise=(SEED, EMPTY_TOOLS)),
    Case("tool-call-with-id", "ollama/chat-tool-call.yaml", 0,
         {"model": "team-model", "input": "What is the weather in Paris? Use the get_current_weather tool.",
          "tools": [WEATHER_TOOL], "temperature": 0},
         Outcome([thought(Long("Thinking Process:\n1.  **Identify User Intent**: Th",
                               'ris")`.\n6.  **Execute Tool Call**: Make the call.\u2705', 437)),
                  call("call_gsiiy8py", "get_current_weather", '{"city":"Paris"}')], (292, 0, 143, 0, 435), QWEN),
         normalise=(SEED,)),
    Case("tool-result-followup", "ollama/chat-tool-result-followup.yaml", 0,
         {"model": "team-model", "input": [
             call("call_1", "get_current_weather", '{"location": "San Francisco"}'),
             fco("call_1", "The weather in San Francisco is 70 degrees and sunny.")]},
         Outcome([text(Long("This is a simple example, but in a real-world scen",
                            " once or handling different units (e.g., Celsius).", 535))], (44, 0, 113, 0, 157),
                 "llama3.1"),
         normalise=(*OLD_SDK, EMPTY_TOOLS, TOOL_NAME)),
    Case("model-not-found", "ollama/error-404-model-not-found.yaml", 0,
         {"model": "team-model", "input": "Why is the sky blue?"},
         Failure(InvalidRequest, 400, "model_not_found", "model 'nonexistent-model:latest' not found", param="model"),
         normalise=(EMPTY_TOOLS,)),
]

SKIPPED: dict[tuple[str, int], str] = {}
"""Interactions not replayed as cases, with the reason (none: every Ollama recording is a case)."""


def _deployment(model: str, base_url: str = BASE_URL, **overrides: Any) -> Deployment:
    return Deployment(name="test", provider="ollama", dialect="ollama", base_url=base_url, model=model,
                      **{"api_key": API_KEY, **overrides})


@pytest.mark.parametrize("case", case_params(CASES, SKIPPED))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording = load(case.cassette, interactions=[case.interaction])
    assert recording.interactions[0].uri == URL
    request = decoded_request(case.body(), _deployment(recording.recorded_requests[0]["model"]))
    provider = OllamaProvider(session)
    await check_case(case, recording, provider.prepare(request), provider.run(request),
                     headers={"Authorization": f"Bearer {API_KEY}"}, pieces=2 if request.stream else 0)


def test_every_recorded_interaction_is_accounted_for() -> None:
    assert_accounted_for(CASES, SKIPPED, recorded_ids(DIR))


# -- request translation without a recording ---------------------------------------------------
def _prepare(body: dict[str, Any], **deployment: Any) -> dict[str, Any]:
    prepared = offline(OllamaProvider, decoded_request({"model": "team-model", **body},
                                                       _deployment("llama3", **deployment)))
    assert prepared.url == URL
    return prepared.body


def test_messages_images_turns_and_tool_names() -> None:
    body = {"instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Answer in French."}]},
        user([{"type": "input_text", "text": "look"}, {"type": "input_text", "text": "here"},
              {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
        assistant([{"type": "output_text", "text": "Checking"}, {"type": "refusal", "refusal": "."}]),
        call("c1", "a", "{}"), call("c2", "b", '{"x": [1]}'),
        fco("c2", [{"type": "input_text", "text": "two"}, {"type": "input_text", "text": "lines"}]),
        fco("c1", "one"), fco("elsewhere", "no call in this conversation"),
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "dropped"}]},
        user("next")]}
    assert _prepare(body)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "look\nhere", "images": [PNG]},
        {"role": "assistant", "content": "Checking.", "thinking": "plan", "tool_calls": [
            {"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {"x": [1]}}}]},
        {"role": "tool", "content": "two\nlines", "tool_name": "b"},
        {"role": "tool", "content": "one", "tool_name": "a"},
        {"role": "tool", "content": "no call in this conversation"},
        {"role": "user", "content": "next"}]


@pytest.mark.parametrize(("items", "param", "error"), [
    ([call("c1", "a", "[1, 2]")], "input[0].arguments", InvalidRequest),
    ([call("c1", "a", "{not json")], "input[0].arguments", InvalidRequest),
    ([user([{"type": "input_image", "image_url": "https://example.test/a.png"}])], "input[0].content[0]",
     UnsupportedFeature),
    ([user([{"type": "input_image", "image_url": "data:image/png,notbase64"}])], "input[0].content[0]",
     UnsupportedFeature),
    ([user([{"type": "input_image", "image_url": "https://example.test/a;base64,AAAA"}])], "input[0].content[0]",
     UnsupportedFeature),
    ([user([{"type": "input_file", "file_data": "data:application/pdf;base64,JVBERg=="}])], "input[0].content[0]",
     UnsupportedFeature),
    ([{"type": "message", "role": "system", "content": [{"type": "input_image", "image_url": f"data:x;base64,{PNG}"}]}],
     "input[0].content[0]", UnsupportedFeature),
    ([assistant([{"type": "input_image", "image_url": f"data:x;base64,{PNG}"}])], "input[0].content[0]",
     UnsupportedFeature),
    ([fco("c1", [{"type": "input_image", "image_url": f"data:x;base64,{PNG}"}])], "input[0].output[0]",
     UnsupportedFeature),
], ids=["array-arguments", "bad-json-arguments", "image-url", "image-not-base64", "image-url-like-base64", "file",
        "image-in-system", "image-in-assistant", "image-in-tool-output"])
def test_inputs_ollama_cannot_take_are_refused(items: list[Any], param: str, error: type[GatewayError]) -> None:
    with pytest.raises(error) as caught:
        _prepare({"input": items})
    assert (type(caught.value), caught.value.param, caught.value.status) == (error, param, 400)


@pytest.mark.parametrize(("items", "tools", "choice", "param"), [
    ([OpaqueItem({"type": "web_search_call"})], [], None, "input[0]"),
    ([Compaction(encrypted_content="abc")], [], None, "input[0]"),
    ([], [OpaqueItem({"type": "web_search"})], None, "tools[0]"),
    ([], [], OpaqueItem({"type": "file_search"}), "tool_choice"),
], ids=["opaque-item", "compaction", "opaque-tool", "opaque-tool-choice"])
def test_items_and_tools_outside_the_core_are_refused(items: list[Item], tools: list[Tool], choice: Any,
                                                      param: str) -> None:
    request = decoded_request({"model": "team-model", "input": "x"}, _deployment("llama3"))
    with pytest.raises(UnsupportedFeature) as caught:
        offline(OllamaProvider, request, items=items or None, tools=tools, tool_choice=choice)
    assert caught.value.param == param


def test_tool_choice() -> None:
    tools = [{"type": "function", "name": "a", "strict": True, "parameters": {"type": "object"}},
             {"type": "function", "name": "b", "description": "B"}]
    a = {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}
    b = {"type": "function", "function": {"name": "b", "description": "B"}}
    assert _prepare({"input": "x", "tools": tools})["tools"] == [a, b]
    assert "tools" not in _prepare({"input": "x", "tools": tools, "tool_choice": "none"})
    allowed = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "b"}]}
    assert _prepare({"input": "x", "tools": tools, "tool_choice": allowed})["tools"] == [b]
    assert "tools" not in _prepare({"input": "x", "tools": tools, "tool_choice": {**allowed, "mode": "none"}})
    for forced in ("required", {"type": "function", "name": "a"}, {**allowed, "mode": "required"}):
        with pytest.raises(UnsupportedFeature) as caught:
            _prepare({"input": "x", "tools": tools, "tool_choice": forced})
        assert caught.value.param == "tool_choice"


def test_parameters_mapping() -> None:
    body = _prepare({"input": "x", "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9,
                     "presence_penalty": 0.5, "frequency_penalty": -0.5, "reasoning": {"effort": "low"},
                     "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}},
                              "verbosity": "low"}, "metadata": {"a": "b"}, "store": True, "service_tier": "flex",
                     "safety_identifier": "u", "prompt_cache_key": "k", "truncation": "auto", "top_logprobs": 0})
    assert body == {"model": "llama3", "messages": [{"role": "user", "content": "x"}], "format": {"type": "object"},
                    "think": True, "options": {"num_predict": 64, "temperature": 0.2, "top_p": 0.9,
                                               "presence_penalty": 0.5, "frequency_penalty": -0.5}, "stream": False}


@pytest.mark.parametrize(("reasoning", "fmt", "expected"), [
    ({"effort": "none"}, {"type": "json_object"}, {"think": False, "format": "json"}),
    ({"summary": "auto"}, {"type": "json_schema", "name": "n"}, {"format": "json"}),
    ({"effort": "xhigh"}, {"type": "text"}, {"think": True}),
])
def test_think_and_format(reasoning: dict[str, Any], fmt: dict[str, Any], expected: dict[str, Any]) -> None:
    body = _prepare({"input": "x", "reasoning": reasoning, "text": {"format": fmt}, "stream": True})
    assert {k: v for k, v in body.items() if k in ("think", "format")} == expected
    assert body["stream"] is True


def test_top_logprobs_is_refused_and_no_key_sends_no_auth() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", "top_logprobs": 2})
    assert caught.value.param == "top_logprobs"
    request = decoded_request({"model": "team-model", "input": "x"}, _deployment("llama3", api_key=None, auth="none"))
    assert "Authorization" not in offline(OllamaProvider, request).headers


# -- replies without a recording (synthetic interactions) --------------------------------------
def _ndjson(*lines: Any) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def _line(message: dict[str, Any], **tail: Any) -> dict[str, Any]:
    return {"model": "llama3.1", "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", **message}, "done": False, **tail}


DONE = _line({"content": ""}, done=True, done_reason="stop", prompt_eval_count=3, eval_count=4)
NO_ID_CALLS = _line({"content": "", "tool_calls": [
    {"function": {"name": "a", "arguments": {"x": 1}}}, {"function": {"name": "b", "arguments": {}}}]})


async def _run_synthetic(session: aiohttp.ClientSession, interaction: Interaction, *, stream: bool = True,
                         **body: Any) -> list[Delta]:
    request = decoded_request({"model": "team-model", "input": "x", "stream": stream, **body},
                              _deployment("llama3.1"))
    return await replayed(OllamaProvider(session).run(request), interaction)


async def test_calls_without_ids_get_distinct_minted_ids(session: aiohttp.ClientSession) -> None:
    body = _ndjson(_line({"content": "", "thinking": "hm"}), _line({"content": "Let me see."}), NO_ID_CALLS, DONE)
    builder, events = build(await _run_synthetic(session, Interaction.make(URL, body=body)))
    items = summary(builder.resource)
    assert [item["type"] for item in items] == ["reasoning", "message", "function_call", "function_call"]
    assert [(item["name"], item["arguments"]) for item in items[2:]] == [("a", '{"x":1}'), ("b", "{}")]
    assert len({item["call_id"] for item in items[2:]}) == 2
    assert all(item["call_id"].startswith("call_") for item in items[2:])
    assert (builder.resource.status, usage_tuple(builder.resource)) == ("completed", (3, 0, 4, 0, 7))
    validate_stream([to_json(event) for event in events])


@pytest.mark.parametrize("stream", [True, False])
async def test_parallel_tool_calls_false_keeps_the_first_call(session: aiohttp.ClientSession, stream: bool) -> None:
    body = _ndjson(NO_ID_CALLS, DONE) if stream else json.dumps(
        {**NO_ID_CALLS, "done": True, "done_reason": "stop"}).encode()
    deltas = await _run_synthetic(session, Interaction.make(URL, body=body), stream=stream, parallel_tool_calls=False)
    assert [(item["name"], item["arguments"]) for item in summary(build(deltas)[0].resource)] == [("a", '{"x":1}')]


async def test_length_is_incomplete(session: aiohttp.ClientSession) -> None:
    body = _ndjson(_line({"content": "cut"}), {**DONE, "done_reason": "length"})
    builder, _ = build(await _run_synthetic(session, Interaction.make(URL, body=body)))
    assert builder.resource.status == "incomplete"
    assert builder.resource.incomplete_details is not None
    assert builder.resource.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(("body", "stream", "words"), [
    (_ndjson(_line({"content": "partial"}), {"error": "an error was encountered while running the model"}), True,
     "while running the model"),
    (_ndjson(_line({"content": "partial"})), True, "ended early"),
    (_ndjson(_line({"content": "partial"}), b'{"broken": '), True, "malformed JSON"),
    (_ndjson(_line({"content": "partial"}), [1]), True, "unexpected stream line"),
    (_ndjson(_line({"content": "partial"}), _line({"tool_calls": [{"function": {"arguments": {}}}]})), True,
     "without a name"),
    (json.dumps({"error": "model is loading"}).encode(), False, "model is loading"),
], ids=["error-line", "no-done-line", "broken-line", "not-an-object", "nameless-call", "error-body-with-200"])
async def test_failures_in_a_200_reply(session: aiohttp.ClientSession, body: bytes, stream: bool, words: str) -> None:
    seen: list[Delta] = []
    request = decoded_request({"model": "team-model", "input": "x", "stream": stream}, _deployment("llama3.1"))
    with replay(synthetic(Interaction.make(URL, body=body))), pytest.raises(UpstreamError) as caught:
        async for delta in OllamaProvider(session).run(request):
            seen.append(delta)
    assert words in caught.value.message
    assert any(getattr(delta, "text", None) == "partial" for delta in seen) == stream  # failed after output


@pytest.mark.parametrize(("status", "headers", "error", "code"), [
    (400, {}, InvalidRequest, "invalid_request"),
    (429, {"retry-after": "2"}, RateLimited, "rate_limit_exceeded"),
    (500, {}, UpstreamError, "upstream_error"),
])
async def test_error_statuses_are_mapped(session: aiohttp.ClientSession, status: int, headers: dict[str, str],
                                         error: type[GatewayError], code: str) -> None:
    reply = Interaction.make(URL, status=status, headers=headers, body={"error": f"no (key {API_KEY})"})
    with pytest.raises(GatewayError) as caught:
        await _run_synthetic(session, reply, stream=False)
    assert (type(caught.value), caught.value.code) == (error, code)
    assert caught.value.message == "no (key [redacted])"
    assert caught.value.retry_after == (2.0 if headers else None)


# -- against the simulator's Ollama dialect ----------------------------------------------------
async def _against_simulator(session: aiohttp.ClientSession, body: dict[str, Any],
                             headers: dict[str, str]) -> list[Delta]:
    simulator = await start_simulator()
    try:
        deployment = _deployment("sim-model", base_url=simulator.url, headers=headers, api_key=None, auth="none")
        return await collect(OllamaProvider(session).run(decoded_request({"model": "team-model", **body},
                                                                         deployment)))
    finally:
        await simulator.close()


@pytest.mark.parametrize("fault", [None, "trickle"])
async def test_simulator_stream_and_whole_reply_agree(session: aiohttp.ClientSession, fault: str | None) -> None:
    headers = {"x-sim-trickle-delay-ms": "0", "x-sim-parallel": "2", **({"x-sim-fault": fault} if fault else {})}
    tools = [WEATHER_TOOL, {**WEATHER_TOOL, "name": "get_time"}]
    resources = []
    for stream in (False, True):
        body = {"input": [user("Weather in Oslo")], "tools": tools, "stream": stream}
        resources.append(build(await _against_simulator(session, body, headers))[0].resource)
    whole, streamed = (summary(resource) for resource in resources)
    assert [(item["name"], item["arguments"]) for item in whole] == [("get_current_weather", '{"city":"Oslo"}'),
                                                                      ("get_time", '{"city":"Oslo"}')]
    assert [{k: v for k, v in item.items() if k != "call_id"} for item in streamed] == \
        [{k: v for k, v in item.items() if k != "call_id"} for item in whole]
    assert usage_tuple(resources[0]) == usage_tuple(resources[1])


@pytest.mark.parametrize(("fault", "stream", "error", "words"), [
    ("malformed", True, UpstreamError, "malformed JSON"),
    ("malformed", False, UpstreamError, "malformed JSON"),
    ("status:404", True, InvalidRequest, "not found"),
    ("status:503", False, UpstreamUnavailable, "server busy"),
])
async def test_simulator_faults(session: aiohttp.ClientSession, fault: str, stream: bool,
                                error: type[GatewayError], words: str) -> None:
    with pytest.raises(error) as caught:
        await _against_simulator(session, {"input": "hi", "stream": stream}, {"x-sim-fault": fault})
    assert words in caught.value.message


@pytest.mark.parametrize(("message", "words"), [
    ({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "a", "arguments": "{}"}}]},
     "cannot unmarshal string"),
    ({"role": "user", "content": "look", "images": ["not base64!"]}, "illegal base64"),
    ({"role": "developer", "content": "x"}, "invalid role"),
], ids=["string-arguments", "bad-image", "developer-role"])
async def test_simulator_refuses_what_ollama_refuses(session: aiohttp.ClientSession, message: dict[str, Any],
                                                    words: str) -> None:
    simulator = await start_simulator()
    try:
        async with session.post(simulator.url + "/api/chat", json={"model": "m", "messages": [message],
                                                                   "stream": False}) as reply:
            status, error = reply.status, await reply.json()
    finally:
        await simulator.close()
    assert status == 400 and set(error) == {"error"} and words in error["error"]


async def test_simulator_streams_by_default_like_ollama(session: aiohttp.ClientSession) -> None:
    simulator = await start_simulator()
    try:
        async with session.post(simulator.url + "/api/chat", json={
                "model": "m", "messages": [{"role": "user", "content": "hi there"}]}) as reply:
            content_type, raw = reply.content_type, await reply.read()
    finally:
        await simulator.close()
    lines = [json.loads(line) for line in raw.splitlines()]
    assert content_type == "application/x-ndjson"
    assert "".join(line["message"]["content"] for line in lines) == "Echo: hi there"
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert (lines[-1]["done_reason"], lines[-1]["eval_count"]) == ("stop", len(lines) - 1)
