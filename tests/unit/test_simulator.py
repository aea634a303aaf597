"""The upstream simulator: both OpenAI dialects in their native shapes, faults, recording, and
the discovery of dialect modules.

Every test talks to a real simulator on a loopback socket through an aiohttp client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers import sim_dialects
from providers.simulator import SimulatorOptions, create_app, start_simulator
from providers.simulator_faults import break_frame

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
                       "notes": {"type": "string"}},
        "required": ["city", "days", "metric"],
        "additionalProperties": False,
    },
}
TIME_TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event line or None, data line) per SSE block."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
        events.append((event, data))
    return events


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str) -> Any:
    async with http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.read()) if resp.content_type == "application/json" else await resp.text()


# ---------------------------------------------------------------- Responses dialect


async def test_responses_json_text_reply_has_openai_shape(sim: str, http: aiohttp.ClientSession) -> None:
    body = await post(http, f"{sim}/v1/responses", {
        "model": "gpt-4o", "instructions": "Be brief.", "service_tier": "flex",
        "input": [{"role": "user", "content": "What is 4200 + 42?"}],
    })
    assert body["object"] == "response"
    assert body["id"].startswith("resp_")
    assert body["status"] == "completed"
    assert body["model"] == "gpt-4o"
    assert body["service_tier"] == "flex"
    assert body["instructions"] == "Be brief."
    assert body["incomplete_details"] is None
    [message] = body["output"]
    assert message["type"] == "message"
    assert message["id"].startswith("msg_")
    assert message["role"] == "assistant"
    assert message["status"] == "completed"
    assert message["content"] == [
        {"type": "output_text", "annotations": [], "logprobs": [], "text": "Echo: What is 4200 + 42?"}
    ]
    # "Be brief." is 2 pieces, the question 5; the reply "Echo: What is 4200 + 42?" 6.
    assert body["usage"] == {
        "input_tokens": 7, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13,
    }


async def test_unknown_service_tier_is_reported_as_default(sim: str, http: aiohttp.ClientSession) -> None:
    body = await post(http, f"{sim}/v1/responses", {"model": "m", "input": "hi", "service_tier": "auto"})
    assert body["service_tier"] == "default"


async def test_same_request_gets_same_reply(sim: str, http: aiohttp.ClientSession) -> None:
    request = {"model": "m", "input": "say something", "tools": [WEATHER_TOOL]}
    first = await post(http, f"{sim}/v1/responses", request)
    second = await post(http, f"{sim}/v1/responses", request)
    assert first["output"][0]["arguments"] == second["output"][0]["arguments"]
    assert first["output"][0]["call_id"] != second["output"][0]["call_id"]
    text_request = {"model": "m", "input": "say something"}
    first = await post(http, f"{sim}/v1/responses", text_request)
    second = await post(http, f"{sim}/v1/responses", text_request)
    assert first["output"][0]["content"] == second["output"][0]["content"]


async def test_responses_stream_events_are_ordered_and_numbered(sim: str, http: aiohttp.ClientSession) -> None:
    text = await post(http, f"{sim}/v1/responses", {"model": "gpt-4o", "input": "one two three", "stream": True})
    events = parse_sse(text)
    payloads = [json.loads(data) for _, data in events]
    types = [p["type"] for p in payloads]
    assert [event for event, _ in events] == types
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    created, in_progress = payloads[0]["response"], payloads[1]["response"]
    assert created["status"] == in_progress["status"] == "in_progress"
    assert created["output"] == [] and created["usage"] is None
    deltas = [p["delta"] for p in payloads if p["type"] == "response.output_text.delta"]
    assert deltas == ["Echo:", " one", " two", " three"]
    added = payloads[2]["item"]
    assert added["status"] == "in_progress" and added["content"] == []
    assert payloads[3]["part"] == {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    assert payloads[8]["text"] == "Echo: one two three"
    final = payloads[-1]["response"]
    assert final["id"] == created["id"]
    assert final["status"] == "completed"
    assert final["output"] == [payloads[10]["item"]]
    assert final["output"][0]["content"][0]["text"] == "Echo: one two three"
    assert final["usage"]["output_tokens"] == 4
    assert {p["item_id"] for p in payloads[3:10]} == {added["id"]}


async def test_responses_tool_call_then_text_after_tool_output(sim: str, http: aiohttp.ClientSession) -> None:
    turn1 = [{"role": "user", "content": "Weather in Paris?"}]
    body = await post(http, f"{sim}/v1/responses", {"model": "m", "input": turn1, "tools": [WEATHER_TOOL]})
    [call] = body["output"]
    assert call["type"] == "function_call"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert call["status"] == "completed"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris", "days": 1, "metric": True}

    turn2 = [*turn1, {k: call[k] for k in ("type", "call_id", "name", "arguments")},
             {"type": "function_call_output", "call_id": call["call_id"], "output": "18C and sunny"}]
    body = await post(http, f"{sim}/v1/responses", {"model": "m", "input": turn2, "tools": [WEATHER_TOOL]})
    [message] = body["output"]
    assert message["content"][0]["text"] == "Tool said: 18C and sunny"


async def test_responses_stream_function_call_events(sim: str, http: aiohttp.ClientSession) -> None:
    text = await post(http, f"{sim}/v1/responses",
                      {"model": "m", "input": "Weather in Paris?", "tools": [WEATHER_TOOL], "stream": True})
    payloads = [json.loads(data) for _, data in parse_sse(text)]
    types = [p["type"] for p in payloads]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert set(types[3:-3]) == {"response.function_call_arguments.delta"}
    assert len(types[3:-3]) >= 2
    added = payloads[2]["item"]
    assert added["arguments"] == "" and added["status"] == "in_progress" and added["name"] == "get_weather"
    arguments = "".join(p["delta"] for p in payloads[3:-3])
    assert payloads[-3]["arguments"] == arguments
    assert json.loads(arguments) == {"city": "Paris", "days": 1, "metric": True}
    assert payloads[-1]["response"]["output"] == [payloads[-2]["item"]]
    assert payloads[-2]["item"]["call_id"] == added["call_id"]


async def test_parallel_calls_need_the_header_and_permission(sim: str, http: aiohttp.ClientSession) -> None:
    request = {"model": "m", "input": "both", "tools": [WEATHER_TOOL, TIME_TOOL]}
    single = await post(http, f"{sim}/v1/responses", request)
    assert [item["name"] for item in single["output"]] == ["get_weather"]
    double = await post(http, f"{sim}/v1/responses", request, **{"x-sim-parallel": "2"})
    assert [item["name"] for item in double["output"]] == ["get_weather", "get_time"]
    assert double["output"][1]["arguments"] == "{}"
    refused = await post(http, f"{sim}/v1/responses", {**request, "parallel_tool_calls": False},
                         **{"x-sim-parallel": "2"})
    assert [item["name"] for item in refused["output"]] == ["get_weather"]


async def test_tool_choice_none_forced_and_allowed(sim: str, http: aiohttp.ClientSession) -> None:
    request = {"model": "m", "input": "hi", "tools": [WEATHER_TOOL, TIME_TOOL]}
    none = await post(http, f"{sim}/v1/responses", {**request, "tool_choice": "none"})
    assert none["output"][0]["type"] == "message"
    forced_choice = {"type": "function", "name": "get_time"}
    forced = await post(http, f"{sim}/v1/responses", {**request, "tool_choice": forced_choice},
                        **{"x-sim-parallel": "2"})
    assert [item["name"] for item in forced["output"]] == ["get_time"]
    allowed = await post(http, f"{sim}/v1/responses", {**request, "tool_choice": {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]}})
    assert [item["name"] for item in allowed["output"]] == ["get_time"]


# ---------------------------------------------------------------- Chat Completions dialect


async def test_chat_json_text_reply_has_openai_shape(sim: str, http: aiohttp.ClientSession) -> None:
    body = await post(http, f"{sim}/v1/chat/completions", {
        "model": "gpt-4o", "service_tier": "priority",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "What is 4200 + 42?"}]}],
    })
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o"
    assert body["service_tier"] == "priority"
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert choice["message"] == {"role": "assistant", "content": "Echo: What is 4200 + 42?", "refusal": None,
                                 "annotations": []}
    assert body["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


async def test_chat_stream_tool_call_fragments_usage_and_done(sim: str, http: aiohttp.ClientSession) -> None:
    text = await post(http, f"{sim}/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [chat_tool(WEATHER_TOOL), chat_tool(TIME_TOOL)], "stream": True,
        "stream_options": {"include_usage": True},
    }, **{"x-sim-parallel": "2"})
    events = parse_sse(text)
    assert all(event is None for event, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks[1:-2]:
        [fragment] = chunk["choices"][0]["delta"]["tool_calls"]
        if "id" in fragment:
            assert fragment["index"] not in calls
            assert fragment["type"] == "function" and fragment["function"]["arguments"] == ""
            calls[fragment["index"]] = {"id": fragment["id"], "name": fragment["function"]["name"], "arguments": ""}
        else:
            assert set(fragment["function"]) == {"arguments"}
            calls[fragment["index"]]["arguments"] += fragment["function"]["arguments"]
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert all(call["id"].startswith("call_") for call in calls.values())
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "days": 1, "metric": True}
    assert json.loads(calls[1]["arguments"]) == {}
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]
    assert chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_chat_stream_text_without_usage_chunk(sim: str, http: aiohttp.ClientSession) -> None:
    text = await post(http, f"{sim}/v1/chat/completions",
                      {"model": "m", "messages": [{"role": "user", "content": "a b"}], "stream": True})
    events = parse_sse(text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:-1]) == "Echo: a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_chat_tool_result_turn_answers_with_the_output(sim: str, http: aiohttp.ClientSession) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
    ]
    body = await post(http, f"{sim}/v1/chat/completions",
                      {"model": "m", "tools": [chat_tool(WEATHER_TOOL)], "messages": messages})
    assert body["choices"][0]["message"]["content"] == "Tool said: rain"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_chat_json_tool_call(sim: str, http: aiohttp.ClientSession) -> None:
    body = await post(http, f"{sim}/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "Weather in Oslo"}],
        "tools": [chat_tool(WEATHER_TOOL), chat_tool(TIME_TOOL)],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    })
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"] == {"name": "get_time", "arguments": "{}"}


# ---------------------------------------------------------------- limits and structured output


async def test_max_output_tokens_makes_responses_incomplete(sim: str, http: aiohttp.ClientSession) -> None:
    request = {"model": "m", "input": "one two three four", "max_output_tokens": 3}
    body = await post(http, f"{sim}/v1/responses", request)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "Echo: one two"
    assert body["usage"]["output_tokens"] == 3

    text = await post(http, f"{sim}/v1/responses", {**request, "stream": True})
    payloads = [json.loads(d) for _, d in parse_sse(text)]
    assert payloads[-1]["type"] == "response.incomplete"
    assert payloads[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [p["delta"] for p in payloads if p["type"] == "response.output_text.delta"] == ["Echo:", " one", " two"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_chat_token_limit_finishes_with_length(sim: str, http: aiohttp.ClientSession, field: str) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], field: 2}
    body = await post(http, f"{sim}/v1/chat/completions", request)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Echo: one"
    assert body["usage"]["completion_tokens"] == 2
    chunks = [json.loads(d) for _, d in parse_sse(await post(http, f"{sim}/v1/chat/completions",
                                                             {**request, "stream": True}))[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


BOOK_SCHEMA = {
    "$defs": {"Author": {"type": "object", "properties": {"first_name": {"type": "string"}},
                         "required": ["first_name"], "additionalProperties": False}},
    "type": "object",
    "properties": {"title": {"type": "string"}, "author": {"$ref": "#/$defs/Author"},
                   "rating": {"type": "integer"}, "genre": {"enum": ["fantasy", "crime"]},
                   "tags": {"type": "array", "items": {"type": "string"}}, "sequel": {"type": ["null", "boolean"]}},
    "required": ["title", "author", "rating", "genre", "tags", "sequel"],
    "additionalProperties": False,
}
EXPECTED_BOOK = {"title": "Rothfuss", "author": {"first_name": "Rothfuss"}, "rating": 1, "genre": "fantasy",
                 "tags": [], "sequel": True}


async def test_responses_json_schema_output_parses(sim: str, http: aiohttp.ClientSession) -> None:
    body = await post(http, f"{sim}/v1/responses", {
        "model": "m", "input": "A book by Patrick Rothfuss",
        "text": {"format": {"type": "json_schema", "name": "Book", "schema": BOOK_SCHEMA, "strict": True}},
    })
    assert json.loads(body["output"][0]["content"][0]["text"]) == EXPECTED_BOOK
    assert body["text"]["format"]["name"] == "Book"


async def test_chat_json_schema_output_parses(sim: str, http: aiohttp.ClientSession) -> None:
    body = await post(http, f"{sim}/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "A book by Patrick Rothfuss"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "Book", "schema": BOOK_SCHEMA}},
    })
    assert json.loads(body["choices"][0]["message"]["content"]) == EXPECTED_BOOK


# ---------------------------------------------------------------- faults


async def test_status_fault_replies_with_openai_error(sim: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"},
                         headers={"x-sim-fault": "status:500"}) as resp:
        assert resp.status == 500
        assert "retry-after" not in resp.headers
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error" and error["message"]


async def test_status_429_carries_retry_after_unless_noretry(sim: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{sim}/v1/chat/completions", json=body, headers={"x-sim-fault": "status:429"}) as resp:
        assert resp.status == 429
        assert resp.headers["retry-after"] == "1"
        assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    async with http.post(f"{sim}/v1/chat/completions", json=body,
                         headers={"x-sim-fault": "status:429:noretry"}) as resp:
        assert resp.status == 429
        assert "retry-after" not in resp.headers


async def test_reset_drops_the_connection_before_any_reply(sim: str, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"},
                             headers={"x-sim-fault": "reset"}) as resp:
            await resp.read()
    await post(http, f"{sim}/v1/responses", {"model": "m", "input": "still up?"})


async def test_reset_after_first_byte_sends_one_event(sim: str, http: aiohttp.ClientSession) -> None:
    received = b""
    async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi", "stream": True},
                         headers={"x-sim-fault": "reset-after-first-byte"}) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += chunk
    [(event, data)] = parse_sse(received.decode())
    assert event == "response.created" and json.loads(data)["sequence_number"] == 0


async def test_stall_never_replies(sim: str, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"},
                             headers={"x-sim-fault": "stall"}, timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    assert time.monotonic() - started >= 0.3


async def test_stall_mid_stream_sends_a_few_events_then_hangs(sim: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim}/v1/chat/completions",
                         json={"model": "m", "messages": [{"role": "user", "content": "a b c d"}], "stream": True},
                         headers={"x-sim-fault": "stall-mid-stream"}) as resp:
        assert resp.status == 200
        lines = [await resp.content.readline() for _ in range(6)]  # three "data:" lines and their blank lines
        assert all(line.startswith(b"data: {") for line in lines[::2])
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 0.3)


async def test_close_releases_stalled_requests(http: aiohttp.ClientSession) -> None:
    simulator = await start_simulator(options=SimulatorOptions(fault="stall"))
    pending = asyncio.create_task(http.post(f"{simulator.url}/v1/responses", json={"model": "m", "input": "hi"}))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await simulator.close()
    assert time.monotonic() - started < 0.9  # well inside the 1 s shutdown timeout: nothing waited on it
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending


async def test_malformed_json_body(sim: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"},
                         headers={"x-sim-fault": "malformed"}) as resp:
        assert resp.status == 200
        raw = await resp.read()
    assert raw.startswith(b'{"id":"resp_')
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_malformed_stream_has_a_broken_data_line(sim: str, http: aiohttp.ClientSession) -> None:
    text = await post(http, f"{sim}/v1/chat/completions",
                      {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                      **{"x-sim-fault": "malformed"})
    first, broken = parse_sse(text)
    assert json.loads(first[1])["object"] == "chat.completion.chunk"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken[1])


async def test_trickle_sends_the_normal_reply_in_many_pieces(sim: str, http: aiohttp.ClientSession) -> None:
    chunks = []
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{sim}/v1/chat/completions", json=body,
                         headers={"x-sim-fault": "trickle", "x-sim-trickle-delay-ms": "0"}) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_any():
            chunks.append(chunk)
    reply = json.loads(b"".join(chunks))
    assert reply["choices"][0]["message"]["content"] == "Echo: hi"
    assert len(chunks) > 10


async def test_fail_times_faults_only_the_first_requests_per_key(sim: str, http: aiohttp.ClientSession) -> None:
    async def status(key: str) -> int:
        async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"}, headers={
            "x-sim-fault": "status:503", "x-sim-fail-times": "2", "x-sim-fault-key": key,
        }) as resp:
            await resp.read()
            return resp.status

    assert [await status("retry-a") for _ in range(4)] == [503, 503, 200, 200]
    assert await status("retry-b") == 503


async def test_bad_control_headers_are_rejected(sim: str, http: aiohttp.ClientSession) -> None:
    for headers in ({"x-sim-fault": "explode"}, {"x-sim-latency-ms": "soon"}, {"x-sim-fault": "status:200"},
                    {"x-sim-fault": "redirect:/relative"}):
        async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"}, headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_a_redirect_fault_answers_307_to_its_url(sim: str, http: aiohttp.ClientSession) -> None:
    headers = {"x-sim-fault": "redirect:http://127.0.0.1:9/elsewhere"}
    async with http.post(f"{sim}/v1/responses", json={"model": "m", "input": "hi"}, headers=headers,
                         allow_redirects=False) as resp:
        assert resp.status == 307 and resp.headers["Location"] == "http://127.0.0.1:9/elsewhere"


def test_bad_fault_option_fails_at_start() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        create_app(SimulatorOptions(fault="sometimes"))


async def test_latency_and_token_delay(sim: str, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    await post(http, f"{sim}/v1/responses", {"model": "m", "input": "hi"}, **{"x-sim-latency-ms": "150"})
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    text = await post(http, f"{sim}/v1/responses", {"model": "m", "input": "hi", "stream": True},
                      **{"x-sim-token-delay-ms": "20"})
    assert time.monotonic() - started >= 0.02 * (len(parse_sse(text)) - 1)


# ---------------------------------------------------------------- auth, models, recording, CLI


async def test_api_key_is_enforced_when_configured(http: aiohttp.ClientSession) -> None:
    simulator = await start_simulator(options=SimulatorOptions(api_key="sk-sim"))
    try:
        for auth in (None, "Bearer wrong"):
            headers = {"Authorization": auth} if auth else {}
            async with http.post(f"{simulator.url}/v1/responses", json={"model": "m", "input": "hi"},
                                 headers=headers) as resp:
                assert resp.status == 401
                error = (await resp.json())["error"]
                assert error["code"] == "invalid_api_key" and set(error) == {"message", "type", "param", "code"}
        await post(http, f"{simulator.url}/v1/responses", {"model": "m", "input": "hi"}, Authorization="Bearer sk-sim")
    finally:
        await simulator.close()


async def test_models_are_listed(sim: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sim}/v1/models") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [("simulator", "model")]


async def test_requests_are_recorded_and_cleared(sim: str, http: aiohttp.ClientSession) -> None:
    await post(http, f"{sim}/v1/responses", {"model": "m", "input": "first"})
    await post(http, f"{sim}/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]},
               Authorization="Bearer upstream-key", **{"X-Custom": "yes"})
    async with http.get(f"{sim}/_sim/requests") as resp:
        records = await resp.json()
    assert [(r["method"], r["path"]) for r in records] == [("POST", "/v1/responses"), ("POST", "/v1/chat/completions")]
    assert records[0]["body"] == {"model": "m", "input": "first"}
    assert "authorization" not in records[0]["headers"]
    assert records[1]["headers"]["authorization"] == "Bearer upstream-key"
    assert records[1]["headers"]["x-custom"] == "yes"
    async with http.delete(f"{sim}/_sim/requests") as resp:
        assert resp.status == 204
    async with http.get(f"{sim}/_sim/requests") as resp:
        assert await resp.json() == []


async def test_recording_keeps_only_the_last_requests(http: aiohttp.ClientSession) -> None:
    simulator = await start_simulator(options=SimulatorOptions(record_limit=2))
    try:
        for word in ("one", "two", "three"):
            await post(http, f"{simulator.url}/v1/responses", {"model": "m", "input": word})
        async with http.get(f"{simulator.url}/_sim/requests") as resp:
            assert [r["body"]["input"] for r in await resp.json()] == ["two", "three"]
    finally:
        await simulator.close()


async def test_cli_serves_until_interrupted(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        # Ctrl-C as a terminal delivers it, whatever SIGINT state the test process hands down.
        sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        "from providers.simulator import main; sys.exit(main(sys.argv[1:]))",
        "--port", "0", "--api-key", "sk-cli",
        cwd=Path(__file__).resolve().parents[2], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        # Connection: close, so no kept-alive connection of ours is left for the shutdown to wait on.
        async with http.get(f"{url}/v1/models", headers={"Connection": "close"}) as resp:
            assert resp.status == 401
        authorized = {"Authorization": "Bearer sk-cli", "Connection": "close"}
        async with http.get(f"{url}/v1/models", headers=authorized) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_processes_share_the_port_and_stop_with_the_parent(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "simulate", "--port", str(port), "--processes", "3",
        cwd=Path(__file__).resolve().parents[2], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own group: whatever happens, the finally below ends every process of it
    )
    try:
        assert proc.stdout is not None
        for _ in range(3):  # one line per serving process, once it listens
            assert "listening" in (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2
        # Each new connection lands on one of the listeners; 60 of them reach every process.
        answered_by: set[str] = set()
        for _ in range(60):
            async with http.get(f"http://127.0.0.1:{port}/_sim/requests", headers={"Connection": "close"}) as resp:
                assert resp.status == 200
                answered_by.add(json.dumps(await resp.json()))
            await post(http, f"http://127.0.0.1:{port}/v1/responses", {"model": "m", "input": "hello"},
                       Connection="close")
        # Each process records only what it served, so the recordings differ between processes.
        assert len(answered_by) > 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        # The parent reaped its children before it exited.
        assert not [child for child in children if Path(f"/proc/{child}").exists()]
    finally:
        # The children hold the output pipe too: left running, they would keep wait() waiting.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)


def test_cli_processes_need_a_fixed_port(capsys: pytest.CaptureFixture[str]) -> None:
    from providers.simulator import main

    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", "--processes", "2"])
    assert exited.value.code == 2
    assert "--processes needs a fixed --port" in capsys.readouterr().err


@pytest.mark.parametrize(("backlog", "handshakes"), [(2, 3), (32, 8)])
async def test_backlog_bounds_connections_waiting_to_be_accepted(backlog: int, handshakes: int) -> None:
    simulator = await start_simulator(backlog=backlog)
    port = int(simulator.url.rsplit(":", 1)[1])
    sockets: list[socket.socket] = []
    completed = 0
    try:
        # Blocking connects: the event loop cannot accept meanwhile, so only the kernel's queue
        # (the backlog, plus one on Linux) completes handshakes; the rest wait for a SYN retry.
        for _ in range(8):
            sock = socket.socket()
            sock.settimeout(0.3)
            sockets.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
                completed += 1
            except OSError:  # timed out (SYN dropped), or refused where the kernel resets instead
                pass
    finally:
        for sock in sockets:
            sock.close()
        await simulator.close()
    assert completed == handshakes


# ---------------------------------------------------------------- dialect discovery


def test_discovery_finds_the_openai_dialects() -> None:
    dialects = {dialect.name: dialect for dialect in sim_dialects.discover()}
    assert {"openai_chat", "openai_responses"} <= set(dialects)
    assert list(dialects["openai_responses"].routes) == [("POST", "/v1/responses")]
    assert list(dialects["openai_chat"].routes) == [("POST", "/v1/chat/completions")]
    served = {(route.method, route.resource.canonical) for route in create_app().router.routes() if route.resource}
    assert {(method, path) for d in dialects.values() for method, path in d.routes} <= served


# A dialect module as another engineer would write it: Gemini-style routes with the model and the
# method in the URL, NDJSON streams, its own error shape and key header.
SHOUT_MODULE = """
from typing import Any

