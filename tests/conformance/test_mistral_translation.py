"""Mistral through the Chat Completions dialect (``providers.openai_chat``) and catalogue quirks.

Mistral has no adapter of its own: a ``Deployment`` with dialect ``openai_chat`` and the quirks in
``MISTRAL`` below (what a catalogue entry for ``https://api.mistral.ai/v1`` sets) must reproduce
what the recorded clients sent and normalise what Mistral answered. Every interaction of every
cassette in ``mistral/`` is either a ``Case`` or listed in ``SKIPPED`` with its reason. For each
case:

1. ``prepare()`` must produce the recorded request body, up to the ``Difference``s the case
   names: each says where, what the recording holds, what the adapter sends instead (or that one
   side has nothing there), and why; each must match something;
2. ``run()`` replays the interaction: aiohttp must send the prepared URL and body with the
   deployment's bearer key;
3. the deltas go through ``ResponseBuilder``; items, call ids, usage, status and upstream model
   must equal what the recorded reply says (read by hand: long texts as prefix, suffix, length),
   and the resource and every event must validate against the Open Responses schemas.

The tests after the cases cover what no recording shows: foreign tool-call ids, reasoning sent
back as thinking chunks, tool-choice forms, effort spelling and Mistral's error bodies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest

from providers.openai_chat import OpenAIChatProvider
from proxy.errors import GatewayError, InvalidRequest, RateLimited, UnsupportedFeature, UpstreamError
from proxy.schema.deltas import Delta
from proxy.schema.upstream import Deployment, Quirks
from tests.conformance._cases import (
    ALIAS,
    API_KEY,
    Case,
    Long,
    Normalisation,
    Outcome,
    assert_accounted_for,
    build,
    call,
    case_params,
    check_case,
    converted_request,
    fc,
    fco,
    offline,
    recorded,
    recorded_ids,
    replayed,
    summary,
    text,
    thought,
    to_json,
    user,
)
from tests.conformance.cassette import Interaction, load
from tests.spec_validation import validate_stream

DIR = "mistral"
BASE_URL = "https://api.mistral.ai/v1"
URL = BASE_URL + "/chat/completions"

MISTRAL: dict[str, Any] = {
    "developer_role": False,
    "max_tokens_field": "max_tokens",
    "stream_usage": False,
    "reasoning_effort_map": {"minimal": "none", "low": "high", "medium": "high", "xhigh": "high"},
    "tool_call_ids": "alnum9",
    "tool_choice_required": "any",
    "allowed_tools": "subset",
    "thinking_history": True,
}
"""The quirks of the catalogue's Mistral entry; every test here runs with them."""


# -- documented request differences -----------------------------------------------------------
class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Difference(Normalisation):
    """Where the adapter's body differs from the recorded one, and why. ``path`` is dotted (list
    positions as numbers, ``*`` for every element); ``recorded`` is the value the recording holds
    there and ``sent`` the adapter's, either being ``ABSENT`` when that side has no such key."""

    path: str
    why: str
    recorded: Any = ABSENT
    sent: Any = ABSENT

    def _at(self, node: Any, key: str) -> int:
        """Rewrite the recorded ``node[key]`` to what the adapter sends."""
        if not isinstance(node, dict):
            return 0
        if (key in node) == (self.recorded is ABSENT) or node.get(key, ABSENT) != self.recorded:
            return 0
        if self.sent is ABSENT:
            del node[key]
        else:
            node[key] = self.sent
        return 1


N_ONE = Difference("n", "pydantic-ai sends n:1; the adapter never sends n (one choice is the default)", recorded=1)
STREAM_FALSE = Difference("stream", "pydantic-ai and the SDK send stream:false; the adapter leaves the default out",
                          recorded=False)
NULL_PARAMS = tuple(Difference(name, "pydantic-ai sends unset parameters as null; the adapter leaves them out",
                               recorded=None) for name in ("frequency_penalty", "presence_penalty", "stop"))
