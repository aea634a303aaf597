"""Cohere v2 Chat dialect (``providers.cohere``) against recorded traffic.

Every interaction of every cassette in ``cohere/`` is either a ``Case`` below or listed in
``SKIPPED`` with its reason (``test_every_recorded_interaction_is_accounted_for`` enforces that).
A case is the Responses request a client would send for what the recording's client sent,
decoded as the gateway decodes an incoming body. For each case:

1. ``prepare()`` must produce the recorded request body, except for the keys the case ignores;
   each ``Ignore`` names a path and the exact value, says why, and must match something;
2. ``run()`` replays the interaction: the body and URL aiohttp sent must be the prepared ones and
   the credential header the deployment's (``Bearer test-key``);
3. the deltas go through ``ResponseBuilder``: items (with phase), texts, reasoning, call ids,
   names, arguments, usage, status and incomplete reason must equal what the recording says, the
   resource and every event must validate against the spec, and the events must be in the
   spec's lifecycle order.

No public Cohere error recording exists (PROVENANCE.md), so errors, failed finishes and stream
framing are covered with synthetic interactions in Cohere's documented shapes, and the
adapter also runs against the simulator's Cohere dialect.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from providers.cohere import CohereProvider, CohereStreamDecoder
from providers.simulator import start_simulator
from proxy.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UnsupportedFeature,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.schema import events as ev
from proxy.schema.content import InputImage
from proxy.schema.deltas import Delta
from proxy.schema.items import Compaction, Item, Message, OpaqueItem
from proxy.schema.upstream import Deployment
from tests.conformance._cases import (
    API_KEY,
    Case,
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
    no_error,
    offline,
    recorded,
    recorded_ids,
    replayed,
    summary,
    text,
    thought,
    to_json,
    usage_tuple,
    user,
)
from tests.conformance.cassette import Interaction, load
from tests.spec_validation import validate_stream

DIR = "cohere"
BASE_URL = "https://api.cohere.com/v2"
URL = BASE_URL + "/chat"


# -- the recorded cases ------------------------------------------------------------------------
NULL_CONTENT = Ignore("messages.*.content", "the recording's client (openllmetry's Cohere SDK) sends content:null "
                      "beside tool_calls; the adapter leaves content out, as pydantic-ai does", None)

JOKE = "Tell me a joke, pirate style"
PARIS = "What's the weather in Paris?"
TOKYO = "What is the weather and current time in Tokyo?"
RIVER = "Considering the way to cross the street, analogously, how do I cross the river?"


def weather_tool(description: str, *, closed: bool) -> dict[str, Any]:
    parameters: dict[str, Any] = {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}
    if closed:
        parameters["additionalProperties"] = False
    return {"type": "function", "name": "get_weather", "description": description, "parameters": parameters}


def location_tool(name: str, what: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "description": f"Get the current {what} in a given location",
            "parameters": {"type": "object", "required": ["location"], "properties": {"location": {
                "type": "string", "description": "The city and state, e.g. San Francisco, CA"}}}}


PARIS_WEATHER = weather_tool("Get the current weather for a city.", closed=True)
TOKYO_TOOLS = [location_tool("get_weather", "weather"), location_tool("get_time", "time")]
TOKYO_CALLS = [call("get_time_dp3men9jrvhf", "get_time", '{"location":"Tokyo"}'),
               call("get_weather_d7arjgsc96yf", "get_weather", '{"location":"Tokyo"}')]


def street_history() -> dict[str, Any]:
    """thinking.yaml #1: the client replays #0, an OpenAI Responses turn (a reasoning item with
    three summary parts and an answer), then asks again. The gateway drops OpenAI's
    ``encrypted_content`` before a Cohere upstream (``proxy.adaptation``), so it is left out."""
    reply = load("cohere/thinking.yaml", interactions=[0]).interactions[0].response_json()
    reasoning, message = reply["output"]
    return {"model": "team-model", "input": [
        user("How do I cross the street?"),
        {"type": "reasoning", "id": reasoning["id"], "summary": reasoning["summary"]},
        assistant([{"type": "output_text", "text": message["content"][0]["text"]}]),
        user(RIVER)]}


CASES: list[Case] = [
    Case("text-nonstream", "cohere/text-nonstream.yaml", 0, {"model": "team-model", "input": JOKE},
         Outcome([text(Long("Arrrr, matey! Shiver me timbers, here\u2019s a pirate-t",
                            "t a pizza restaurant, and I couldn\u2019t help but cry.", 289))], (69, 0, 89, 0, 158))),
    Case("text-stream", "cohere/text-stream.yaml", 0, {"model": "team-model", "input": JOKE, "stream": True},
         Outcome([text(Long("Arrrr, matey! Shiver me timbers, here's a pirate-s",
                            " want me to sail through more pirate-themed humor!", 383))], (69, 0, 110, 0, 179))),
    Case("system-instructions", "cohere/system-instructions.yaml", 0,
         {"model": "team-model", "instructions": "You are a helpful assistant.",
          "input": "What is the capital of France?"},
         Outcome([text(Long("The capital of France is Paris. It is the country'",
                            "icant influence on fashion, cuisine, and the arts.", 301))], (542, 0, 63, 0, 605))),
    Case("cached-tokens", "cohere/cached-tokens.yaml", 0,
         lambda: {"model": "team-model", "instructions": recorded("cohere/cached-tokens.yaml", 0,
                                                                  "messages", 0, "content"),
                  "input": "Say hi in one word."},
         Outcome([text("Hello!")], (2935, 2928, 4, 0, 2939))),
    Case("thinking-replayed-history", "cohere/thinking.yaml", 1, street_history,
         Outcome([thought(Long("Okay, the user is asking how to cross a river, usi",
                               "ing actionable and safe advice for river crossing.", 2945)),
                  text(Long("Crossing a river safely requires careful planning ",
                            "follow traffic laws. Your safety is paramount. \U0001f30a\u26a0\ufe0f", 2930))],
                 (2190, 0, 1257, 0, 3447))),
    Case("tool-choice-none", "cohere/tool-choice-none.yaml", 0,
         {"model": "team-model", "input": [user(PARIS)], "tools": [PARIS_WEATHER], "tool_choice": "none"},
         Outcome([text("I can provide you with the current weather in Paris. Could you please specify the date and "
                       "time for which you would like the weather information?")], (1442, 1040, 29, 0, 1471))),
    Case("tool-choice-required", "cohere/tool-choice-required.yaml", 0,
         {"model": "team-model", "input": [user(PARIS)], "tool_choice": "required",
          "tools": [weather_tool("Get weather for a city", closed=False)]},
         Outcome([text("I will use one or more of the available tools to find the answer", "commentary"),
                  call("get_weather_3p2j6ce4gxxx", "get_weather", '{"city":"Paris"}')], (1452, 144, 33, 0, 1485))),
    Case("tool-call", "cohere/tool-roundtrip.yaml", 0,
         {"model": "team-model", "input": [user(PARIS)], "tools": [PARIS_WEATHER]},
         Outcome([text("I will use the 'get_weather' tool to find the weather in Paris.", "commentary"),
                  call("get_weather_9gpb31r7h7mj", "get_weather", '{"city":"Paris"}')], (1441, 144, 54, 0, 1495))),
    Case("tool-result", "cohere/tool-roundtrip.yaml", 1,
         {"model": "team-model", "tools": [PARIS_WEATHER], "input": [
             user(PARIS), call("get_weather_9gpb31r7h7mj", "get_weather", '{"city":"Paris"}'),
             fco("get_weather_9gpb31r7h7mj", "Sunny, 22C in Paris")]},
         Outcome([text("The weather in Paris is currently sunny and 22C.")], (1533, 1440, 36, 0, 1569))),
    Case("parallel-calls", "cohere/tools-roundtrip-history.yaml", 0,
         {"model": "team-model", "input": [user(TOKYO)], "tools": TOKYO_TOOLS},
         Outcome([text("I will search for the current time and weather in Tokyo.", "commentary"), *TOKYO_CALLS],
                 (968, 0, 83, 0, 1051))),
    Case("parallel-results", "cohere/tools-roundtrip-history.yaml", 1,
         {"model": "team-model", "tools": TOKYO_TOOLS, "input": [
             user(TOKYO), *TOKYO_CALLS, fco("get_time_dp3men9jrvhf", "4:20 PM"),
             fco("get_weather_d7arjgsc96yf", "Sunny 20 degrees Celsius")]},
         Outcome([text("The current time in Tokyo is 4:20 PM and the weather is sunny with a temperature of "
                       "20\u00b0C.")], (1094, 0, 102, 0, 1196)),
         normalise=(NULL_CONTENT,)),
]

# Interactions not replayed as cases, with the reason. Each becomes a skipped test so the report
# lists it; test_every_recorded_interaction_is_accounted_for keeps this list complete.
SKIPPED: dict[tuple[str, int], str] = {
    ("cohere/thinking.yaml", 0): "not Cohere traffic: the OpenAI Responses call of a cross-provider history test; "
                                 "its reasoning summary and answer are replayed as the history of #1",
}


def _deployment(model: str, base_url: str = BASE_URL, **overrides: Any) -> Deployment:
    return Deployment(name="test", provider="cohere", dialect="cohere", base_url=base_url, model=model,
                      **{"api_key": API_KEY, **overrides})


@pytest.mark.parametrize("case", case_params(CASES, SKIPPED))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording = load(case.cassette, interactions=[case.interaction])
    assert recording.interactions[0].uri == URL
    request = decoded_request(case.body(), _deployment(recording.recorded_requests[0]["model"]))
    provider = CohereProvider(session)
    await check_case(case, recording, provider.prepare(request), provider.run(request),
                     headers={"Authorization": f"Bearer {API_KEY}"}, pieces=2 if request.stream else 0)


def test_every_recorded_interaction_is_accounted_for() -> None:
    assert_accounted_for(CASES, SKIPPED, recorded_ids(DIR))


# -- request translation without a recording ---------------------------------------------------
def _prepare(body: dict[str, Any], *, items: list[Item] | None = None, tools: list[Any] | None = None,
             tool_choice: Any = None) -> dict[str, Any]:
    prepared = offline(CohereProvider, decoded_request({"model": "team-model", **body}, _deployment("command-a")),
                       items=items, tools=tools, tool_choice=tool_choice)
    assert prepared.url == URL
    return prepared.body


def test_assistant_turns_group_reasoning_text_and_calls() -> None:
    body = {"instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": "Answer in French."},
        user([{"type": "input_text", "text": "look"},
              {"type": "input_image", "image_url": "https://example.test/a.png", "detail": "low"}]),
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "raw thought"}]},
        {"type": "message", "role": "assistant", "phase": "commentary", "content": "Checking."},
        call("c1", "a", "{}"), call("c2", "b", '{"x":1}'),
        fco("c1", "one"), fco("c2", [{"type": "input_text", "text": "two"}]),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "only a summary"}]},
        assistant([{"type": "output_text", "text": "Done"}, {"type": "output_text", "text": "."}]),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "dropped: nothing follows"}]},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Late rule."}]}]}
    assert _prepare(body)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {
            "url": "https://example.test/a.png", "detail": "low"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "raw thought"}], "tool_plan": "Checking.",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                        {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "only a summary"},
                                          {"type": "text", "text": "Done."}]},
        {"role": "system", "content": [{"type": "text", "text": "Late rule."}]}]


def test_text_after_calls_starts_a_new_assistant_turn() -> None:
    body = {"input": [user("q"), call("c1", "a", "{}"), assistant("between"), call("c2", "b", "{}")]}
    assert _prepare(body)["messages"][1:] == [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a",
                                                                                          "arguments": "{}"}}]},
        {"role": "assistant", "tool_plan": "between", "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}]


@pytest.mark.parametrize(("items", "param", "words"), [
    ([Message(role="user", content="hi"), OpaqueItem({"type": "web_search_call", "id": "ws_1"})],
     "input[1]", "'web_search_call'"),
    ([Compaction(encrypted_content="abc")], "input[0]", "'compaction'"),
    ([Message(role="user", content=[InputImage(file_id="file_1")])], "input[0].content[0]", "file_id"),
], ids=["opaque-item", "compaction", "image-file-id"])
def test_unsupported_items_are_refused_with_their_position(items: list[Item], param: str, words: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, items=items)
    assert (caught.value.param, caught.value.status) == (param, 400)
    assert words in caught.value.message


@pytest.mark.parametrize(("content", "param"), [
    (user([{"type": "input_file", "file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"}]),
     "input[0].content[0]"),
    ({"type": "message", "role": "system", "content": [{"type": "input_image", "image_url": "https://x.test/a.png"}]},
     "input[0].content[0]"),
    (assistant([{"type": "input_image", "image_url": "https://x.test/a.png"}]), "input[0].content[0]"),
    (fco("c1", [{"type": "input_image", "image_url": "https://x.test/a.png"}]), "input[0].output[0]"),
], ids=["file", "image-in-system", "image-in-assistant", "image-in-tool-output"])
def test_unsupported_parts_are_refused(content: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": [content]})
    assert caught.value.param == param


def test_tool_choice_narrows_the_tools_cohere_cannot_name() -> None:
    tools = [{"type": "function", "name": "a", "strict": True, "parameters": {"type": "object"}},
             {"type": "function", "name": "b", "description": "B"}]
    a = {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}
    b = {"type": "function", "function": {"name": "b", "description": "B"}}
    auto = _prepare({"input": "x", "tools": tools, "tool_choice": "auto"})
    assert (auto["tools"], auto["strict_tools"], "tool_choice" in auto) == ([a, b], True, False)
    assert _prepare({"input": "x", "tools": tools, "tool_choice": "none"})["tool_choice"] == "NONE"
    named = _prepare({"input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "b"}})
    assert (named["tools"], named["tool_choice"], "strict_tools" in named) == ([b], "REQUIRED", False)
    for mode, expected in (("required", "REQUIRED"), ("none", "NONE"), ("auto", None)):
        allowed = _prepare({"input": "x", "tools": tools, "tool_choice": {
            "type": "allowed_tools", "mode": mode, "tools": [{"type": "function", "name": "a"}]}})
        assert (allowed["tools"], allowed.get("tool_choice")) == ([a], expected)


def test_non_function_tools_and_tool_choices_are_refused() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[OpaqueItem({"type": "web_search"})])
    assert caught.value.param == "tools[0]"
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[], tool_choice=OpaqueItem({"type": "file_search"}))
    assert caught.value.param == "tool_choice"


def test_parameters_mapping() -> None:
    body = _prepare({"input": "x", "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9,
                     "presence_penalty": 0.5, "frequency_penalty": 0.25, "reasoning": {"effort": "low"},
                     "text": {"format": {"type": "json_schema", "name": "w", "strict": True,
                                         "schema": {"type": "object"}}, "verbosity": "low"},
                     "metadata": {"a": "b"}, "store": True, "service_tier": "flex", "safety_identifier": "u",
                     "prompt_cache_key": "k", "truncation": "auto", "parallel_tool_calls": False})
    assert body == {"model": "command-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 64,
                    "temperature": 0.2, "p": 0.9, "presence_penalty": 0.5, "frequency_penalty": 0.25,
                    "thinking": {"type": "enabled", "token_budget": 2048},
                    "response_format": {"type": "json_object", "json_schema": {"type": "object"}}, "stream": False}


@pytest.mark.parametrize(("reasoning", "fmt", "thinking", "response_format"), [
    ({"effort": "none"}, {"type": "json_object"}, {"type": "disabled"}, {"type": "json_object"}),
    ({"effort": "high"}, {"type": "json_schema", "name": "n"}, {"type": "enabled"}, {"type": "json_object"}),
    ({"summary": "auto"}, {"type": "text"}, None, None),
])
def test_thinking_and_response_format(reasoning: dict[str, Any], fmt: dict[str, Any], thinking: Any,
                                      response_format: Any) -> None:
    body = _prepare({"input": "x", "reasoning": reasoning, "text": {"format": fmt}})
    assert (body.get("thinking"), body.get("response_format")) == (thinking, response_format)


def test_top_logprobs_is_refused() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", "top_logprobs": 2})
    assert caught.value.param == "top_logprobs"
    assert "top_logprobs" not in _prepare({"input": "x", "top_logprobs": 0})


# -- replies without a recording (synthetic interactions) --------------------------------------
def _sse(*events: dict[str, Any], done: bool = True) -> bytes:
    frames = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]
    return ("".join(frames) + ("data: [DONE]\n\n" if done else "")).encode()


def _end(reason: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"finish_reason": reason}
    if usage is not None:
        delta["usage"] = usage
    return {"type": "message-end", "delta": delta}


def _content(kind: str, index: int, value: str) -> list[dict[str, Any]]:
    return [{"type": "content-start", "index": index, "delta": {"message": {"content": {"type": kind, kind: ""}}}},
            {"type": "content-delta", "index": index, "delta": {"message": {"content": {kind: value}}}},
            {"type": "content-end", "index": index}]


def _tool_call(index: int, call_id: str, name: str, *fragments: str) -> list[dict[str, Any]]:
    start = {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return [{"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": start}}},
            *({"type": "tool-call-delta", "index": index,
               "delta": {"message": {"tool_calls": {"function": {"arguments": f}}}}} for f in fragments),
            {"type": "tool-call-end", "index": index}]


async def _run_synthetic(session: aiohttp.ClientSession, interaction: Interaction, *, stream: bool = True,
                         **body: Any) -> list[Delta]:
    request = decoded_request({"model": "team-model", "input": "x", "stream": stream, **body},
                              _deployment("command-a"))
    return await replayed(CohereProvider(session).run(request), interaction)


async def test_stream_with_thinking_plan_calls_and_citations(session: aiohttp.ClientSession) -> None:
    usage = {"billed_units": {"input_tokens": 5, "output_tokens": 7}, "tokens": {"input_tokens": 50,
                                                                                  "output_tokens": 70}}
    body = _sse({"type": "message-start", "id": "m1", "delta": {"message": {"role": "assistant"}}},
                *_content("thinking", 0, "hmm"),
                {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will "}}},
                {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "call a."}}},
                *_tool_call(0, "a_1", "a", '{"x":', "1}"), *_tool_call(1, "b_1", "b"),
                {"type": "citation-start", "index": 0, "delta": {"message": {"citations": {"start": 0}}}},
                {"type": "citation-end", "index": 0}, _end("TOOL_CALL", usage))
    builder, events = build(await _run_synthetic(session, Interaction.make(URL, body=body)))
    assert summary(builder.resource) == [thought("hmm"), text("I will call a.", "commentary"),
                                         call("a_1", "a", '{"x":1}'), call("b_1", "b", "{}")]
    assert usage_tuple(builder.resource) == (50, 0, 70, 0, 120)
    validate_stream([to_json(event) for event in events])
    assert [event.delta for event in events if isinstance(event, ev.FunctionCallArgumentsDelta)] == ['{"x":', "1}"]


@pytest.mark.parametrize("stream", [True, False])
async def test_parallel_tool_calls_false_keeps_the_first_call(session: aiohttp.ClientSession, stream: bool) -> None:
    if stream:
        body = _sse(*_tool_call(0, "a_1", "a", "{}"), *_tool_call(1, "b_1", "b", "{}"), _end("TOOL_CALL"))
    else:
        body = json.dumps({"finish_reason": "TOOL_CALL", "message": {"role": "assistant", "tool_calls": [
            {"id": "a_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "b_1", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}}).encode()
    deltas = await _run_synthetic(session, Interaction.make(URL, body=body), stream=stream, parallel_tool_calls=False)
    assert summary(build(deltas)[0].resource) == [call("a_1", "a", "{}")]


async def test_whole_reply_with_thinking_and_max_tokens(session: aiohttp.ClientSession) -> None:
    body = {"finish_reason": "MAX_TOKENS", "message": {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "deep"}, {"type": "text", "text": "cut"}]},
        "usage": {"billed_units": {"input_tokens": 1, "output_tokens": 2}}}
    builder, _ = build(await _run_synthetic(session, Interaction.make(URL, body=body), stream=False))
    assert summary(builder.resource) == [thought("deep"), text("cut")]
    assert (builder.resource.status, usage_tuple(builder.resource)) == ("incomplete", (1, 0, 2, 0, 3))


@pytest.mark.parametrize(("reason", "error"), [("ERROR", UpstreamError), ("TIMEOUT", UpstreamTimeout)])
@pytest.mark.parametrize("stream", [True, False])
async def test_failed_finish_reasons_are_upstream_errors(session: aiohttp.ClientSession, reason: str,
                                                         error: type[GatewayError], stream: bool) -> None:
    if stream:
        body = _sse(*_content("text", 0, "partial"), _end(reason))
    else:
        body = json.dumps({"finish_reason": reason, "message": {"content": [{"type": "text", "text": "x"}]}}).encode()
    with pytest.raises(GatewayError) as caught:
        await _run_synthetic(session, Interaction.make(URL, body=body), stream=stream)
    assert type(caught.value) is error
    assert reason in caught.value.message and caught.value.retryable


@pytest.mark.parametrize(("body", "words"), [
    (_sse(*_content("text", 0, "cut"), done=False), "ended early"),
    (b"event: message-start\ndata: [1]\n\n", "unexpected stream event"),
    (_sse({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {
        "arguments": "{}"}}}}}, _end("TOOL_CALL")), "arguments before the call started"),
], ids=["no-message-end", "not-an-object", "arguments-before-start"])
async def test_broken_streams_fail(session: aiohttp.ClientSession, body: bytes, words: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        await _run_synthetic(session, Interaction.make(URL, body=body))
    assert words in caught.value.message


@pytest.mark.parametrize(("status", "headers", "error", "code", "param"), [
    (400, {}, InvalidRequest, "invalid_request", None),
    (401, {}, UpstreamError, "upstream_auth_failed", None),
    (404, {}, InvalidRequest, "model_not_found", "model"),
    (422, {}, InvalidRequest, "invalid_request", None),
    (429, {"retry-after": "3"}, RateLimited, "rate_limit_exceeded", None),
    (500, {}, UpstreamError, "upstream_error", None),
    (503, {}, UpstreamUnavailable, "upstream_unavailable", None),
])
async def test_error_statuses_are_mapped(session: aiohttp.ClientSession, status: int, headers: dict[str, str],
                                         error: type[GatewayError], code: str, param: str | None) -> None:
    reply = Interaction.make(URL, status=status, headers={"Content-Type": "application/json", **headers},
                             body={"id": "e1", "message": f"cohere says no (key {API_KEY})"})
    with pytest.raises(GatewayError) as caught:
        await _run_synthetic(session, reply, stream=False)
    assert (type(caught.value), caught.value.code, caught.value.param) == (error, code, param)
    assert "cohere says no" in caught.value.message and API_KEY not in caught.value.message
    assert caught.value.retry_after == (3.0 if headers else None)


def test_decoder_ignores_unknown_events_and_needs_message_end() -> None:
    decoder = CohereStreamDecoder("cohere", no_error)
    assert decoder.feed("debug", b'{"type": "debug", "delta": {"message": {"content": {"text": "no"}}}}') == []
    assert decoder.feed("content-delta", b'{"type": "content-delta", "index": 0}') == []
    with pytest.raises(UpstreamError, match="ended early"):
        decoder.close()


# -- against the simulator's Cohere dialect ----------------------------------------------------
@pytest.mark.parametrize("fault", [None, "trickle"])
async def test_simulator_stream_and_whole_reply_agree(session: aiohttp.ClientSession, fault: str | None) -> None:
    simulator = await start_simulator()
    try:
        headers = {"x-sim-trickle-delay-ms": "0", **({"x-sim-fault": fault} if fault else {})}
        deployment = _deployment("sim-model", base_url=simulator.url + "/v2", headers=headers)
        provider = CohereProvider(session)
        replies = []
        for stream in (False, True):
            body = {"model": "team-model", "input": "Weather in Oslo", "tools": [PARIS_WEATHER], "stream": stream}
            deltas = await collect(provider.run(decoded_request(body, deployment)))
            replies.append(build(deltas)[0].resource)
    finally:
        await simulator.close()
    whole, streamed = (summary(resource) for resource in replies)
    assert [item["type"] for item in whole] == ["message", "function_call"]
    assert [{k: v for k, v in item.items() if k != "call_id"} for item in whole] == \
        [{k: v for k, v in item.items() if k != "call_id"} for item in streamed]
    assert whole[1]["arguments"] == '{"city":"Oslo"}' and whole[0]["phase"] == "commentary"
    assert usage_tuple(replies[0]) == usage_tuple(replies[1])


@pytest.mark.parametrize(("body", "words"), [
    ({"tool_choice": "required"}, "tool_choice must be one of"),
    ({"messages": [{"role": "developer", "content": "x"}]}, "unknown role"),
    ({"messages": []}, "non-empty list"),
    ({"response_format": {"type": "json_schema"}}, "invalid response_format"),
], ids=["lowercase-tool-choice", "developer-role", "no-messages", "openai-response-format"])
async def test_simulator_refuses_what_cohere_refuses(session: aiohttp.ClientSession, body: dict[str, Any],
                                                    words: str) -> None:
    simulator = await start_simulator()
    try:
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
        async with session.post(simulator.url + "/v2/chat", json=request) as reply:
            status, error = reply.status, await reply.json()
    finally:
        await simulator.close()
    assert status == 400 and set(error) == {"id", "message"} and words in error["message"]
