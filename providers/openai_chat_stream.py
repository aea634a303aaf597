"""Chat Completions replies -> gateway deltas: the SSE stream decoder and the reply-side helpers
(usage, finish reasons, error frames) that the whole-body path in ``providers.openai_chat`` shares.

The decoder is a small state machine fed one SSE event at a time, so it can be tested without I/O.
Item keys are minted per *segment*: reasoning, message text and each tool call get their own key,
and a new segment starts whenever the kind of output changes (reasoning after text opens a new
reasoning item rather than reusing a closed one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from providers.common import count, finish_from, token_usage
from providers.http import ErrorMapper, decode_json
from proxy.errors import UpstreamError
from proxy.ids import new_id
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
    ReasoningDelta,
    RefusalDelta,
    ResponseInfo,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    UsageDelta,
)
from proxy.schema.response import Usage

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",  # Together
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "max_output_tokens",
    "model_length": "max_output_tokens",
    "content_filter": "content_filter",
}
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "overloaded_error": 503,
}
_json_encode = msgspec.json.Encoder().encode


def finish_reason(value: Any) -> FinishReason:
    """A Chat ``finish_reason`` as the gateway's; unknown values count as a normal stop, and
    ``error`` (Mistral: the generation failed midway) fails the turn."""
    if value == "error":
        raise UpstreamError("the upstream failed while generating (finish_reason 'error')")
    return finish_from(_FINISH, value)


def usage_from(raw: Any) -> Usage | None:
    """Chat usage (``prompt_tokens`` includes cached tokens, ``completion_tokens`` reasoning)."""
    if not isinstance(raw, Mapping):
        return None
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    reasoning = count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, Mapping) else 0
    return token_usage(count(raw.get("prompt_tokens")), count(raw.get("completion_tokens")),
                       cached=cached or count(raw.get("num_cached_tokens")), reasoning=reasoning,
                       total=count(raw.get("total_tokens")))


def chunk_usage(chunk: Mapping[str, Any]) -> Usage | None:
    """Usage from a reply or chunk: top-level ``usage`` or Groq's ``x_groq.usage``."""
    usage = usage_from(chunk.get("usage"))
    if usage is None:
        extension = chunk.get("x_groq")
        if isinstance(extension, Mapping):
            usage = usage_from(extension.get("usage"))
    return usage


def reply_info(chunk: Mapping[str, Any]) -> ResponseInfo | None:
    """The upstream model and tier; an empty model (Azure's prompt-filter chunk) is no model."""
    model, tier = chunk.get("model") or None, chunk.get("service_tier")
    if not isinstance(model, str) and not isinstance(tier, str):
        return None
    return ResponseInfo(model=model if isinstance(model, str) else msgspec.UNSET,
                        service_tier=tier if isinstance(tier, str) else msgspec.UNSET)


def reasoning_text(message: Mapping[str, Any]) -> str:
    """Raw reasoning some hosts return beside the content (Groq/OpenRouter ``reasoning``, vLLM and
    DeepSeek ``reasoning_content``)."""
    for field in ("reasoning", "reasoning_content"):
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def content_parts(content: Any) -> list[tuple[str, str]]:
    """``content`` as ``(kind, text)`` pieces in order, ``kind`` being ``message`` or
    ``reasoning``: a string, or Mistral-style chunks (``text``, and ``thinking`` holding text
    chunks). Empty pieces are left out."""
    if not isinstance(content, list):
        return [("message", content)] if isinstance(content, str) and content else []
    parts: list[tuple[str, str]] = []
    for chunk in content:
        kind = chunk.get("type") if isinstance(chunk, Mapping) else None
        if kind == "text":
            parts += content_parts(chunk.get("text"))
        elif kind == "thinking":
            text = "".join(piece for _, piece in content_parts(chunk.get("thinking")))
            if text:
                parts.append(("reasoning", text))
    return parts