PREFIX = Difference("messages.*.prefix", "the SDK's default on assistant messages (prefix:true marks a prefill, "
                    "which Responses cannot express)", recorded=False)
NO_CALLS = Difference("messages.*.tool_calls", "pydantic-ai sends an empty tool_calls list beside assistant text",
                      recorded=[])
EMPTY_CONTENT = Difference("messages.*.content", "pydantic-ai sends empty content beside tool_calls; the adapter "
                           "leaves content out", recorded=[])
CALL_INDEX = Difference("messages.*.tool_calls.*.index", "pydantic-ai copies the reply's index into the history's "
                        "tool calls; Mistral does not need it", recorded=0)
TOOL_TYPE = Difference("tools.*.type", "Mistral's tool type defaults to function and the SDK leaves it out; the "
                       "adapter states it as Chat Completions does", sent="function")


def text_chunks(position: int, value: str) -> Difference:
    return Difference(f"messages.{position}.content", "pydantic-ai sends assistant text as a list of text chunks; "
                      "the adapter sends the same text as a string (Mistral takes both)",
                      recorded=[{"text": value, "type": "text"}], sent=value)


# -- the vocabulary of cases -------------------------------------------------------------------
def assistant(value: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": value}]}


def weather_tool(description: str, *, closed: bool) -> dict[str, Any]:
    parameters: dict[str, Any] = {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}
    if closed:
        parameters["additionalProperties"] = False
    return {"type": "function", "name": "get_weather", "description": description, "parameters": parameters}


CURRENT_WEATHER = weather_tool("Get the current weather for a city.", closed=True)
FINAL_RESULT = {"type": "function", "name": "final_result", "description": "The final response which ends this "
                "conversation", "parameters": {"properties": {"city": {"type": "string"},
                                                              "summary": {"type": "string"}},
                                               "required": ["city", "summary"], "title": "CityInfo", "type": "object"}}
GET_FILE = {"type": "function", "name": "get_file", "description": "",
            "parameters": {"additionalProperties": False, "properties": {}, "type": "object"}}
WEATHER_PROMPT = "What's the weather in Paris?"
FILE_PROMPT = "Use the get_file tool now to retrieve a image file, then describe what you received."
CACHE_KEY = "pydantic-ai-test-mistral-history-cache"
PARIS = '{"city": "Paris"}'
SUMMARY = ('{"city": "Paris", "summary": "The current weather in Paris is sunny with a temperature of 22 degrees '
           "Celsius. It's a pleasant day!\"}")
LARGE, MEDIUM, TINY, MAGISTRAL = ("mistral-large-latest", "mistral-medium-latest", "mistral-tiny",
                                  "magistral-medium-latest")


def cache_request(*history: dict[str, Any]) -> dict[str, Any]:
    return {"model": ALIAS, "instructions": recorded(f"{DIR}/prompt-cache-history.yaml", 0, "messages", 0, "content"),
            "input": [user("Reply with exactly: cache probe one."), *history], "top_p": 1.0,
            "prompt_cache_key": CACHE_KEY}


def river_request() -> dict[str, Any]:
    """thinking #1: the client replays what OpenAI (#0) answered (a reasoning item with its
    encrypted content and summary, then a message) into a Mistral conversation."""
    answer = load(f"{DIR}/thinking.yaml", interactions=[0]).interactions[0].response_json()
    return {"model": ALIAS, "top_p": 1.0, "input": [
        user("How do I cross the street?"), *answer["output"],
        user("Considering the way to cross the street, analogously, how do I cross the river?")]}


def image_request() -> dict[str, Any]:
    """tool-result-with-image #1: pydantic-ai sends the tool's image as a user message after the
    tool's text result (a Chat tool message takes text only); the Responses input says the same."""
    return {"model": ALIAS, "tool_choice": "auto", "tools": [GET_FILE], "top_p": 1.0, "input": [
        user(FILE_PROMPT), fc("6IgxW8LfZ", "get_file", "{}"), fco("6IgxW8LfZ", "See file 6a18c6."), assistant("OK"),
        user([{"type": "input_text", "text": "This is file 6a18c6:"},
              {"type": "input_image", "image_url": "https://www.gstatic.com/webp/gallery3/1.png"}])]}


ASK_WEATHER = (user(WEATHER_PROMPT),)
CASES: list[Case] = [
    Case("penalties", "penalties.yaml", 0,
         {"model": ALIAS, "input": "hello", "frequency_penalty": 0.25, "presence_penalty": 0.5, "top_p": 1.0},
         Outcome([text("Hello! \U0001F60A How can I assist you today? Whether you have a question, need help with "
                       "something, or just want to chat, I'm here for you!")], (4, 0, 36, 0, 40), LARGE),
         (N_ONE, STREAM_FALSE)),
    Case("prompt-cache-first", "prompt-cache-history.yaml", 0, cache_request(),
         Outcome([text("cache probe one.")], (253, 0, 5, 0, 258), LARGE), (N_ONE, STREAM_FALSE, *NULL_PARAMS)),
    Case("prompt-cache-history", "prompt-cache-history.yaml", 1,
         cache_request(assistant("cache probe one."), user("Reply with exactly: cache probe two.")),
         Outcome([text("cache probe two.")], (268, 224, 5, 0, 273), LARGE),
         (N_ONE, STREAM_FALSE, *NULL_PARAMS, PREFIX, NO_CALLS, text_chunks(2, "cache probe one."))),
    Case("text-nonstream", "text-nonstream.yaml", 0,
         {"model": ALIAS, "input": "Tell me a joke about OpenTelemetry"},
         Outcome([text(Long("Here's a light-hearted, tech-themed joke related t",
                            " and spread some positivity amidst the tech talk.)", 375))], (11, 0, 96, 0, 107), TINY),
         (STREAM_FALSE,)),
    Case("text-stream", "text-stream.yaml", 0,
         {"model": ALIAS, "input": "Tell me a joke about OpenTelemetry", "stream": True},
         Outcome([text(Long("Here's a light-hearted joke that combines OpenTele",
                            "hit it! (I hope this brings a smile to your face.)", 297))], (11, 0, 80, 0, 91), TINY)),
    Case("thinking-stream", "thinking-stream.yaml", 0,
         {"model": ALIAS, "input": "How do I cross the street?", "stream": True},
         Outcome([thought(Long("Okay, the user is asking how to cross the street. ",
                               "his information into a clear and concise response.", 421)),
                  text(Long("To cross the street safely, follow these steps:\n\n1",
                            "owing these steps, you can ensure a safe crossing.", 607))],
                 (10, 0, 232, 0, 242), MAGISTRAL)),
    Case("thinking-history", "thinking.yaml", 1, river_request,
         Outcome([thought(Long("**Analogizing crossing a river**\n\nThe user is aski",
                               " assistance if you're unsure about the conditions.", 2379)),
                  text(Long("Crossing a river is quite different from crossing ",
                            "th the area and the river's conditions. Stay safe!", 1282))],
                 (664, 0, 747, 0, 1411), MAGISTRAL),
         (N_ONE, STREAM_FALSE, PREFIX, NO_CALLS)),
    Case("tool-choice-any", "tool-choice-any.yaml", 0,
         {"model": ALIAS, "input": [*ASK_WEATHER], "tool_choice": "required", "top_p": 1.0,
          "tools": [weather_tool("Get weather for a city", closed=False)]},
         Outcome([call("pcZFHqej8", "get_weather", PARIS)], (70, 69, 12, 0, 82), LARGE),
         (N_ONE, STREAM_FALSE, TOOL_TYPE)),
    Case("tool-choice-none", "tool-choice-none.yaml", 0,
         {"model": ALIAS, "input": [*ASK_WEATHER], "tool_choice": "none", "tools": [CURRENT_WEATHER], "top_p": 1.0},
         Outcome([text(Long("To check the current weather in **Paris, France**,",
                            "ke help with a specific date or travel planning? \U0001F60A", 835))],
                 (10, 9, 224, 0, 234), LARGE),
         (N_ONE, STREAM_FALSE,
          Difference("tools", "pydantic-ai leaves the tools out when tool_choice is none; the adapter sends them "
                     "with tool_choice none, which Mistral accepts", sent=[{"type": "function", "function": {
                         k: v for k, v in CURRENT_WEATHER.items() if k != "type"}}]),
          Difference("tool_choice", "see tools", sent="none"))),
    Case("tool-result-image-call", "tool-result-with-image.yaml", 0,
         {"model": ALIAS, "input": [user(FILE_PROMPT)], "tool_choice": "auto", "tools": [GET_FILE], "top_p": 1.0},
         Outcome([call("6IgxW8LfZ", "get_file", "{}")], (64, 0, 6, 0, 70), MEDIUM),
         (N_ONE, STREAM_FALSE, TOOL_TYPE)),
    Case("tool-result-image-answer", "tool-result-with-image.yaml", 1, image_request,
         Outcome([text(Long("The image shows a beautiful rose in the process of",
                            "ves. The overall appearance is serene and elegant.", 490))],
                 (273, 32, 104, 0, 377), MEDIUM),
         (N_ONE, STREAM_FALSE, TOOL_TYPE, EMPTY_CONTENT, PREFIX, CALL_INDEX, text_chunks(3, "OK"),
          Difference("messages.4.content.1.image_url.detail", "the adapter sends the Responses default detail; "
                     "Mistral's image_url takes an optional detail", sent="auto"))),
    Case("tool-roundtrip-call", "tool-roundtrip.yaml", 0,
         {"model": ALIAS, "input": [*ASK_WEATHER], "tool_choice": "auto", "tools": [CURRENT_WEATHER], "top_p": 1.0},
         Outcome([call("KikbB849t", "get_weather", PARIS)], (77, 76, 12, 0, 89), LARGE),
         (N_ONE, STREAM_FALSE, TOOL_TYPE)),
    Case("tool-roundtrip-result", "tool-roundtrip.yaml", 1,
         {"model": ALIAS, "tool_choice": "auto", "tools": [CURRENT_WEATHER], "top_p": 1.0, "input": [
             *ASK_WEATHER, fc("KikbB849t", "get_weather", PARIS), fco("KikbB849t", "Sunny, 22C in Paris")]},
         Outcome([text("The current weather in **Paris** is **sunny** with a temperature of **22°C**. Enjoy your "
                       "day! \U0001F60A")], (100, 99, 29, 0, 129), LARGE),
         (N_ONE, STREAM_FALSE, TOOL_TYPE, EMPTY_CONTENT, PREFIX, CALL_INDEX)),
    Case("tools-plus-output-call", "tools-plus-output-tool.yaml", 0,
         {"model": ALIAS, "input": [user("Get weather for Paris and summarize")], "tool_choice": "required",
          "tools": [CURRENT_WEATHER, FINAL_RESULT], "top_p": 1.0},
         Outcome([call("rHU0eZiMa", "get_weather", PARIS)], (152, 151, 12, 0, 164), LARGE),
         (N_ONE, STREAM_FALSE, TOOL_TYPE)),
    Case("tools-plus-output-result", "tools-plus-output-tool.yaml", 1,
         {"model": ALIAS, "tool_choice": "required", "tools": [CURRENT_WEATHER, FINAL_RESULT], "top_p": 1.0,
          "input": [user("Get weather for Paris and summarize"), fc("rHU0eZiMa", "get_weather", PARIS),
                    fco("rHU0eZiMa", "Sunny, 22C in Paris")]},
         Outcome([call("tfn2AP3zy", "final_result", SUMMARY)], (175, 174, 39, 0, 214), LARGE),
         (N_ONE, STREAM_FALSE, TOOL_TYPE, EMPTY_CONTENT, PREFIX, CALL_INDEX)),
]

# Interactions not replayed as cases, with the reason (each becomes a skipped test).
SKIPPED: dict[tuple[str, int], str] = {
    ("thinking.yaml", 0): "not Mistral traffic: the OpenAI /v1/responses call whose reasoning and answer #1 replays "
                          "into a Mistral conversation (the openai_responses dialect, not openai_chat)",
}


# -- helpers -----------------------------------------------------------------------------------
def _deployment(model: str = "mistral-large-latest", **quirks: Any) -> Deployment:
    return Deployment(name="mistral", provider="mistral", dialect="openai_chat", base_url=BASE_URL, model=model,
                      api_key=API_KEY, quirks=msgspec.convert({**MISTRAL, **quirks}, Quirks))


def _prepare(body: dict[str, Any], **quirks: Any) -> dict[str, Any]:
    prepared = offline(OpenAIChatProvider, converted_request({"model": ALIAS, **body}, _deployment(**quirks)))
    assert prepared.url == URL
    return prepared.body


# -- the recorded cases ------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CASES, SKIPPED, lambda cassette: f"{DIR}/{cassette}"))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording = load(f"{DIR}/{case.cassette}", interactions=[case.interaction])
    assert recording.interactions[0].uri.split("#")[0] == URL
    request = converted_request(case.body(), _deployment(recording.recorded_requests[0]["model"]))
    provider = OpenAIChatProvider(session)
    _, deltas = await check_case(case, recording, provider.prepare(request), provider.run(request), url=URL,
                                 headers={"Authorization": f"Bearer {API_KEY}"}, pieces=3 if request.stream else 0)
    assert isinstance(case.expect, Outcome) and isinstance(deltas, list)
    terminal = to_json(build(deltas)[1][-1])
    assert terminal["response"]["output"] and terminal["response"]["model"] == ALIAS


def test_every_recorded_interaction_is_accounted_for() -> None:
    recorded_interactions = recorded_ids(DIR, lambda path: path.name)
    assert len({name for name, _ in recorded_interactions}) == 11
    assert_accounted_for(CASES, SKIPPED, recorded_interactions)


# -- tool-call ids -----------------------------------------------------------------------------
FOREIGN = ("call_v6LacIrChvs6ITVpIZqy5tFc", "toolu_01A09q90qw90lq917835lq9")
HISTORY = [user(WEATHER_PROMPT), fc(FOREIGN[0], "get_weather", PARIS), fc(FOREIGN[1], "get_weather", PARIS),
           fc("KikbB849t", "get_weather", PARIS), fco(FOREIGN[0], "Sunny"), fco(FOREIGN[1], "Rain"),
           fco("KikbB849t", "Fog")]


def _ids(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    calls = [tool_call["id"] for message in messages for tool_call in message.get("tool_calls", ())]
    outputs = [message["tool_call_id"] for message in messages if message["role"] == "tool"]
    return calls, outputs


def test_foreign_call_ids_become_stable_nine_character_ids() -> None:
    calls, outputs = _ids(_prepare({"input": HISTORY})["messages"])
    assert calls == outputs
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", call_id) for call_id in calls), calls
    assert calls[2] == "KikbB849t"  # Mistral's own ids pass unchanged
    assert len(set(calls)) == 3 and not set(FOREIGN) & set(calls)
    assert _ids(_prepare({"input": HISTORY[:2] + HISTORY[4:5]})["messages"])[0] == calls[:1]  # same id next turn
    assert _ids(_prepare({"input": HISTORY}, tool_call_ids="any")["messages"])[0] == [*FOREIGN, "KikbB849t"]


# -- reasoning history -------------------------------------------------------------------------
def _reasoning(*summary: str, content: tuple[str, ...] = ()) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "summary": [{"type": "summary_text", "text": s} for s in summary]}
    if content:
        item["content"] = [{"type": "reasoning_text", "text": c} for c in content]
    return item


def test_reasoning_goes_back_as_thinking_chunks_of_the_next_assistant_turn() -> None:
    body = {"input": [
        user("q1"), _reasoning("summary", content=("raw thought",)), fc("KikbB849t", "get_weather", PARIS),
        fco("KikbB849t", "Sunny"), _reasoning("first", "second"), _reasoning(), assistant(""),
        _reasoning("orphan"), user("q2"), assistant("a2")]}
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "raw thought"}]}
    summaries = {"type": "thinking", "thinking": [{"type": "text", "text": t} for t in ("first", "second")]}
    assert _prepare(body)["messages"] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": [thinking], "tool_calls": [
            {"id": "KikbB849t", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}}]},
        {"role": "tool", "tool_call_id": "KikbB849t", "content": "Sunny"},
        {"role": "assistant", "content": [summaries]},
        {"role": "user", "content": "q2"},  # reasoning a user turn follows has no assistant turn to join
        {"role": "assistant", "content": "a2"}]
    assert [m.get("content") for m in _prepare(body, thinking_history=False)["messages"]] == [
        "q1", None, "Sunny", "", "q2", "a2"]


