"""A deterministic stand-in for an OpenAI upstream, for demos, end-to-end tests and benchmarks.

It speaks both OpenAI dialects the gateway sends to, in the exact native shapes of the recordings
in ``shared/fixtures/providers/openai-*``:

* ``POST /v1/responses`` (JSON, or SSE with ``event:`` lines when ``stream`` is true),
* ``POST /v1/chat/completions`` (JSON, or SSE ending in ``data: [DONE]``, with a usage chunk
  when ``stream_options.include_usage`` is true),
* ``GET /v1/models``, and ``GET``/``DELETE /_sim/requests`` (the last requests received, so tests
  can assert what the gateway sent upstream).

What it answers (the same request always gets the same reply; only ids and timestamps vary):

* with callable function tools and a last conversation item that is not a tool result: a call
  to the first tool (or the one ``tool_choice`` forces or allows), arguments built from the
  tool's JSON schema (``_sample``); the first N tools with ``x-sim-parallel: N`` when parallel
  calls are allowed;
* after tool results: ``"Tool said: <output>"``; otherwise ``"Echo: <last user text>"``;
* with a ``json_schema`` output format: a JSON object built from the schema like tool arguments;
  with ``json_object``: ``{"text": <the plain reply>}``.

Tokens: one token is one *piece*, a run of up to 8 non-space characters with the whitespace
before it (``_PIECE``); streamed deltas are exactly these pieces, so ``max_output_tokens`` /
``max_tokens`` cut the reply at a delta boundary. Input tokens count the pieces of instructions,
messages, tool calls and tool outputs. Cached and reasoning tokens are always 0. Tool calls are
never truncated.

Per-request control headers (``x-sim-*``) override ``SimulatorOptions`` so one running
simulator serves many test cases; faults are described in ``providers.simulator_faults``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec
from aiohttp import web

from providers.simulator_faults import Fault, before_reply, error_response, parse_fault, send_broken

__all__ = ["RunningSimulator", "SimulatorOptions", "create_app", "main", "start_simulator"]


class SimulatorOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How a simulator behaves; every field but ``api_key``, ``record_limit`` and ``models`` can
    also be set per request by the header named in its docstring."""

    latency_ms: float = 0.0
    """Delay before the reply's first byte (``x-sim-latency-ms``)."""
    token_delay_ms: float = 0.0
    """Delay between streamed events (``x-sim-token-delay-ms``)."""
    fault: str | None = None
    """Fault to inject, e.g. ``status:503`` or ``reset`` (``x-sim-fault``); see
    ``providers.simulator_faults`` for the list."""
    fail_times: int | None = None
    """Inject ``fault`` only into the first N requests that share ``fault_key``, then reply
    normally (``x-sim-fail-times``); ``None`` injects it into every request."""
    fault_key: str = ""
    """Names the request counter that ``fail_times`` uses (``x-sim-fault-key``)."""
    parallel: int = 1
    """How many offered tools to call in one turn when parallel calls are allowed (``x-sim-parallel``)."""
    trickle_delay_ms: float = 1.0
    """Pause between single bytes under the ``trickle`` fault (``x-sim-trickle-delay-ms``)."""
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>`` or get a 401."""
    record_limit: int = 100
    """How many recent requests ``GET /_sim/requests`` keeps; 0 turns recording off."""
    models: tuple[str, ...] = ("simulator",)
    """Model ids listed by ``GET /v1/models``; requests may name any model."""


# Header -> (field, parser) for per-request overrides of SimulatorOptions.
_HEADER_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "x-sim-latency-ms": ("latency_ms", float),
    "x-sim-token-delay-ms": ("token_delay_ms", float),
    "x-sim-fault": ("fault", str),
    "x-sim-fail-times": ("fail_times", int),
    "x-sim-fault-key": ("fault_key", str),
    "x-sim-parallel": ("parallel", int),
    "x-sim-trickle-delay-ms": ("trickle_delay_ms", float),
}

_PIECE = re.compile(r"\s*\S{1,8}|\s+")
_WORD = re.compile(r"\w+")
_SERVICE_TIERS = frozenset({"default", "flex", "priority"})
_SNIPPET = 200
"""Characters of user text or tool output quoted back in a reply."""
_SCHEMA_DEPTH = 8
"""Nesting bound for sample values, so a recursive ``$ref`` cannot loop."""
_FINGERPRINT = "fp_simulator"
_SCALAR_SAMPLES: dict[str, Any] = {"number": 1, "integer": 1, "boolean": True}

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_Dialect = Literal["responses", "chat"]


# ---------------------------------------------------------------- reading a request


class _Turn(msgspec.Struct, kw_only=True):
    """A request reduced to what the reply depends on; the same for both dialects."""

    last_user: str
    tool_outputs: list[str]
    """Outputs of the tool results that end the conversation; non-empty means "answer them"."""
    input_tokens: int
    tools: list[tuple[str, Any]]
    """(name, parameters schema) of the function tools ``tool_choice`` lets the model call."""
    parallel: bool
    max_tokens: int | None
    output_format: Any
    """A ``json_schema`` format's schema, the string ``"json_object"``, or ``None`` for text."""