from aiohttp import web

from providers.sim_dialects.base import Plan, SimDialect, Turn, count_tokens, encode_json


class ShoutDialect(SimDialect):
    name = "shout"
    routes = [("POST", "/v9/models/{model}:shout"), ("POST", "/v9/models/{model}:streamShout")]
    stream_content_type = "application/x-ndjson"
    auth_header = "x-shout-key"
    auth_scheme = ""

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        said = body["said"]
        return Turn(last_user=said, tool_outputs=[], input_tokens=count_tokens(said), tools=[],
                    parallel=False, max_tokens=None, output_format=None)

    def wants_stream(self, body: dict[str, Any], request: web.Request) -> bool:
        return request.path.endswith(":streamShout")

    def model_of(self, body: dict[str, Any], request: web.Request) -> str | None:
        return request.match_info["model"]

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        return encode_json({"shout": (plan.text or "").upper(), "model": self.model_of(body, request)})

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        return [encode_json({"piece": piece.upper()}) + b"\\n" for piece in plan.pieces] + [b'{"done":true}\\n']

    def error_body(self, status: int, message: str | None = None, code: str | None = None,
                   param: str | None = None) -> bytes:
        return encode_json({"oops": {"status": status, "message": message or "shout failed"}})


DIALECT = ShoutDialect()
"""


@pytest.fixture
def shout_dialect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A dialect module found by the package's own discovery, from a folder outside the package."""
    (tmp_path / "zz_test_shout.py").write_text(textwrap.dedent(SHOUT_MODULE))
    monkeypatch.setattr(sim_dialects, "__path__", [*sim_dialects.__path__, str(tmp_path)])
    yield
    sys.modules.pop("providers.sim_dialects.zz_test_shout", None)


