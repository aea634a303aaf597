"""Gemini replies -> gateway deltas: the chunk decoder shared by streamed and whole replies, and
the thought-signature state that travels in a reasoning item's ``encrypted_content``.

Every ``data:`` event of ``:streamGenerateContent?alt=sse`` is a whole ``GenerateContentResponse``
holding the parts produced since the last one; a non-streamed reply is the same object once, so
both go through ``GeminiDecoder`` and give the same items. Output items start when the kind of
part changes (thought text -> reasoning, text -> message, each ``functionCall`` its own item).
Each thought part is one summary part: Gemini sends each summary section as its own part, and the
next request sends them back as separate thought parts.

Call ids: Gemini rarely returns ``functionCall.id``. The decoder then mints
``call_gem_<responseId>_<n>``, the same for the streamed and the whole form of one reply; an id
the upstream did send is kept as the call id.

Thought signatures (opaque bytes Gemini attaches to parts and wants back on the same part; Gemini 3
rejects a function call without its signature) are collected per reply into ``TurnSignatures``
and emitted once, at the end of the reply, as a ``ReasoningState`` opening a reasoning item of
its own (the engine seals it). Signatures are anchored so that ``providers.gemini`` can put them
back on the history it rebuilds from the items: a call's by its call id, a text part's and a
thought part's by their position counted back from the end of the reply (so merging consecutive
model turns does not shift them), and one on an empty text part (no item to carry it) as an
empty text part at the end of the reply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from providers.common import count, token_usage
from providers.http import ErrorMapper, decode_json
from proxy.errors import UpstreamError
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
    ItemDone,
    ReasoningDelta,
    ReasoningState,
    ResponseInfo,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    UsageDelta,
)
from proxy.schema.response import Usage

MINTED_CALL_PREFIX = "call_gem_"
"""Call ids minted here start with this; only ids that do not are sent back to Gemini as ``id``."""
_MAX_RESPONSE_ID = 40  # keeps minted ids within the 64 characters a call id may have

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "MAX_TOKENS": "max_output_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
}
"""Finish reasons with a Responses meaning. Any other (``MALFORMED_FUNCTION_CALL``,
``UNEXPECTED_TOOL_CALL``, ``OTHER``...) means the turn failed: it is raised as an upstream error
rather than passed off as a complete answer."""

_TIERS = {
    # Vertex usageMetadata.trafficType
    "ON_DEMAND": "default",
    "ON_DEMAND_FLEX": "flex",
    "ON_DEMAND_PRIORITY": "priority",
    # Gemini API x-gemini-service-tier header / usageMetadata.serviceTier
    "standard": "default",
    "flex": "flex",
    "priority": "priority",
}
_UNREPRESENTABLE = ("inlineData", "fileData", "executableCode", "codeExecutionResult")
"""Output parts the Responses items cannot carry; the gateway never asks for them (no image
output modality, no code-execution tool), so one arriving is an upstream error."""
_MAX_FINISH_MESSAGE = 500
_json_encode = msgspec.json.Encoder().encode


class TurnSignatures(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where the thought signatures of one reply sat (the raw ``ReasoningState`` payload)."""

    calls: dict[str, str] = msgspec.field(default_factory=dict)
    """Call id -> signature of that ``functionCall`` part."""
    texts: dict[int, str] = msgspec.field(default_factory=dict)
    """k-th text part counted back from the end of the reply (0 = the last) -> signature. One
    run of text parts is one message, sent back as one text part."""
    thoughts: dict[int, str] = msgspec.field(default_factory=dict)
    """k-th thought part counted back from the end of the reply -> signature."""
    empty: list[str] = msgspec.field(default_factory=list)
    """Signatures that came on empty text parts, sent back as empty text parts."""


encode_signatures = msgspec.json.Encoder().encode
decode_signatures = msgspec.json.Decoder(TurnSignatures).decode


def usage_from(meta: Any) -> Usage | None:
    """Responses usage from ``usageMetadata``: ``candidatesTokenCount`` leaves thinking out, so
    output is candidates plus thoughts, with the thoughts as reasoning tokens."""
    if not isinstance(meta, Mapping):
        return None
    thoughts = count(meta.get("thoughtsTokenCount"))
    return token_usage(count(meta.get("promptTokenCount")) + count(meta.get("toolUsePromptTokenCount")),
                       count(meta.get("candidatesTokenCount")) + thoughts,
                       cached=count(meta.get("cachedContentTokenCount")), reasoning=thoughts,
                       total=count(meta.get("totalTokenCount")))


