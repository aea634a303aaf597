"""Anthropic Messages replies -> gateway deltas: the SSE stream decoder and the translation of a
whole ``message``, which share the block, usage, stop-reason and error helpers here.

Items are keyed by content block ``index``, except that a run of consecutive ``text`` blocks
(Anthropic splits text around citations) shares the key of its first block, so it reads as one
assistant message. Blocks become:

* ``text`` -> message text;
* ``thinking`` -> a reasoning item: the thinking text as its summary (Claude 4 returns summarised
  thinking) and, as its reasoning state, the block itself re-encoded as
  ``{"type":"thinking","thinking","signature"}``; ``redacted_thinking`` -> a reasoning item with
  no summary whose state is ``{"type":"redacted_thinking","data"}``. The adapter puts that JSON
  back, unchanged, when the item returns in a later request (the engine seals it in between);
* ``tool_use`` -> a function call whose arguments are the ``input`` object as JSON (streamed as the
  ``input_json_delta`` fragments it arrives in).

Other block types belong to Anthropic server tools, which the gateway never offers; they are
skipped. No ``ItemDone`` is emitted per block: the builder closes an item when the next opens or
the turn ends, so the block that ``max_tokens`` cut ends ``incomplete`` in both paths alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgspec

from providers.common import count, finish_from, token_usage
from providers.http import ErrorMapper, decode_json
from proxy.errors import UpstreamError
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
    ItemKey,
    ReasoningDelta,
    ReasoningState,
    ResponseInfo,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    UsageDelta,
)
from proxy.schema.response import Usage

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    # Only Anthropic server tools pause a turn, and the gateway offers none; what came is complete.
    "pause_turn": "stop",
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""Anthropic error ``type`` -> the HTTP status it comes with; errors inside a 200 stream carry
only the type."""
_TIERS = {"standard": "default"}
"""Anthropic ``usage.service_tier`` -> the Responses tier name; ``priority`` and ``batch`` keep theirs."""
_USAGE_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
_json_encode = msgspec.json.Encoder().encode


def finish_reason(value: Any) -> FinishReason:
    """An Anthropic ``stop_reason`` as the gateway's; unknown values count as a normal stop."""
    return finish_from(_FINISH, value)


def usage_from(raw: Mapping[str, Any]) -> Usage:
    """Anthropic's ``input_tokens`` excludes prompt-cache reads and writes; Responses counts every
    input token, with the cache reads as ``cached_tokens``. Thinking tokens are inside
    ``output_tokens`` and not reported apart."""
    prompt, written, read, output = (count(raw.get(name)) for name in _USAGE_FIELDS)
    return token_usage(prompt + written + read, output, cached=read)


def reply_info(message: Mapping[str, Any]) -> ResponseInfo | None:
    """The model and served tier a ``message`` (or ``message_start.message``) reports."""
    model = message.get("model")
    usage = message.get("usage")
    tier = usage.get("service_tier") if isinstance(usage, Mapping) else None
    if not isinstance(model, str) and not isinstance(tier, str):
        return None
    return ResponseInfo(model=model if isinstance(model, str) else msgspec.UNSET,
                        service_tier=_TIERS.get(tier, tier) if isinstance(tier, str) else msgspec.UNSET)


def thinking_state(thinking: str, signature: str) -> str:
    """The reasoning state of a ``thinking`` block: the block as the API wants it back."""
    return _json_encode({"type": "thinking", "thinking": thinking, "signature": signature}).decode()


def redacted_state(data: str) -> str:
    return _json_encode({"type": "redacted_thinking", "data": data}).decode()