async def test_a_new_dialect_module_is_served(shout_dialect: None, http: aiohttp.ClientSession) -> None:
    assert "shout" in [dialect.name for dialect in sim_dialects.discover()]
    simulator = await start_simulator(options=SimulatorOptions(api_key="k"))
    url = f"{simulator.url}/v9/models/loud-1"
    try:
        reply = await post(http, f"{url}:shout", {"said": "hello there"}, **{"x-shout-key": "k"})
        assert reply == {"shout": "ECHO: HELLO THERE", "model": "loud-1"}
        async with http.post(f"{url}:streamShout", json={"said": "hi"}, headers={"x-shout-key": "k"}) as resp:
            assert resp.status == 200 and resp.content_type == "application/x-ndjson"
            lines = (await resp.read()).splitlines()
        assert [json.loads(line) for line in lines] == [{"piece": "ECHO:"}, {"piece": " HI"}, {"done": True}]
        # Auth, request checks and faults answer in the dialect's own error shape.
        async with http.post(f"{url}:shout", json={"said": "hi"}, headers={"x-shout-key": "wrong"}) as resp:
            assert resp.status == 401 and "oops" in await resp.json()
        async with http.post(f"{url}:shout", json={"said": 1}, headers={"x-shout-key": "k"}) as resp:
            assert resp.status == 400 and "oops" in await resp.json()
        async with http.post(f"{url}:shout", json={"said": "hi"},
                             headers={"x-shout-key": "k", "x-sim-fault": "status:503"}) as resp:
            assert resp.status == 503 and (await resp.json())["oops"]["status"] == 503
        async with http.post(f"{url}:streamShout", json={"said": "hi"},
                             headers={"x-shout-key": "k", "x-sim-fault": "malformed"}) as resp:
            first, broken = (await resp.read()).splitlines()
        assert json.loads(first) == {"piece": "ECHO:"}
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken)
        # The OpenAI dialects are still there, still with OpenAI's key header.
        await post(http, f"{simulator.url}/v1/responses", {"model": "m", "input": "hi"}, Authorization="Bearer k")
    finally:
        await simulator.close()


def test_two_dialects_claiming_one_route_fail_at_start(shout_dialect: None) -> None:
    shout = next(dialect for dialect in sim_dialects.discover() if dialect.name == "shout")
    shout.routes = [("POST", "/v1/responses")]  # the module's instance: create_app discovers it again
    with pytest.raises(ValueError, match="both claim POST /v1/responses"):
        create_app()


def test_malformed_eventstream_frame_fails_its_message_crc() -> None:
    headers, payload = b"", b'{"bytes":"e30="}'
    prelude = (16 + len(headers) + len(payload)).to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + headers + payload
    frame = message + zlib.crc32(message).to_bytes(4, "big")
    broken = break_frame(frame, "application/vnd.amazon.eventstream")
    assert len(broken) == len(frame) and broken[:-4] == frame[:-4]  # lengths and prelude CRC still parse
    assert int.from_bytes(broken[-4:], "big") != zlib.crc32(broken[:-4])
