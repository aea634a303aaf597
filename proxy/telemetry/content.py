"""Prompts and completions in the GenAI conventions' message shape, for spans of a gateway
whose ``telemetry.capture_content`` is on (and only then: nothing else calls these).

    [{"role": "user", "parts": [{"type": "text", "content": "..."}]},
     {"role": "assistant", "parts": [{"type": "tool_call", "id": ..., "name": ..., "arguments": ...}]},
     {"role": "tool", "parts": [{"type": "tool_call_response", "id": ..., "response": ...}]}]

Parts without text (images, files, reasoning state) are named by type, their data left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from proxy.schema.deltas import Delta, TextDelta, ToolCallArguments, ToolCallStart
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message

_encode = msgspec.json.encode


def input_messages(items: Iterable[Item]) -> str:
    return _encode([_message(item) for item in items]).decode()


def system_instructions(instructions: str) -> str:
    return _encode([{"type": "text", "content": instructions}]).decode()


def _message(item: Item) -> dict[str, Any]:
    if isinstance(item, Message):
        content = item.content
        parts = [_text(content)] if isinstance(content, str) else [_part(part) for part in content]
        return {"role": item.role, "parts": parts}
    if isinstance(item, FunctionCall):
        return {"role": "assistant", "parts": [{"type": "tool_call", "id": item.call_id, "name": item.name,
                                                "arguments": item.arguments}]}
    if isinstance(item, FunctionCallOutput):
        output = item.output
        response = output if isinstance(output, str) else [_part(part) for part in output]
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": item.call_id, "response": response}]}
    return {"role": "assistant", "parts": [{"type": getattr(item, "type", type(item).__name__)}]}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _part(part: object) -> dict[str, Any]:
    text = getattr(part, "text", None)
    return _text(text) if isinstance(text, str) else {"type": getattr(part, "type", type(part).__name__)}


class OutputCollector:
    """The model's output of one attempt, gathered from its deltas."""

    __slots__ = ("_calls", "_texts")

    def __init__(self) -> None:
        self._texts: dict[object, list[str]] = {}
        self._calls: dict[object, dict[str, Any]] = {}

    def see(self, delta: Delta) -> None:
        if isinstance(delta, TextDelta):
            self._texts.setdefault(delta.key, []).append(delta.text)
        elif isinstance(delta, ToolCallStart):
            self._calls[delta.key] = {"type": "tool_call", "id": delta.call_id, "name": delta.name, "arguments": ""}
        elif isinstance(delta, ToolCallArguments) and delta.key in self._calls:
            self._calls[delta.key]["arguments"] += delta.text

    def messages(self, finish_reason: str) -> str:
        parts = [_text("".join(chunks)) for chunks in self._texts.values()] + list(self._calls.values())
        return _encode([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}]).decode()