def arguments_text(value: Any) -> str:
    """Tool-call arguments as a JSON string; a few hosts send an object or ``null``."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _json_encode(value).decode()


def raise_error_payload(payload: Any, data: bytes, map_error: ErrorMapper) -> None:
    """Raise the mapped error for an error frame (``event: error`` or a chunk with ``error``).

    Such frames carry no HTTP status, so one is inferred from the error's numeric ``code``
    (OpenRouter), its ``status`` or its ``type`` (OpenAI/Groq shape); otherwise 500."""
    error = payload.get("error", payload) if isinstance(payload, Mapping) else None
    status = 500
    if isinstance(error, Mapping):
        for field in ("code", "status"):
            value = error.get(field)
            if isinstance(value, int) and 400 <= value <= 599:
                status = value
                break
        else:
            status = _ERROR_TYPE_STATUS.get(str(error.get("type")), 500)
    raise map_error(status, {}, data)


@dataclass(slots=True)
class _Call:
    key: str
    call_id: str
    name: str
    arguments: str = ""
    started: bool = False
    pending: str = ""  # fragments that arrived before the name did


class ChatStreamDecoder:
    """Turns ``chat.completion.chunk`` events into deltas. ``feed`` takes one SSE event and
    returns its deltas; ``close`` ends the turn (usage, finish) once ``[DONE]`` or EOF is seen."""

    def __init__(self, provider: str, map_error: ErrorMapper) -> None:
        self._provider = provider
        self._map_error = map_error
        self._calls: dict[int, _Call] = {}
        self._segment = 0
        self._kind: str | None = None  # kind of the item opened last: reasoning | message | call
        self._current_call: _Call | None = None
        self._info: tuple[Any, Any] | None = None
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None
        self.done = False

    def feed(self, event: str | None, data: bytes) -> list[Delta]:
        if data.strip() == b"[DONE]":
            self.done = True
            return []
        chunk = decode_json(data, self._provider)
        if event == "error" or (isinstance(chunk, Mapping) and chunk.get("error")):
            raise_error_payload(chunk, data, self._map_error)
        if not isinstance(chunk, Mapping):
            raise UpstreamError(f"{self._provider} sent an unexpected stream chunk")
        out: list[Delta] = []
        info = (chunk.get("model"), chunk.get("service_tier"))
        if info != self._info and (info_delta := reply_info(chunk)) is not None:
            self._info = info
            out.append(info_delta)
        usage = chunk_usage(chunk)
        if usage is not None:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        return out

    def close(self) -> list[Delta]:
        """Deltas that end the turn; raises when the stream stopped before a finish reason."""
        if self._finish is None:
            raise UpstreamError(f"{self._provider} stream ended early")
        out: list[Delta] = []
        for call in self._calls.values():
            if not call.started:
                raise UpstreamError(f"{self._provider} streamed a tool call without a name")
        if self._usage is not None:
            out.append(UsageDelta(usage=self._usage))
        out.append(Finish(reason=self._finish))
        return out

    # -- per choice ----------------------------------------------------------------------------
    def _choice(self, choice: Mapping[str, Any]) -> list[Delta]:
        out: list[Delta] = []
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            reasoning = reasoning_text(delta)
            if reasoning:
                out.append(ReasoningDelta(key=self._key("reasoning"), text=reasoning))
            for kind, text in content_parts(delta.get("content")):
                if kind == "reasoning":
                    out.append(ReasoningDelta(key=self._key(kind), text=text))
                else:
                    out.append(TextDelta(key=self._key(kind), text=text))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out.append(RefusalDelta(key=self._key("message"), text=refusal))
            for position, fragment in enumerate(delta.get("tool_calls") or ()):
                if isinstance(fragment, Mapping):
                    out += self._tool_fragment(position, fragment)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self._finish = finish_reason(reason)
        return out

    def _key(self, kind: str) -> str:
        if self._kind != kind:
            self._segment += 1
            self._kind = kind
            self._current_call = None
        return f"{kind}{self._segment}"

    def _tool_fragment(self, position: int, fragment: Mapping[str, Any]) -> list[Delta]:
        index = fragment.get("index")
        index = index if isinstance(index, int) else position
        function = fragment.get("function")
        function = function if isinstance(function, Mapping) else {}
        call = self._calls.get(index)
        out: list[Delta] = []
        if call is None:
            call_id = fragment.get("id")
            self._segment += 1
            call = _Call(key=f"call{self._segment}", call_id=call_id if isinstance(call_id, str) and call_id
                         else new_id("call"), name="")
            self._calls[index] = call
            self._kind, self._current_call = "call", call
        elif call is not self._current_call:
            raise UpstreamError(f"{self._provider} interleaved tool-call fragments across items")
        name = function.get("name")
        if not call.started and isinstance(name, str) and name:
            call.name, call.started = name, True
            out.append(ToolCallStart(key=call.key, call_id=call.call_id, name=name))
        text = self._new_arguments(call, arguments_text(function.get("arguments")))
        if text:
            if call.started:
                out.append(ToolCallArguments(key=call.key, text=call.pending + text))
                call.pending = ""
            else:
                call.pending += text
        elif call.started and call.pending:
            out.append(ToolCallArguments(key=call.key, text=call.pending))
            call.pending = ""
        return out

    @staticmethod
    def _new_arguments(call: _Call, text: str) -> str:
        """The part of ``text`` not seen yet. Some hosts resend the whole argument string in
        a later fragment; only a fragment that is itself complete JSON extending what was
        received is treated as a resend."""
        if not text:
            return ""
        seen = call.arguments
        if seen and text.startswith(seen) and _is_json(text):
            text = text[len(seen):]
        call.arguments += text
        return text


def _is_json(text: str) -> bool:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return True