def _text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _count(text: str) -> int:
    return len(_PIECE.findall(text))


def _callable_tools(tools: Any, choice: Any) -> list[tuple[str, Any]]:
    """Function tools the model may call, in offered order. Reads both dialects: Chat nests the
    function under ``function``, Responses keeps it flat."""
    if choice == "none" or not isinstance(tools, list):
        return []
    offered = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            fn = tool.get("function", tool)
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                offered.append((fn["name"], fn.get("parameters")))
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            forced = choice.get("name") or (choice.get("function") or {}).get("name")
            return [tool for tool in offered if tool[0] == forced][:1]
        if choice.get("type") == "allowed_tools":
            spec = choice.get("allowed_tools", choice)  # Chat nests the list one level deeper
            allowed = {(t.get("function") or t).get("name") for t in spec.get("tools") or [] if isinstance(t, dict)}
            return [tool for tool in offered if tool[0] in allowed]
    return offered


def _max_tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _format_of(fmt: Any) -> Any:
    """Schema of a json_schema format (Responses flat, Chat nested under ``json_schema``)."""
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "json_object"
    if fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema", fmt).get("schema")
        return schema if isinstance(schema, dict) else {}
    return None


def _read_responses(body: dict[str, Any]) -> _Turn:
    raw_input = body.get("input")
    items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
    items = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    instructions = body.get("instructions")
    tokens = _count(instructions) if isinstance(instructions, str) else 0
    last_user = ""
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            text = _text_of(item.get("content"))
            tokens += _count(text)
            if item.get("role") == "user":
                last_user = text
        elif kind == "function_call":
            tokens += _count(str(item.get("arguments", "")))
        elif kind == "function_call_output":
            tokens += _count(_text_of(item.get("output")))
    outputs = []
    for item in reversed(items):
        if item.get("type") != "function_call_output":
            break
        outputs.append(_text_of(item.get("output")))
    text_options = body.get("text")
    return _Turn(
        last_user=last_user,
        tool_outputs=outputs[::-1],
        input_tokens=tokens,
        tools=_callable_tools(body.get("tools"), body.get("tool_choice")),
        parallel=body.get("parallel_tool_calls") is not False,
        max_tokens=_max_tokens(body.get("max_output_tokens")),
        output_format=_format_of(text_options.get("format")) if isinstance(text_options, dict) else None,
    )


def _read_chat(body: dict[str, Any]) -> _Turn:
    messages = body.get("messages")
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    tokens = 0
    last_user = ""
    for message in messages:
        text = _text_of(message.get("content"))
        tokens += _count(text)
        if message.get("role") == "user":
            last_user = text
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                tokens += _count(str((call.get("function") or {}).get("arguments", "")))
    outputs = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        outputs.append(_text_of(message.get("content")))
    max_tokens = body.get("max_completion_tokens")
    return _Turn(
        last_user=last_user,
        tool_outputs=outputs[::-1],
        input_tokens=tokens,
        tools=_callable_tools(body.get("tools"), body.get("tool_choice")),
        parallel=body.get("parallel_tool_calls") is not False,
        max_tokens=_max_tokens(body.get("max_tokens") if max_tokens is None else max_tokens),
        output_format=_format_of(body.get("response_format")),
    )


