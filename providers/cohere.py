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
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from providers.base import PreparedCall, SessionProvider
from providers.common import (
    TEXT_PARTS,
    AssistantTurn,
    Refusals,
    assistant_turns,
    chat_function,
    count,
    finish_from,
    output_format,
    part_texts,
    put,
    reasoning_effort,
    token_usage,
    tool_call_start,
)
from providers.http import (
    ErrorMapper,
    auth_headers,
    decode_events,
    decode_json,
    join_url,
    parse_retry_after,
    read_error,
    read_json,
    send,
)
from proxy.errors import GatewayError, UnsupportedFeature, UpstreamError, error_for_upstream_status
from proxy.schema.content import InputImage
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    UsageDelta,
)
from proxy.schema.items import Item, Message, OpaqueItem
from proxy.schema.request import (
    CreateResponseBody,
    FunctionTool,
    SpecificFunction,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    Tool,
    ToolChoice,
)
from proxy.schema.response import Usage
from proxy.schema.upstream import UpstreamRequest

_PATH = "/chat"
log = logging.getLogger(__name__)
_REFUSE = Refusals("Cohere")
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


class CohereProvider(SessionProvider):
    """``Provider`` for the ``cohere`` dialect."""

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        body: dict[str, Any] = {"model": deployment.model,
                                "messages": _messages(request.items, request.instructions)}
        tools, choice = _tools_and_choice(request.tools, request.tool_choice)
        if tools:
            body["tools"] = [chat_function(tool, ("description", "parameters")) for tool in tools]
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
            async for delta in decode_events(response, provider, CohereStreamDecoder(provider, map_error, single_call)):
                yield delta
            return
        _, reply = await read_json(response, provider)
        for delta in _reply_deltas(reply, map_error, single_call):
            yield delta


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The adapter's one error mapper. Cohere errors are ``{"id"?, "message"}`` with no code, so
    the status decides; only the (shortened, redacted) message travels on."""
    message, _, _ = read_error(log, status, body, secret)
    return error_for_upstream_status(status, message, retry_after=parse_retry_after(headers))


def _raise_failed_finish(reason: str, map_error: ErrorMapper) -> None:
    status = _FAILED_FINISH.get(reason)
    if status is not None:
        raise map_error(status, {}, _json_encode({"message": f"the model stopped with finish_reason {reason}"}))


# -- request translation -----------------------------------------------------------------------
def _messages(items: list[Item], instructions: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for entry in assistant_turns(items, _REFUSE):
        if isinstance(entry, AssistantTurn):
            message = _assistant_message(entry)
            if message is not None:
                messages.append(message)
            continue
        index, item = entry
        if isinstance(item, Message):
            messages.append(_message(item, index))
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item.output, index)})
    return messages


def _assistant_message(turn: AssistantTurn) -> dict[str, Any] | None:
    """One assistant turn: thinking parts, then text parts or, beside tool calls, a ``tool_plan``;
    nothing for a turn of reasoning alone (Cohere needs no thinking back)."""
    thinking = [{"type": "thinking", "thinking": text} for text in turn.thinking]
    if turn.calls:
        message: dict[str, Any] = {"role": "assistant", "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for _, call in turn.calls]}
        if turn.texts:
            message["tool_plan"] = "\n\n".join(turn.texts)
        if thinking:
            message["content"] = thinking
        return message
    if not turn.texts:
        return None
    return {"role": "assistant", "content": thinking + [{"type": "text", "text": text} for text in turn.texts]}


def _message(item: Message, index: int) -> dict[str, Any]:
    role = "system" if item.role in ("system", "developer") else "user"
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    param = f"input[{index}].content"
    return {"role": role, "content": [_part(part, role, f"{param}[{n}]") for n, part in enumerate(item.content)]}


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    if isinstance(part, TEXT_PARTS):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage) and role == "user":
        if not part.image_url:
            raise UnsupportedFeature("Cohere takes images by URL or data: URL, not by file_id", param=param)
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}}
    raise _REFUSE.part(part, f"{role} messages", param)


def _tool_output(output: str | list[Any], index: int) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    return [{"type": "text", "text": text}
            for text in part_texts(output, f"input[{index}].output", "tool outputs", _REFUSE)]


def _tools_and_choice(tools: list[Tool], choice: ToolChoice | None) -> tuple[list[FunctionTool], str | None]:
    """Cohere tools and ``tool_choice``. Cohere cannot name a tool to call, so a named function or
    ``allowed_tools`` narrows the tools sent to those, forced with ``REQUIRED`` when the choice is."""
    functions = _REFUSE.functions(tools)
    if choice is None or choice == "auto":
        return functions, None
    if isinstance(choice, str):
        return functions, choice.upper()
    if isinstance(choice, OpaqueItem):
        raise _REFUSE.tool_choice(choice)
    names = [choice.name] if isinstance(choice, SpecificFunction) else [tool.name for tool in choice.tools]
    chosen = [tool for tool in functions if tool.name in names]  # proxy.decoding checked they exist
    mode = "required" if isinstance(choice, SpecificFunction) else choice.mode
    return chosen, None if mode == "auto" else mode.upper()


def _parameters(params: CreateResponseBody, body: dict[str, Any]) -> None:
    """Sampling, limits and output options; only what the caller set is sent."""
    if params.top_logprobs not in (UNSET, None, 0):
        raise UnsupportedFeature("Cohere does not return top log probabilities", param="top_logprobs")
    fmt = output_format(params)
    if isinstance(fmt, TextFormatJsonSchema):
        body["response_format"] = {"type": "json_object"}
        put(body["response_format"], "json_schema", fmt.schema)
    elif isinstance(fmt, TextFormatJsonObject):
        body["response_format"] = {"type": "json_object"}
    effort = reasoning_effort(params)
    if effort == "none":
        body["thinking"] = {"type": "disabled"}
    elif effort is not None:
        body["thinking"] = {"type": "enabled"}
        if effort in _THINKING_BUDGET:
            body["thinking"]["token_budget"] = _THINKING_BUDGET[effort]
    put(body, "max_tokens", params.max_output_tokens)
    put(body, "temperature", params.temperature)
    put(body, "p", params.top_p)
    put(body, "presence_penalty", params.presence_penalty)
    put(body, "frequency_penalty", params.frequency_penalty)


# -- replies -----------------------------------------------------------------------------------
def _usage(raw: Any) -> Usage | None:
    """``tokens`` are what the model saw and wrote; ``billed_units`` (a subset) only when absent."""
    if not isinstance(raw, Mapping):
        return None
    counts = raw.get("tokens")
    if not isinstance(counts, Mapping):
        counts = raw.get("billed_units")
    counts = counts if isinstance(counts, Mapping) else {}
    return token_usage(count(counts.get("input_tokens")), count(counts.get("output_tokens")),
                       cached=count(raw.get("cached_tokens")))


def _finish(reason: Any, map_error: ErrorMapper) -> Finish:
    reason = reason if isinstance(reason, str) else ""
    _raise_failed_finish(reason, map_error)
    return Finish(reason=finish_from(_FINISH, reason))


def _call_deltas(key: str, tool_call: Mapping[str, Any]) -> list[Delta]:
    start, function = tool_call_start(key, tool_call)
    out: list[Delta] = [start]
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


