"""The Cohere v2 Chat dialect: ``POST {base_url}/chat`` (base URL ``https://api.cohere.com/v2``),
bearer auth, JSON or SSE with named events.

``prepare`` translates an ``UpstreamRequest`` without I/O; ``run`` sends it and yields deltas from
the whole reply or, when streaming, through ``CohereStreamDecoder``.

Request mapping:

* ``instructions``, ``system`` and ``developer`` messages become ``system`` messages; user content
  keeps text and images (``image_url`` with the URL or data: URL and ``detail``).
* An assistant turn (consecutive reasoning, assistant messages and function calls) becomes one
  ``assistant`` message: reasoning text as ``thinking`` parts (the reasoning content, else its
  summary), text as ``text`` parts, or, when the turn calls tools, as ``tool_plan`` beside
  ``tool_calls``. A turn with nothing but reasoning is left out (Cohere needs no thinking back).
  Each ``function_call_output`` is a ``tool`` message.
* Tools nest under ``function``; any ``strict`` tool sets ``strict_tools``. ``tool_choice``:
  ``auto`` is left out, ``none``/``required`` are ``NONE``/``REQUIRED``; a named function (or
  ``allowed_tools``) sends only those tools, with ``REQUIRED`` when the choice forces a call.
* ``max_output_tokens`` -> ``max_tokens``, ``top_p`` -> ``p``, ``text.format`` -> ``response_format``
  (``json_object`` with ``json_schema``), ``reasoning.effort`` -> ``thinking`` (``none`` disables it,
  lower efforts get a token budget).
* ``parallel_tool_calls: false`` has no Cohere switch: the adapter keeps the first call of a reply.

Refused with ``UnsupportedFeature`` (400): files, video, images by ``file_id`` or in tool output,
``top_logprobs``, tools and items outside the core, compaction items. Left out because Cohere has
no equivalent: ``metadata``, ``store``, ``service_tier``, ``safety_identifier``,
``prompt_cache_key``, ``truncation``, ``text.verbosity``, ``reasoning.summary``.

Reply mapping: ``thinking`` parts -> reasoning content, ``text`` parts -> message text,
``tool_plan`` -> a ``commentary`` message before the calls, ``tool_calls`` -> function calls with
Cohere's ids; citations are dropped (they point at tool outputs, not URLs). Usage: ``tokens``
(not ``billed_units``), ``cached_tokens``. ``finish_reason`` ``ERROR``/``TIMEOUT`` is an upstream
failure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from msgspec import UNSET

from providers.base import PreparedCall
from providers.http import (
    ErrorMapper,
    auth_headers,
    decode_json,
    error_message,
    iter_sse,
    join_url,
    parse_retry_after,
    read_body,
    send,
)
from proxy.errors import GatewayError, UnsupportedFeature, UpstreamError, error_for_upstream_status
from proxy.ids import new_id
from proxy.schema.content import InputImage, InputText, OutputText, ReasoningText, Refusal, SummaryText, Text
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    UsageDelta,
)
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message, OpaqueItem, Reasoning
from proxy.schema.request import (
    CreateResponseBody,
    FunctionTool,
    SpecificFunction,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    Tool,
    ToolChoice,
)
from proxy.schema.response import InputTokensDetails, Usage
from proxy.schema.upstream import UpstreamRequest

_PATH = "/chat"
log = logging.getLogger(__name__)
_MAX_MESSAGE = 2000
_TEXT_PARTS = (InputText, OutputText, Text)
_FINISH: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "TOOL_CALL": "tool_calls",
    "MAX_TOKENS": "max_output_tokens",
}
_FAILED_FINISH = {"ERROR": 500, "TIMEOUT": 504}
"""Finish reasons that mean the generation failed, with the HTTP status they count as."""
_THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192}
"""``reasoning.effort`` -> ``thinking.token_budget``; ``high``/``xhigh`` think without a budget."""
_PLAN_KEY = "plan"
_json_encode = msgspec.json.Encoder().encode


class CohereProvider:
    """``Provider`` for the ``cohere`` dialect."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        body: dict[str, Any] = {"model": deployment.model,
                                "messages": _messages(request.items, request.instructions)}
        tools, choice = _tools_and_choice(request.tools, request.tool_choice)
        if tools:
            body["tools"] = [_tool(tool) for tool in tools]
            if any(tool.strict is True for tool in tools):
                body["strict_tools"] = True
        if choice is not None:
            body["tool_choice"] = choice
        _parameters(request.body, body)
        body["stream"] = request.stream
        return PreparedCall(url=join_url(deployment.base_url, _PATH, deployment.query),
                            headers=auth_headers(deployment), body=body)

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
        call = self.prepare(request)
        deployment = request.deployment
        provider = deployment.provider
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        single_call = request.body.parallel_tool_calls is False
        response = await send(self._session, call, deployment, map_error)
        if request.stream:
            async for delta in decode_stream(iter_sse(response, provider), provider, map_error, single_call):
                yield delta
            return
        raw = await read_body(response, provider)
        reply = decode_json(raw, provider)
        if not isinstance(reply, Mapping):
            raise UpstreamError(f"{provider} sent an unexpected reply")
        for delta in _reply_deltas(reply, map_error, single_call):
            yield delta


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The adapter's one error mapper. Cohere errors are ``{"id"?, "message"}`` with no code, so
    the status decides; only the (shortened, redacted) message travels on."""
    log.debug("upstream error %s: %r", status, body[:4096])
    message, _, _ = error_message(body)
    if secret:
        message = message.replace(secret, "[redacted]")
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return error_for_upstream_status(status, message, retry_after=parse_retry_after(headers))


def _raise_failed_finish(reason: str, map_error: ErrorMapper) -> None:
    status = _FAILED_FINISH.get(reason)
    if status is not None:
        raise map_error(status, {}, _json_encode({"message": f"the model stopped with finish_reason {reason}"}))


# -- request translation -----------------------------------------------------------------------
@dataclass(slots=True)
class _AssistantTurn:
    thinking: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def message(self) -> dict[str, Any] | None:
        thinking = [{"type": "thinking", "thinking": text} for text in self.thinking]
        if self.calls:
            message: dict[str, Any] = {"role": "assistant", "tool_calls": self.calls}
            if self.texts:
                message["tool_plan"] = "\n\n".join(self.texts)
            if thinking:
                message["content"] = thinking
            return message
        if not self.texts:
            return None
        return {"role": "assistant", "content": thinking + [{"type": "text", "text": text} for text in self.texts]}


def _messages(items: list[Item], instructions: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    turn: _AssistantTurn | None = None

    def flush() -> None:
        nonlocal turn
        if turn is not None and (message := turn.message()) is not None:
            messages.append(message)
        turn = None

    for index, item in enumerate(items):
        if isinstance(item, Reasoning | FunctionCall) or (isinstance(item, Message) and item.role == "assistant"):
            if turn is not None and ((turn.calls and not isinstance(item, FunctionCall))
                                     or (turn.texts and isinstance(item, Reasoning))):
                flush()  # text after calls, or reasoning after text or calls, starts the next turn
            turn = turn or _AssistantTurn()
            if isinstance(item, FunctionCall):
                turn.calls.append({"id": item.call_id, "type": "function",
                                   "function": {"name": item.name, "arguments": item.arguments}})
            elif isinstance(item, Reasoning):
                text = _reasoning_text(item)
                if text:
                    turn.thinking.append(text)
            else:
                turn.texts.append(_assistant_text(item, index))
            continue
        flush()
        if isinstance(item, Message):
            messages.append(_message(item, index))
        elif isinstance(item, FunctionCallOutput):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item.output, index)})
        else:
            raise UnsupportedFeature(f"input items of type {_item_type(item)!r} are not supported by this model's "
                                     "provider (Cohere)", param=f"input[{index}]")
    flush()
    return messages


def _item_type(item: Item) -> str:
    return item.type if isinstance(item, OpaqueItem) else str(type(item).__struct_config__.tag)


def _reasoning_text(item: Reasoning) -> str:
    """The reasoning as one text: its raw content if any, else its summary."""
    content = item.content if isinstance(item.content, list) else []
    parts = [part.text for part in content if isinstance(part, ReasoningText | SummaryText | Text)]
    if not parts:
        parts = [part.text for part in item.summary if isinstance(part, SummaryText | ReasoningText | Text)]
    return "\n\n".join(part for part in parts if part)


def _assistant_text(item: Message, index: int) -> str:
    if isinstance(item.content, str):
        return item.content
    texts = []
    for n, part in enumerate(item.content):
        if isinstance(part, _TEXT_PARTS):
            texts.append(part.text)
        elif isinstance(part, Refusal):
            texts.append(part.refusal)
        else:
            raise _unsupported_part(part, "assistant messages", f"input[{index}].content[{n}]")
    return "".join(texts)


def _message(item: Message, index: int) -> dict[str, Any]:
    role = "system" if item.role in ("system", "developer") else "user"
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    param = f"input[{index}].content"
    return {"role": role, "content": [_part(part, role, f"{param}[{n}]") for n, part in enumerate(item.content)]}


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    if isinstance(part, _TEXT_PARTS):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage) and role == "user":
        if not part.image_url:
            raise UnsupportedFeature("Cohere takes images by URL or data: URL, not by file_id", param=param)
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}}
    raise _unsupported_part(part, f"{role} messages", param)


def _tool_output(output: str | list[Any], index: int) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    parts = []
    for n, part in enumerate(output):
        if not isinstance(part, _TEXT_PARTS):
            raise _unsupported_part(part, "tool outputs", f"input[{index}].output[{n}]")
        parts.append({"type": "text", "text": part.text})
    return parts


def _unsupported_part(part: Any, where: str, param: str) -> UnsupportedFeature:
    kind = getattr(part, "type", None) or type(part).__name__
    return UnsupportedFeature(f"{kind} content parts are not supported in {where} by Cohere", param=param)


def _tools_and_choice(tools: list[Tool], choice: ToolChoice | None) -> tuple[list[FunctionTool], str | None]:
    """Cohere tools and ``tool_choice``. Cohere cannot name a tool to call, so a named function or
    ``allowed_tools`` narrows the tools sent to those, forced with ``REQUIRED`` when the choice is."""
    functions: list[FunctionTool] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, FunctionTool):
            raise UnsupportedFeature(f"tools of type {tool.type!r} are not supported by this model's provider "
                                     "(Cohere)", param=f"tools[{index}]")
        functions.append(tool)
    if choice is None or choice == "auto":
        return functions, None
    if isinstance(choice, str):
        return functions, choice.upper()
    if isinstance(choice, OpaqueItem):
        raise UnsupportedFeature(f"tool_choice of type {choice.type!r} is not supported by this model's provider "
                                 "(Cohere)", param="tool_choice")
    names = [choice.name] if isinstance(choice, SpecificFunction) else [tool.name for tool in choice.tools]
    chosen = [tool for tool in functions if tool.name in names]  # proxy.decoding checked they exist
    mode = "required" if isinstance(choice, SpecificFunction) else choice.mode
    return chosen, None if mode == "auto" else mode.upper()


def _tool(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    for name in ("description", "parameters"):
        value = getattr(tool, name)
        if value is not UNSET and value is not None:
            function[name] = value
    return {"type": "function", "function": function}


def _parameters(params: CreateResponseBody, body: dict[str, Any]) -> None:
    """Sampling, limits and output options; only what the caller set is sent."""

    def put(name: str, value: Any) -> None:
        if value is not UNSET and value is not None:
            body[name] = value

    if params.top_logprobs not in (UNSET, None, 0):
        raise UnsupportedFeature("Cohere does not return top log probabilities", param="top_logprobs")
    text = params.text
    if text is not UNSET and text is not None:
        fmt = text.format
        if isinstance(fmt, TextFormatJsonSchema):
            body["response_format"] = {"type": "json_object"}
            if fmt.schema is not UNSET and fmt.schema is not None:
                body["response_format"]["json_schema"] = fmt.schema
        elif isinstance(fmt, TextFormatJsonObject):
            body["response_format"] = {"type": "json_object"}
    reasoning = params.reasoning
    if reasoning is not UNSET and reasoning is not None and isinstance(reasoning.effort, str):
        effort = reasoning.effort
        if effort == "none":
            body["thinking"] = {"type": "disabled"}
        else:
            body["thinking"] = {"type": "enabled"}
            if effort in _THINKING_BUDGET:
                body["thinking"]["token_budget"] = _THINKING_BUDGET[effort]
    put("max_tokens", params.max_output_tokens)
    put("temperature", params.temperature)
    put("p", params.top_p)
    put("presence_penalty", params.presence_penalty)
    put("frequency_penalty", params.frequency_penalty)


# -- replies -----------------------------------------------------------------------------------
def _usage(raw: Any) -> Usage | None:
    """``tokens`` are what the model saw and wrote; ``billed_units`` (a subset) only when absent."""
    if not isinstance(raw, Mapping):
        return None
    counts = raw.get("tokens")
    if not isinstance(counts, Mapping):
        counts = raw.get("billed_units")
    counts = counts if isinstance(counts, Mapping) else {}
    input_tokens, output_tokens = _int(counts.get("input_tokens")), _int(counts.get("output_tokens"))
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens,
                 input_tokens_details=InputTokensDetails(cached_tokens=_int(raw.get("cached_tokens"))))


def _finish(reason: Any, map_error: ErrorMapper) -> Finish:
    reason = reason if isinstance(reason, str) else ""
    _raise_failed_finish(reason, map_error)
    return Finish(reason=_FINISH.get(reason, "stop"))


def _call_deltas(key: str, tool_call: Mapping[str, Any]) -> list[Delta]:
    function = tool_call.get("function")
    function = function if isinstance(function, Mapping) else {}
    name, call_id = function.get("name"), tool_call.get("id")
    if not isinstance(name, str) or not name:
        raise UpstreamError("upstream returned a tool call without a name")
    out: list[Delta] = [ToolCallStart(key=key, call_id=call_id if isinstance(call_id, str) and call_id
                                      else new_id("call"), name=name)]
    arguments = function.get("arguments")
    if isinstance(arguments, str) and arguments:
        out.append(ToolCallArguments(key=key, text=arguments))
    return out


def _reply_deltas(reply: Mapping[str, Any], map_error: ErrorMapper, single_call: bool) -> list[Delta]:
    """Deltas for a whole reply, in the order a stream of the same reply would give them."""
    out: list[Delta] = []
    message = reply.get("message")
    message = message if isinstance(message, Mapping) else {}
    for index, part in enumerate(message.get("content") or ()):
        if isinstance(part, Mapping):
            out += _content_deltas(f"content{index}", part)
    plan = message.get("tool_plan")
    if isinstance(plan, str) and plan:
        out.append(TextDelta(key=_PLAN_KEY, text=plan, phase="commentary"))
    for index, tool_call in enumerate(message.get("tool_calls") or ()):
        if isinstance(tool_call, Mapping) and not (single_call and index):
            out += _call_deltas(f"call{index}", tool_call)
    usage = _usage(reply.get("usage"))
    if usage is not None:
        out.append(UsageDelta(usage=usage))
    out.append(_finish(reply.get("finish_reason"), map_error))
    return out


def _content_deltas(key: str, content: Mapping[str, Any]) -> list[Delta]:
    """A content part, or a streamed fragment of one (which has no ``type``, only its text under
    ``thinking`` or ``text``): thinking is reasoning, text is message text."""
    kind = content.get("type") or ("thinking" if "thinking" in content else "text")
    value = content.get(kind)
    if not isinstance(value, str) or not value:
        return []
    return [ReasoningDelta(key=key, text=value) if kind == "thinking" else TextDelta(key=key, text=value)]


class CohereStreamDecoder:
    """Turns Cohere's named SSE events into deltas. ``feed`` takes one event; ``close`` ends the
    turn (usage, finish) once ``message-end`` was seen; ``done`` is set by ``[DONE]``."""

    def __init__(self, provider: str, map_error: ErrorMapper, single_call: bool = False) -> None:
        self._provider = provider
        self._map_error = map_error
        self._single_call = single_call
        self._calls: set[Any] = set()  # tool-call indices being passed on
        self._usage: Usage | None = None
        self._finish: Finish | None = None
        self.done = False

    def feed(self, event: str | None, data: bytes) -> list[Delta]:
        if data.strip() == b"[DONE]":
            self.done = True
            return []
        payload = decode_json(data, self._provider)
        if not isinstance(payload, Mapping):
            raise UpstreamError(f"{self._provider} sent an unexpected stream event")
        kind = payload.get("type", event)
        index = payload.get("index")
        delta = payload.get("delta")
        message = delta.get("message") if isinstance(delta, Mapping) else None
        message = message if isinstance(message, Mapping) else {}
        if kind in ("content-start", "content-delta"):
            content = message.get("content")
            return _content_deltas(f"content{index}", content) if isinstance(content, Mapping) else []
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return [TextDelta(key=_PLAN_KEY, text=plan, phase="commentary")] if isinstance(plan, str) and plan else []
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool_call(kind, index, message.get("tool_calls"))
        if kind == "message-end" and isinstance(delta, Mapping):
            self._usage = _usage(delta.get("usage"))
            self._finish = _finish(delta.get("finish_reason"), self._map_error)
        return []  # message-start, *-end, citation events: nothing to pass on

    def _tool_call(self, kind: str, index: Any, tool_call: Any) -> list[Delta]:
        if not isinstance(tool_call, Mapping):
            return []
        if kind == "tool-call-start":
            if self._single_call and self._calls:
                return []
            self._calls.add(index)
            return _call_deltas(f"call{index}", tool_call)
        if index not in self._calls:
            if self._single_call:
                return []
            raise UpstreamError(f"{self._provider} streamed tool-call arguments before the call started")
        function = tool_call.get("function")
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        return [ToolCallArguments(key=f"call{index}", text=arguments)] if isinstance(arguments, str) and arguments \
            else []

    def close(self) -> list[Delta]:
        if self._finish is None:
            raise UpstreamError(f"{self._provider} stream ended early")
        out: list[Delta] = [UsageDelta(usage=self._usage)] if self._usage is not None else []
        out.append(self._finish)
        return out


async def decode_stream(events: AsyncIterator[tuple[str | None, bytes]], provider: str, map_error: ErrorMapper,
                        single_call: bool = False) -> AsyncGenerator[Delta, None]:
    """Deltas for one streamed turn, read from ``providers.http.iter_sse``."""
    decoder = CohereStreamDecoder(provider, map_error, single_call)
    try:
        async for event, data in events:
            for delta in decoder.feed(event, data):
                yield delta
            if decoder.done:
                break
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:  # release the upstream connection now, not at garbage collection
            await aclose()
    for delta in decoder.close():
        yield delta


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