# ---------------------------------------------------------------- deciding the reply


class _Plan(msgspec.Struct, kw_only=True):
    """The reply, before it is dressed in a dialect: text (cut into pieces) or tool calls."""

    text: str | None
    pieces: list[str]
    calls: list[tuple[str, str]]
    """(tool name, arguments as a JSON string)."""
    incomplete: bool
    input_tokens: int
    output_tokens: int


def _sample(schema: Any, word: str, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """A deterministic value matching ``schema``: objects get their required properties,
    strings ``word``, numbers 1, booleans true, arrays []."""
    if not isinstance(schema, dict) or depth > _SCHEMA_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _sample(defs.get(ref.rsplit("/", 1)[-1]), word, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _sample(schema[key][0], word, defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _sample(props.get(name), word, defs, depth + 1) for name in schema.get("required") or []}
    if kind == "string":
        return word
    if kind == "array":
        return []
    return _SCALAR_SAMPLES.get(str(kind))


def _sample_json(schema: Any, word: str) -> str:
    defs: Mapping[str, Any] = {}
    if isinstance(schema, dict):
        defs = schema.get("$defs") or schema.get("definitions") or {}
    return _encode(_sample(schema, word, defs)).decode()


def _plan(turn: _Turn, parallel: int) -> _Plan:
    words = _WORD.findall(turn.last_user)
    word = words[-1] if words else "sample"
    if turn.tools and not turn.tool_outputs:
        count = max(parallel, 1) if turn.parallel and len(turn.tools) >= 2 else 1
        calls = [(name, _sample_json(schema or {"type": "object"}, word)) for name, schema in turn.tools[:count]]
        out = sum(_count(args) for _, args in calls)
        return _Plan(text=None, pieces=[], calls=calls, incomplete=False,
                     input_tokens=turn.input_tokens, output_tokens=out)
    if turn.tool_outputs:
        text = "Tool said: " + "; ".join(output[:_SNIPPET] for output in turn.tool_outputs)
    else:
        text = "Echo: " + turn.last_user[:_SNIPPET] if turn.last_user else "Echo."
    if turn.output_format == "json_object":
        text = _encode({"text": text}).decode()
    elif turn.output_format is not None:
        text = _sample_json(turn.output_format, word)
    pieces = _PIECE.findall(text)
    incomplete = turn.max_tokens is not None and len(pieces) > turn.max_tokens
    if incomplete:
        pieces = pieces[: turn.max_tokens]
        text = "".join(pieces)
    return _Plan(text=text, pieces=pieces, calls=[], incomplete=incomplete,
                 input_tokens=turn.input_tokens, output_tokens=len(pieces))


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _tier(body: Mapping[str, Any]) -> str:
    tier = body.get("service_tier")
    return tier if tier in _SERVICE_TIERS else "default"


def _given(body: Mapping[str, Any], key: str, default: Any) -> Any:
    """The request's value for ``key``, or what OpenAI reports when it is absent or null."""
    value = body.get(key)
    return default if value is None else value


# ---------------------------------------------------------------- Responses dialect

_MESSAGE_DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)


def _response_object(body: Mapping[str, Any], response_id: str, created: int) -> dict[str, Any]:
    """The response envelope in its in-progress state, echoing the request like OpenAI does."""
    text = body.get("text")
    return {
        "id": response_id, "object": "response", "created_at": created, "status": "in_progress",
        "background": False, "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "model": body.get("model"), "output": [],
        "parallel_tool_calls": _given(body, "parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": _given(body, "reasoning", {"effort": None, "summary": None}),
        "safety_identifier": body.get("safety_identifier"), "service_tier": _tier(body),
        "store": _given(body, "store", True), "temperature": _given(body, "temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(text if isinstance(text, dict) else {})},
        "tool_choice": _given(body, "tool_choice", "auto"), "tools": _given(body, "tools", []),
        "top_logprobs": _given(body, "top_logprobs", 0), "top_p": _given(body, "top_p", 1.0),
        "truncation": _given(body, "truncation", "disabled"), "usage": None,
        "user": body.get("user"), "metadata": _given(body, "metadata", {}),
    }


def _responses_items(plan: _Plan) -> list[dict[str, Any]]:
    if plan.text is None:
        return [
            {"id": _new_id("fc_"), "type": "function_call", "status": "completed", "arguments": args,
             "call_id": _new_id("call_"), "name": name}
            for name, args in plan.calls
        ]
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}
    return [{"id": _new_id("msg_"), "type": "message", "status": "incomplete" if plan.incomplete else "completed",
             "content": [part], "role": "assistant"}]


def _finished(envelope: dict[str, Any], plan: _Plan, output: list[dict[str, Any]]) -> dict[str, Any]:
    usage = {
        "input_tokens": plan.input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.input_tokens + plan.output_tokens,
    }
    return envelope | {
        "status": "incomplete" if plan.incomplete else "completed",
        "completed_at": int(time.time()),
        "incomplete_details": {"reason": "max_output_tokens"} if plan.incomplete else None,
        "output": output,
        "usage": usage,
    }


def _responses_json(body: Mapping[str, Any], plan: _Plan) -> bytes:
    envelope = _response_object(body, _new_id("resp_"), int(time.time()))
    return _encode(_finished(envelope, plan, _responses_items(plan)))


class _Events:
    """Collects SSE frames, numbering them from 0 as OpenAI does."""

    __slots__ = ("frames", "seq")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seq = 0

    def add(self, kind: str, **payload: Any) -> None:
        data = _encode({"type": kind, "sequence_number": self.seq, **payload})
        self.frames.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")
        self.seq += 1

    def add_text_deltas(self, item_id: str, output_index: int, pieces: list[str]) -> None:
        # The hot path of a text stream: splice each piece into pre-encoded bytes rather than
        # encoding one dict per delta.
        tail = _encode({"item_id": item_id, "output_index": output_index, "content_index": 0})[1:-1]
        middle = b"," + tail + b',"delta":'
        for piece in pieces:
            self.frames.append(_MESSAGE_DELTA_HEAD + str(self.seq).encode() + middle + _encode(piece)
                               + b',"logprobs":[]}\n\n')
            self.seq += 1


def _responses_stream(body: Mapping[str, Any], plan: _Plan) -> list[bytes]:
    envelope = _response_object(body, _new_id("resp_"), int(time.time()))
    events = _Events()
    events.add("response.created", response=envelope)
    events.add("response.in_progress", response=envelope)
    output = _responses_items(plan)
    for index, item in enumerate(output):
        item_id = item["id"]
        if item["type"] == "message":
            part = item["content"][0]
            events.add("response.output_item.added", output_index=index,
                       item=item | {"status": "in_progress", "content": []})
            events.add("response.content_part.added", item_id=item_id, output_index=index, content_index=0,
                       part=part | {"text": ""})
            events.add_text_deltas(item_id, index, plan.pieces)
            events.add("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                       text=part["text"], logprobs=[])
            events.add("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                       part=part)
        else:
            events.add("response.output_item.added", output_index=index,
                       item=item | {"status": "in_progress", "arguments": ""})
            for piece in _PIECE.findall(item["arguments"]):
                events.add("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                           delta=piece)
            events.add("response.function_call_arguments.done", item_id=item_id, output_index=index,
                       arguments=item["arguments"])
        events.add("response.output_item.done", output_index=index, item=item)
    final = _finished(envelope, plan, output)
    events.add("response.incomplete" if plan.incomplete else "response.completed", response=final)
    return events.frames


# ---------------------------------------------------------------- Chat Completions dialect


def _chat_usage(plan: _Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.input_tokens, "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _finish_reason(plan: _Plan) -> str:
    return "tool_calls" if plan.calls else "length" if plan.incomplete else "stop"


def _chat_json(body: Mapping[str, Any], plan: _Plan) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": plan.text}
    if plan.calls:
        message["tool_calls"] = [
            {"id": _new_id("call_"), "type": "function", "function": {"name": name, "arguments": args}}
            for name, args in plan.calls
        ]
    message |= {"refusal": None, "annotations": []}
    return _encode({
        "id": _new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(plan)}],
        "usage": _chat_usage(plan), "service_tier": _tier(body), "system_fingerprint": _FINGERPRINT,
    })


def _chat_stream(body: Mapping[str, Any], plan: _Plan) -> list[bytes]:
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    head = {"id": _new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model"), "service_tier": _tier(body), "system_fingerprint": _FINGERPRINT}
    # OpenAI adds "usage": null to every chunk only when a usage chunk will follow.
    tail = {"usage": None} if with_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + _encode(head | {"choices": [choice]} | tail) + b"\n\n"

    frames: list[bytes] = []
    if plan.text is None:
        frames.append(chunk({"role": "assistant", "content": None}))
        for index, (name, args) in enumerate(plan.calls):
            frames.append(chunk({"tool_calls": [{"index": index, "id": _new_id("call_"), "type": "function",
                                                  "function": {"name": name, "arguments": ""}}]}))
            frames.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                          for piece in _PIECE.findall(args))
    else:
        frames.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        # Pre-encode everything around the content so each piece costs one small encode.
        before, after = chunk({"content": "\x00"}).rsplit(b'"\\u0000"', 1)
        frames.extend(before + _encode(piece) + after for piece in plan.pieces)
    frames.append(chunk({}, _finish_reason(plan)))
    if with_usage:
        frames.append(b"data: " + _encode(head | {"choices": [], "usage": _chat_usage(plan)}) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


_READERS: dict[_Dialect, Callable[[dict[str, Any]], _Turn]] = {"responses": _read_responses, "chat": _read_chat}
_RENDER_JSON: dict[_Dialect, Callable[[Mapping[str, Any], _Plan], bytes]] = {
    "responses": _responses_json, "chat": _chat_json}
_RENDER_STREAM: dict[_Dialect, Callable[[Mapping[str, Any], _Plan], list[bytes]]] = {
    "responses": _responses_stream, "chat": _chat_stream}


# ---------------------------------------------------------------- the application


class _State:
    """Per-app memory: options, fault counters, recorded requests, and the shutdown signal."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.fail_counts: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=options.record_limit)
        # Set at shutdown so stalled handlers let go instead of holding the server open.
        self.closing = asyncio.Event()

    def record(self, request: web.Request, body: Any, raw: bytes) -> None:
        if self.options.record_limit:
            self.requests.append({
                "method": request.method,
                "path": request.path,
                "headers": {name.lower(): value for name, value in request.headers.items()},
                "body": body if body is not None else raw.decode("utf-8", "replace"),
            })

    def fault_for(self, options: SimulatorOptions) -> Fault | None:
        """The fault this request gets, counting it against ``fail_times`` when that is set."""
        if options.fault is None:
            return None
        fault = parse_fault(options.fault)
        if options.fail_times is not None:
            self.fail_counts[options.fault_key] += 1
            if self.fail_counts[options.fault_key] > options.fail_times:
                return None
        return fault


_STATE = web.AppKey("simulator_state", _State)


def _request_options(base: SimulatorOptions, headers: Mapping[str, str]) -> SimulatorOptions:
    """``base`` with the request's ``x-sim-*`` headers applied; raises ``ValueError`` on a bad value."""
    changes: dict[str, Any] = {}
    for header, (field, parse) in _HEADER_OPTIONS.items():
        raw = headers.get(header)
        if raw is not None:
            try:
                changes[field] = parse(raw.strip())
            except ValueError:
                raise ValueError(f"bad {header} header: {raw!r}") from None
    return msgspec.structs.replace(base, **changes) if changes else base


def _authorized(state: _State, request: web.Request) -> bool:
    key = state.options.api_key
    return key is None or request.headers.get("Authorization") == f"Bearer {key}"


def _unauthorized() -> web.Response:
    return error_response(401, "Incorrect API key provided.")


async def _send_stream(request: web.Request, frames: list[bytes], delay_s: float) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    try:
        await resp.prepare(request)
        if delay_s:
            for index, frame in enumerate(frames):
                if index:
                    await asyncio.sleep(delay_s)
                await resp.write(frame)
        else:
            await resp.write(b"".join(frames))
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing is left to tell it
    return resp


async def _serve(request: web.Request, dialect: _Dialect) -> web.StreamResponse:
    state = request.app[_STATE]
    raw = await request.read()
    try:
        body = _decode(raw)
    except msgspec.DecodeError:
        body = None
    state.record(request, body, raw)
    try:
        options = _request_options(state.options, request.headers)
        fault = state.fault_for(options)
    except ValueError as exc:
        return error_response(400, str(exc))
    if not _authorized(state, request):
        return _unauthorized()
    if not isinstance(body, dict):
        return error_response(400, "We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        return error_response(400, "Missing required parameter: 'model'.", param="model")
    if options.latency_ms:
        await asyncio.sleep(options.latency_ms / 1000)
    if fault is not None:
        replaced = await before_reply(request, fault, state.closing)
        if replaced is not None:
            return replaced
    try:
        turn = _READERS[dialect](body)
    except (AttributeError, TypeError):  # a field of the wrong JSON type somewhere in the body
        return error_response(400, "The request body does not have the shape this endpoint expects.")
    plan = _plan(turn, options.parallel)
    stream = body.get("stream") is True
    frames = _RENDER_STREAM[dialect](body, plan) if stream else [_RENDER_JSON[dialect](body, plan)]
    if fault is not None:
        return await send_broken(request, frames, fault, sse=stream, closing=state.closing,
                                 trickle_delay_s=options.trickle_delay_ms / 1000)
    if stream:
        return await _send_stream(request, frames, options.token_delay_ms / 1000)
    return web.Response(body=frames[0], content_type="application/json")


async def _responses(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "responses")


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "chat")


def _models_handler(options: SimulatorOptions) -> Callable[[web.Request], Any]:
    created = int(time.time())
    payload = _encode({"object": "list", "data": [
        {"id": model, "object": "model", "created": created, "owned_by": "interlock-simulator"}
        for model in options.models]})

    async def models(request: web.Request) -> web.Response:
        if not _authorized(request.app[_STATE], request):
            return _unauthorized()
        return web.Response(body=payload, content_type="application/json")

    return models


async def _list_requests(request: web.Request) -> web.Response:
    return web.Response(body=_encode(list(request.app[_STATE].requests)), content_type="application/json")


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[_STATE].requests.clear()
    return web.Response(status=204)


async def _signal_closing(app: web.Application) -> None:
    app[_STATE].closing.set()


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    """The simulator as an aiohttp application. Raises ``ValueError`` for a bad ``options.fault``."""
    options = options or SimulatorOptions()
    if options.fault is not None:
        parse_fault(options.fault)  # fail at start-up, not on the first request
    app = web.Application(client_max_size=64 * 1024 * 1024)  # conversations with images get large
    app[_STATE] = _State(options)
    app.on_shutdown.append(_signal_closing)
    app.router.add_post("/v1/responses", _responses)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models_handler(options))
    app.router.add_get("/_sim/requests", _list_requests)
    app.router.add_delete("/_sim/requests", _clear_requests)
    return app


class RunningSimulator:
    """A simulator serving on a socket; ``url`` has no trailing slash and no ``/v1``."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self._runner = runner
        self.url = url

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_simulator(
    host: str = "127.0.0.1", port: int = 0, options: SimulatorOptions | None = None
) -> RunningSimulator:
    """Serve a simulator on ``host:port`` (port 0 picks a free one) until ``close()``."""
    # handler_cancellation: a client that gives up on a stalled reply ends its handler too.
    runner = web.AppRunner(create_app(options), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return RunningSimulator(runner, f"http://{f'[{host}]' if ':' in host else host}:{bound_port}")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve_forever(host: str, port: int, options: SimulatorOptions) -> None:
    simulator = await start_simulator(host, port, options)
    print(f"interlock simulator listening on {simulator.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.close()


def main(argv: list[str] | None = None) -> int:
    """``interlock simulate``: serve a simulator until interrupted."""
    parser = argparse.ArgumentParser(
        prog="interlock simulate", description="Serve a deterministic OpenAI-compatible upstream for demos and tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each reply")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between streamed events")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    options = SimulatorOptions(latency_ms=args.latency_ms, token_delay_ms=args.token_delay_ms, api_key=args.api_key)
    # Ctrl-C is how this command is meant to stop.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve_forever(args.host, args.port, options))
    return 0