def raise_error_payload(payload: Any, data: bytes, map_error: ErrorMapper) -> NoReturn:
    """Raise the mapped error for an ``error`` event or body; the status comes from its type."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    raise map_error(ERROR_TYPE_STATUS.get(str(kind), 500), {}, data)


@dataclass(slots=True)
class _Keys:
    """The item key of each block as it opens: its index, or the key of the text block just
    before it when both are text."""

    last_kind: str | None = None
    last_key: ItemKey | None = None

    def open(self, index: int, kind: str) -> ItemKey:
        key: ItemKey = index
        if kind == "text" and self.last_kind == "text" and self.last_key is not None:
            key = self.last_key
        self.last_kind, self.last_key = kind, key
        return key


def message_deltas(reply: Mapping[str, Any]) -> list[Delta]:
    """Deltas for a whole (non-streamed) ``message``."""
    out: list[Delta] = []
    info = reply_info(reply)
    if info is not None:
        out.append(info)
    keys = _Keys()
    for index, block in enumerate(reply.get("content") or ()):
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            text = _str(block.get("text"))
            if text:
                out.append(TextDelta(key=keys.open(index, "text"), text=text))
        elif kind == "thinking":
            key = keys.open(index, "thinking")
            thinking = _str(block.get("thinking"))
            if thinking:
                out.append(ReasoningDelta(key=key, text=thinking, summary_index=0))
            out.append(ReasoningState(key=key, encrypted_content=thinking_state(thinking,
                                                                               _str(block.get("signature")))))
        elif kind == "redacted_thinking":
            out.append(ReasoningState(key=keys.open(index, kind), encrypted_content=redacted_state(
                _str(block.get("data")))))
        elif kind == "tool_use":
            key = keys.open(index, kind)
            out.append(_tool_start(key, block))
            out.append(ToolCallArguments(key=key, text=_json_encode(block.get("input") or {}).decode()))
    usage = reply.get("usage")
    if isinstance(usage, Mapping):
        out.append(UsageDelta(usage=usage_from(usage)))
    out.append(Finish(reason=finish_reason(reply.get("stop_reason"))))
    return out


def _tool_start(key: ItemKey, block: Mapping[str, Any]) -> ToolCallStart:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise UpstreamError("upstream returned a tool_use block without an id or a name")
    return ToolCallStart(key=key, call_id=call_id, name=name)


@dataclass(slots=True)
class _Block:
    kind: str
    key: ItemKey
    pieces: list[str] = field(default_factory=list)  # thinking text, for the state at block stop
    signature: str = ""
    data: str = ""


class AnthropicStreamDecoder:
    """Turns Messages SSE events into deltas. ``feed`` takes one event and returns its deltas;
    ``close`` ends the turn (usage, finish) after ``message_stop`` or end of stream."""

    def __init__(self, provider: str, map_error: ErrorMapper) -> None:
        self._provider = provider
        self._map_error = map_error
        self._keys = _Keys()
        self._blocks: dict[int, _Block | None] = {}  # None: a block type the gateway skips
        self._usage: dict[str, int] = {}
        self._stop_reason: Any = None
        self.done = False

    def feed(self, event: str | None, data: bytes) -> list[Delta]:
        payload = decode_json(data, self._provider)
        if not isinstance(payload, Mapping):
            raise UpstreamError(f"{self._provider} sent an unexpected stream event")
        kind = payload.get("type") or event
        if kind == "error":
            raise_error_payload(payload, data, self._map_error)
        if kind == "message_start":
            message = payload.get("message")
            message = message if isinstance(message, Mapping) else {}
            self._take_usage(message.get("usage"))
            info = reply_info(message)
            return [info] if info is not None else []
        if kind == "content_block_start":
            return self._start(payload)
        if kind == "content_block_delta":
            return self._delta(payload)
        if kind == "content_block_stop":
            return self._stop(payload)
        if kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
            self._take_usage(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        return []  # ping, and event types added after this was written

    def close(self) -> list[Delta]:
        """Deltas that end the turn; raises when the stream stopped before a stop reason."""
        if self._stop_reason is None:
            raise UpstreamError(f"{self._provider} stream ended early")
        out: list[Delta] = []
        if self._usage:
            out.append(UsageDelta(usage=usage_from(self._usage)))
        out.append(Finish(reason=finish_reason(self._stop_reason)))
        return out

    # -- per event -----------------------------------------------------------------------------
    def _take_usage(self, raw: Any) -> None:
        """``message_start`` gives the input counts and a placeholder output count;
        ``message_delta`` gives the final, cumulative counts (the input ones only on newer API
        versions), so a later value replaces an earlier one field by field."""
        if isinstance(raw, Mapping):
            for name in _USAGE_FIELDS:
                value = raw.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    self._usage[name] = value

    def _start(self, payload: Mapping[str, Any]) -> list[Delta]:
        index = _index(payload, self._provider)
        block = payload.get("content_block")
        block = block if isinstance(block, Mapping) else {}
        kind = block.get("type")
        if kind not in ("text", "thinking", "redacted_thinking", "tool_use"):
            self._blocks[index] = None
            return []
        key = self._keys.open(index, str(kind))
        state = self._blocks[index] = _Block(kind=str(kind), key=key)
        if kind == "tool_use":
            return [_tool_start(key, block)]
        if kind == "redacted_thinking":
            state.data = _str(block.get("data"))
            return []
        if kind == "thinking":
            state.signature = _str(block.get("signature"))
            return self._thinking(state, _str(block.get("thinking")))
        text = _str(block.get("text"))
        return [TextDelta(key=key, text=text)] if text else []

    def _delta(self, payload: Mapping[str, Any]) -> list[Delta]:
        state = self._block(payload)
        delta = payload.get("delta")
        if state is None or not isinstance(delta, Mapping):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and state.kind == "text":
            text = _str(delta.get("text"))
            return [TextDelta(key=state.key, text=text)] if text else []
        if kind == "input_json_delta" and state.kind == "tool_use":
            # A tool without arguments may stream only "": the builder then reports "{}".
            fragment = _str(delta.get("partial_json"))
            return [ToolCallArguments(key=state.key, text=fragment)] if fragment else []
        if kind == "thinking_delta" and state.kind == "thinking":
            return self._thinking(state, _str(delta.get("thinking")))
        if kind == "signature_delta" and state.kind == "thinking":
            state.signature += _str(delta.get("signature"))
        return []  # citations_delta and deltas of newer types carry nothing the gateway keeps

    def _stop(self, payload: Mapping[str, Any]) -> list[Delta]:
        state = self._block(payload)
        if state is None:
            return []
        if state.kind == "thinking":
            return [ReasoningState(key=state.key, encrypted_content=thinking_state("".join(state.pieces),
                                                                                   state.signature))]
        if state.kind == "redacted_thinking":
            return [ReasoningState(key=state.key, encrypted_content=redacted_state(state.data))]
        return []

    def _block(self, payload: Mapping[str, Any]) -> _Block | None:
        index = _index(payload, self._provider)
        if index not in self._blocks:
            raise UpstreamError(f"{self._provider} streamed content for a block that never started")
        return self._blocks[index]

    @staticmethod
    def _thinking(state: _Block, text: str) -> list[Delta]:
        if not text:
            return []
        state.pieces.append(text)
        return [ReasoningDelta(key=state.key, text=text, summary_index=0)]


def _index(payload: Mapping[str, Any], provider: str) -> int:
    index = payload.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise UpstreamError(f"{provider} sent a content block event without an index")
    return index


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