# -- tool choice and reasoning effort ----------------------------------------------------------
@pytest.mark.parametrize(("choice", "tools", "wire"), [
    ("required", ["get_weather", "final_result"], "any"),
    ("none", ["get_weather", "final_result"], "none"),
    ({"type": "function", "name": "final_result"}, ["get_weather", "final_result"],
     {"type": "function", "function": {"name": "final_result"}}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "final_result"}]},
     ["final_result"], "any"),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_weather"}]},
     ["get_weather"], "auto"),
], ids=["required", "none", "function", "allowed-required", "allowed-auto"])
def test_tool_choice_forms(choice: Any, tools: list[str], wire: Any) -> None:
    body = _prepare({"input": "x", "tools": [CURRENT_WEATHER, FINAL_RESULT], "tool_choice": choice})
    assert [tool["function"]["name"] for tool in body["tools"]] == tools
    assert body["tool_choice"] == wire


@pytest.mark.parametrize(("effort", "wire"), [("none", "none"), ("minimal", "none"), ("low", "high"),
                                              ("medium", "high"), ("high", "high"), ("xhigh", "high")])
def test_reasoning_effort_takes_mistral_spelling(effort: str, wire: str) -> None:
    body = _prepare({"input": "x", "reasoning": {"effort": effort}, "max_output_tokens": 64})
    assert (body["reasoning_effort"], body["max_tokens"]) == (wire, 64)


