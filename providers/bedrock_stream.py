"""Bedrock Converse replies -> gateway deltas: the ConverseStream decoder (binary AWS eventstream)
and the reply-side helpers (usage, stop reasons, reasoning state) the whole-body path in
``providers.bedrock`` shares.

Frames are parsed by botocore's ``EventStreamBuffer``, fed the byte chunks as they arrive (frames
never line up with chunks); it checks both CRCs. A frame with ``:message-type: exception`` (or
``error``) is an upstream failure inside an HTTP 200 and goes through the adapter's error mapper.

Item keys are Bedrock's ``contentBlockIndex``: one content block is one output item, in the
stream and in a whole reply alike, so both give the same items.

Reasoning state (what ``ReasoningState.encrypted_content`` carries, sealed by the engine): the
JSON of the Bedrock ``reasoningContent`` block itself, ``{"reasoningText": {"text", "signature"}}``
or ``{"redactedContent": "<base64>"}``, so the next turn sends it back unchanged. It is emitted
only for blocks a model must get back verbatim: signed or redacted ones.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from providers.common import count, finish_from, token_usage
from providers.http import ErrorMapper, decode_json, stream_errors
from proxy.errors import UpstreamError
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
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
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})
_json_encode = msgspec.json.Encoder().encode


def finish_reason(value: Any, provider: str) -> FinishReason:
    """A Bedrock ``stopReason`` as the gateway's. A malformed model output or tool call fails the
    turn (retryable: the next sample may be fine); unknown values count as a normal stop."""
    if value in _MALFORMED:
        raise UpstreamError(f"{provider} stopped the reply: the model produced {str(value).replace('_', ' ')}")
    return finish_from(_FINISH, value)


def usage_from(raw: Any) -> Usage | None:
    """Bedrock usage: ``inputTokens`` excludes cache reads and writes, Responses counts them."""
    if not isinstance(raw, Mapping):
        return None
    cache_read = count(raw.get("cacheReadInputTokens"))
    return token_usage(count(raw.get("inputTokens")) + cache_read + count(raw.get("cacheWriteInputTokens")),
                       count(raw.get("outputTokens")), cached=cache_read)


def tier_info(raw: Mapping[str, Any]) -> ResponseInfo | None:
    """The service tier Bedrock reports having served (``serviceTier.type``), if it does."""
    tier = raw.get("serviceTier")
    kind = tier.get("type") if isinstance(tier, Mapping) else None
    return ResponseInfo(service_tier=kind) if isinstance(kind, str) else None


def reasoning_state(text: str, signature: str | None, redacted: str | None) -> str | None:
    """The raw state to round-trip for a reasoning block, or None when there is nothing to keep."""
    if redacted:
        return _json_encode({"redactedContent": redacted}).decode()
    if signature:
        return _json_encode({"reasoningText": {"text": text, "signature": signature}}).decode()
    return None


def arguments_text(value: Any) -> str:
    """A ``toolUse.input`` object as the JSON string Responses carries."""
    return _json_encode(value if value is not None else {}).decode()


@dataclass(slots=True)
class _Reasoning:
    text: list[str] = field(default_factory=list)
    signature: str | None = None
    redacted: str | None = None


class ConverseStreamDecoder:
    """Turns ConverseStream messages into deltas. ``feed`` takes one parsed eventstream message
    and returns its deltas; ``close`` ends the turn (usage, finish) at the end of the stream."""

    def __init__(self, provider: str, map_error: ErrorMapper) -> None:
        self._provider = provider
        self._map_error = map_error
        self._reasoning: dict[int, _Reasoning] = {}
        self._tools: set[int] = set()
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None

    def feed(self, message: EventStreamMessage) -> list[Delta]:
        headers = message.headers
        kind = headers.get(":message-type")
        # Exception frames carry no HTTP status: the mapper goes by the type, 500 if it is unknown.
        if kind == "exception":
            name = str(headers.get(":exception-type", ""))
            raise self._map_error(500, {"x-amzn-errortype": name}, message.payload)
        if kind == "error":
            code, text = str(headers.get(":error-code", "")), str(headers.get(":error-message", ""))
            raise self._map_error(500, {"x-amzn-errortype": code}, _json_encode({"message": text}))
        if kind != "event":
            return []
        event = decode_json(message.payload, self._provider)
        if not isinstance(event, Mapping):
            raise UpstreamError(f"{self._provider} sent an unexpected stream event")
        name = headers.get(":event-type")
        if name == "contentBlockStart":
            return self._start(event)
        if name == "contentBlockDelta":
            return self._delta(event)
        if name == "contentBlockStop":
            return self._stop(_index(event))
        if name == "messageStop":
            self._finish = finish_reason(event.get("stopReason"), self._provider)
        elif name == "metadata":
            self._usage = usage_from(event.get("usage")) or self._usage
            info = tier_info(event)
            return [info] if info is not None else []
        return []  # messageStart and events a newer service may add

    def close(self) -> list[Delta]:
        """Deltas that end the turn; raises when the stream stopped before ``messageStop``."""
        if self._finish is None:
            raise UpstreamError(f"{self._provider} stream ended early")
        out: list[Delta] = []
        if self._usage is not None:
            out.append(UsageDelta(usage=self._usage))
        out.append(Finish(reason=self._finish))
        return out

    def _start(self, event: Mapping[str, Any]) -> list[Delta]:
        start = event.get("start")
        tool = start.get("toolUse") if isinstance(start, Mapping) else None
        if not isinstance(tool, Mapping):
            return []
        name, call_id = tool.get("name"), tool.get("toolUseId")
        if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
            raise UpstreamError(f"{self._provider} started a tool call without a name or id")
        index = _index(event)
        self._tools.add(index)
        return [ToolCallStart(key=index, call_id=call_id, name=name)]

    def _delta(self, event: Mapping[str, Any]) -> list[Delta]:
        index = _index(event)
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            return []
        text = delta.get("text")
        if isinstance(text, str):
            return [TextDelta(key=index, text=text)] if text else []
        tool = delta.get("toolUse")
        if isinstance(tool, Mapping):
            if index not in self._tools:
                raise UpstreamError(f"{self._provider} streamed tool input before the tool call started")
            fragment = tool.get("input")
            return [ToolCallArguments(key=index, text=fragment)] if isinstance(fragment, str) and fragment else []
        reasoning = delta.get("reasoningContent")
        if not isinstance(reasoning, Mapping):
            return []  # citations and other block kinds the gateway does not request
        block = self._reasoning.setdefault(index, _Reasoning())
        signature, redacted = reasoning.get("signature"), reasoning.get("redactedContent")
        if isinstance(signature, str):
            block.signature = (block.signature or "") + signature
        if isinstance(redacted, str):
            block.redacted = (block.redacted or "") + redacted
        piece = reasoning.get("text")
        if isinstance(piece, str) and piece:
            block.text.append(piece)
            return [ReasoningDelta(key=index, text=piece)]
        return []

    def _stop(self, index: int) -> list[Delta]:
        """A block ends: a reasoning block hands over its state. Items are not closed here: the
        builder closes one when the next opens, and the last when the turn ends (``incomplete``
        if ``messageStop`` says the reply was cut), as for a whole reply."""
        block = self._reasoning.pop(index, None)
        if block is None:
            return []
        state = reasoning_state("".join(block.text), block.signature, block.redacted)
        return [ReasoningState(key=index, encrypted_content=state)] if state is not None else []


async def decode_stream(response: aiohttp.ClientResponse, provider: str,
                        map_error: ErrorMapper) -> AsyncGenerator[Delta, None]:
    """Deltas for one ConverseStream turn read from ``response``; closes the upstream connection
    when the consumer stops early (the client went away)."""
    decoder = ConverseStreamDecoder(provider, map_error)
    frames = EventStreamBuffer()
    with stream_errors(response, provider):
        try:
            async for chunk in response.content.iter_any():
                frames.add_data(chunk)
                for message in frames:
                    for delta in decoder.feed(message):
                        yield delta
        except ParserError as exc:
            raise UpstreamError(f"{provider} sent a corrupt event stream frame") from exc
    for delta in decoder.close():
        yield delta


def _index(event: Mapping[str, Any]) -> int:
    index = event.get("contentBlockIndex")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0