class GeminiDecoder:
    """Turns ``GenerateContentResponse`` chunks of one reply into deltas. ``feed`` takes one
    chunk (an SSE event's data, or the whole reply); ``close`` ends the turn (signatures, usage,
    finish). Gemini marks no end of stream, so ``done`` stays false: the stream's end is the end."""

    done = False

    def __init__(self, provider: str, map_error: ErrorMapper, *, tier_header: str | None = None) -> None:
        self._provider = provider
        self._map_error = map_error
        self._tier = _TIERS.get(tier_header or "")
        self._info: tuple[Any, Any] | None = None
        self._response_id: str | None = None
        self._kind: str | None = None  # kind of the item opened last: thought | text | call
        self._segment = 0
        self._summary_index = -1  # summary part of the open reasoning item
        self._calls = 0
        self._texts = 0  # text runs (messages) so far; the open one is number _texts - 1
        self._thoughts = 0
        self._signatures: list[tuple[str, Any, str]] = []  # (anchor kind, position or call id, signature)
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._finish_message = ""
        self._blocked = False

    def feed(self, event: str | None, raw: bytes) -> list[Delta]:
        chunk = decode_json(raw, self._provider)
        if not isinstance(chunk, Mapping):
            raise UpstreamError(f"{self._provider} sent an unexpected reply")
        error = chunk.get("error")
        if isinstance(error, Mapping):  # an error inside a 200 stream
            code = error.get("code")
            raise self._map_error(code if isinstance(code, int) and 400 <= code <= 599 else 500, {}, raw)
        out: list[Delta] = []
        meta = chunk.get("usageMetadata")
        usage = usage_from(meta)
        if usage is not None:
            self._usage = usage
        if isinstance(meta, Mapping):
            tier = meta.get("trafficType") or meta.get("serviceTier")
            self._tier = _TIERS.get(tier, self._tier) if isinstance(tier, str) else self._tier
        info = (chunk.get("modelVersion"), self._tier)
        if info != self._info:
            self._info = info
            out.append(ResponseInfo(model=info[0] if isinstance(info[0], str) else msgspec.UNSET,
                                    service_tier=info[1] if info[1] is not None else msgspec.UNSET))
        response_id = chunk.get("responseId")
        if self._response_id is None and isinstance(response_id, str) and response_id:
            self._response_id = response_id[:_MAX_RESPONSE_ID]
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, Mapping) and feedback.get("blockReason"):
            self._blocked = True  # the prompt was refused: no candidates follow
        candidates = chunk.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if isinstance(candidate, Mapping):
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, Mapping) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, Mapping):
                    out += self._part(part)
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason:
                self._finish = reason
                message = candidate.get("finishMessage")
                self._finish_message = message[:_MAX_FINISH_MESSAGE] if isinstance(message, str) else ""
        return out

    def close(self) -> list[Delta]:
        """Deltas that end the turn; raises when the reply stopped early or failed."""
        if self._blocked and self._finish is None:
            reason: FinishReason = "content_filter"
        elif self._finish is None:
            raise UpstreamError(f"{self._provider} stream ended early")
        elif self._finish in _FINISH:
            reason = _FINISH[self._finish]
        else:
            detail = f": {self._finish_message}" if self._finish_message else ""
            raise UpstreamError(f"{self._provider} ended the turn with {self._finish}{detail}",
                                code=self._finish.lower())
        if reason == "stop" and self._calls:  # Gemini says STOP after function calls too
            reason = "tool_calls"
        out: list[Delta] = []
        if self._signatures:
            out.append(ReasoningState(key="signatures", encrypted_content=encode_signatures(self._state()).decode()))
        if self._usage is not None:
            out.append(UsageDelta(usage=self._usage))
        out.append(Finish(reason=reason))
        return out

    # -- parts ---------------------------------------------------------------------------------
    def _part(self, part: Mapping[str, Any]) -> list[Delta]:
        signature = part.get("thoughtSignature")
        signature = signature if isinstance(signature, str) and signature else None
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            return self._call(call, signature)
        text = part.get("text")
        if not isinstance(text, str):
            for field in _UNREPRESENTABLE:
                if field in part:
                    raise UpstreamError(f"{self._provider} returned a {field} part, which a response cannot carry")
            if signature:
                self._signatures.append(("empty", None, signature))
            return []
        if part.get("thought") is True:
            return self._thought(text, signature)
        out: list[Delta] = []
        if text:
            out.append(TextDelta(key=self._key("text"), text=text))
        if signature:
            # An empty part with a signature belongs to the message it ends, if one is open.
            if self._kind == "text":
                self._signatures.append(("text", self._texts - 1, signature))
            else:
                self._signatures.append(("empty", None, signature))
        return out

    def _thought(self, text: str, signature: str | None) -> list[Delta]:
        if not text:
            if signature:
                self._signatures.append(("empty", None, signature))
            return []
        key = self._key("thought")
        self._summary_index += 1
        if signature:
            self._signatures.append(("thought", self._thoughts, signature))
        self._thoughts += 1
        return [ReasoningDelta(key=key, text=text, summary_index=self._summary_index)]

    def _call(self, call: Mapping[str, Any], signature: str | None) -> list[Delta]:
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise UpstreamError(f"{self._provider} returned a function call without a name")
        args = call.get("args")
        upstream_id = call.get("id")
        call_id = upstream_id if isinstance(upstream_id, str) and upstream_id else self._mint_call_id()
        self._calls += 1
        self._segment += 1
        self._kind = "call"
        key = f"call{self._segment}"
        if signature:
            self._signatures.append(("call", call_id, signature))
        arguments = _json_encode(args).decode() if isinstance(args, Mapping) else "{}"
        return [ToolCallStart(key=key, call_id=call_id, name=name), ToolCallArguments(key=key, text=arguments),
                ItemDone(key=key)]

    def _key(self, kind: str) -> str:
        if self._kind != kind:
            self._segment += 1
            self._kind = kind
            if kind == "thought":
                self._summary_index = -1
            else:
                self._texts += 1
        return f"{kind}{self._segment}"

    def _mint_call_id(self) -> str:
        if self._response_id is None:  # no responseId to derive from: a random one, kept for the reply
            self._response_id = os.urandom(12).hex()
        return f"{MINTED_CALL_PREFIX}{self._response_id}_{self._calls}"

    def _state(self) -> TurnSignatures:
        state = TurnSignatures()
        for kind, where, signature in self._signatures:
            if kind == "call":
                state.calls[where] = signature
            elif kind == "text":
                state.texts[self._texts - 1 - where] = signature
            elif kind == "thought":
                state.thoughts[self._thoughts - 1 - where] = signature
            else:
                state.empty.append(signature)
        return state