def test_tool_output_with_an_image_is_refused_by_position() -> None:
    output = [{"type": "input_text", "text": "See"}, {"type": "input_image", "image_url": "https://example.test/a.png"}]
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": [user("q"), fc("KikbB849t", "get_file", "{}"), fco("KikbB849t", output)]})
    assert caught.value.param == "input[2].output[1]"
    assert "input_image content parts are not supported in tool outputs" in caught.value.message


# -- replies and errors without a recording ----------------------------------------------------
async def _run(session: aiohttp.ClientSession, interaction: Interaction, stream: bool = False) -> list[Delta]:
    request = converted_request({"model": ALIAS, "input": "x", "stream": stream}, _deployment())
    return await replayed(OpenAIChatProvider(session).run(request), interaction)


async def test_thinking_and_text_chunks_in_one_reply_keep_their_order(session: aiohttp.ClientSession) -> None:
    content = [{"type": "thinking", "thinking": "plain-string thought"}, {"type": "text", "text": "Answer"}]
    stream = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in [
        {"model": "m", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "late"}]}]}, "finish_reason": "stop"}]}])
    builder, events = build(await _run(session, Interaction.make(URL, body=stream + "data: [DONE]\n\n"), True))
    assert summary(builder.resource) == [thought("plain-string thought"), text("Answer"), thought("late")]
    validate_stream([to_json(event) for event in events])
    reply = {"model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": content}}]}
    builder, _ = build(await _run(session, Interaction.make(URL, body=reply)))
    assert summary(builder.resource) == [thought("plain-string thought"), text("Answer")]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_finish_reason_error_fails_the_turn(session: aiohttp.ClientSession, stream: bool) -> None:
    choice = {"index": 0, "finish_reason": "error"}
    body: Any = (f"data: {json.dumps({'choices': [{**choice, 'delta': {'content': 'partial'}}]})}\n\n"
                 "data: [DONE]\n\n" if stream else {"choices": [{**choice, "message": {"content": "partial"}}]})
    with pytest.raises(UpstreamError, match="finish_reason 'error'"):
        await _run(session, Interaction.make(URL, body=body), stream)


@pytest.mark.parametrize("body", [
    {"object": "error", "message": {"detail": [
        {"type": "extra_forbidden", "loc": ["body", "safety_identifier"], "msg": "Extra inputs are not permitted",
         "input": "user-secret-1"},
        {"type": "missing", "loc": ["body", "messages", 0, "user", "content"], "msg": "Field required"}]},
     "type": "invalid_request_error", "param": None, "code": None},
    {"object": "error", "message": json.dumps({"detail": [
        {"type": "extra_forbidden", "loc": ["body", "safety_identifier"], "msg": "Extra inputs are not permitted",
         "input": "user-secret-1"}, {"loc": ["body", "messages", 0, "user", "content"], "msg": "Field required"}]}),
     "type": "internal_error_proxy", "param": None, "code": "1000"},
    {"detail": [{"type": "extra_forbidden", "loc": ["body", "safety_identifier"],
                 "msg": "Extra inputs are not permitted", "input": "user-secret-1"},
                {"loc": ["body", "messages", 0, "user", "content"], "msg": "Field required"}]},
], ids=["message-object", "message-json-string", "top-level-detail"])
async def test_validation_errors_name_the_fields_not_their_values(session: aiohttp.ClientSession,
                                                                 body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await _run(session, Interaction.make(URL, status=422, body=body))
    assert (caught.value.status, caught.value.type) == (400, "invalid_request_error")
    assert caught.value.message == ("safety_identifier: Extra inputs are not permitted; "
                                    "messages.0.user.content: Field required")


@pytest.mark.parametrize(("status", "body", "headers", "error", "code"), [
    (401, {"message": "Unauthorized", "request_id": "3f2a"}, {}, UpstreamError, "upstream_auth_failed"),
    (429, {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None,
           "code": "1300"}, {"retry-after": "3"}, RateLimited, "rate_limit_exceeded"),
    (400, {"object": "error", "message": "Tool call id was KikbB849tx but must be a-z, A-Z, 0-9, with a length of "
                                         "9.", "type": "invalid_request_message_error", "param": None, "code": "3230"},
     {}, InvalidRequest, "invalid_request"),
], ids=["401", "429", "400-call-id"])
async def test_error_bodies(session: aiohttp.ClientSession, status: int, body: dict[str, Any],
                            headers: dict[str, str], error: type[GatewayError], code: str) -> None:
    with pytest.raises(GatewayError) as caught:
        await _run(session, Interaction.make(URL, status=status, body=body, headers=headers))
    assert (type(caught.value), caught.value.code) == (error, code)
    assert API_KEY not in str(caught.value)
    if status == 429:
        assert (caught.value.retry_after, caught.value.retryable) == (3.0, True)
    else:
        assert not caught.value.retryable
