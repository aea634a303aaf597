"""OpenAI Responses (``POST /v1/responses``): JSON, or SSE with ``event:`` lines numbered by
``sequence_number``, in the shapes of ``shared/fixtures/providers/openai-*``; and its token count
(``POST /v1/responses/input_tokens``), which refuses parameters it does not take as OpenAI does."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from providers.sim_dialects.base import (
    BadRequest,
    Plan,
    SimDialect,
    Turn,
    callable_tools,
    count_tokens,
    encode_json,
    max_tokens_of,
    new_id,
    output_format_of,
    pieces_of,
    service_tier,
    text_of,
)

_COUNT_PATH = "/v1/responses/input_tokens"
_COUNT_FIELDS = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                           "reasoning", "text", "truncation", "conversation", "previous_response_id", "personality"})
_MESSAGE_DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)


def _given(body: Mapping[str, Any], key: str, default: Any) -> Any:
    """The request's value for ``key``, or what OpenAI reports when it is absent or null."""
    value = body.get(key)
    return default if value is None else value


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
        "safety_identifier": body.get("safety_identifier"), "service_tier": service_tier(body),
        "store": _given(body, "store", True), "temperature": _given(body, "temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(text if isinstance(text, dict) else {})},
        "tool_choice": _given(body, "tool_choice", "auto"), "tools": _given(body, "tools", []),
        "top_logprobs": _given(body, "top_logprobs", 0), "top_p": _given(body, "top_p", 1.0),
        "truncation": _given(body, "truncation", "disabled"), "usage": None,
        "user": body.get("user"), "metadata": _given(body, "metadata", {}),
    }


def _items(plan: Plan) -> list[dict[str, Any]]:
    if plan.text is None:
        return [
            {"id": new_id("fc_"), "type": "function_call", "status": "completed", "arguments": args,
             "call_id": new_id("call_"), "name": name}
            for name, args in plan.calls
        ]
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}
    return [{"id": new_id("msg_"), "type": "message", "status": "incomplete" if plan.incomplete else "completed",
             "content": [part], "role": "assistant"}]


def _finished(envelope: dict[str, Any], plan: Plan, output: list[dict[str, Any]]) -> dict[str, Any]:
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


class _Events:
    """Collects SSE frames, numbering them from 0 as OpenAI does."""

    __slots__ = ("frames", "seq")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seq = 0

    def add(self, kind: str, **payload: Any) -> None:
        data = encode_json({"type": kind, "sequence_number": self.seq, **payload})
        self.frames.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")
        self.seq += 1

    def add_text_deltas(self, item_id: str, output_index: int, pieces: list[str]) -> None:
        # The hot path of a text stream: splice each piece into pre-encoded bytes rather than
        # encoding one dict per delta.
        tail = encode_json({"item_id": item_id, "output_index": output_index, "content_index": 0})[1:-1]
        middle = b"," + tail + b',"delta":'
        for piece in pieces:
            self.frames.append(_MESSAGE_DELTA_HEAD + str(self.seq).encode() + middle + encode_json(piece)
                               + b',"logprobs":[]}\n\n')
            self.seq += 1


class ResponsesDialect(SimDialect):
    """OpenAI Responses: ``input`` items (or a string) plus ``instructions`` in, ``output`` items out."""

    name = "openai_responses"
    routes = [("POST", "/v1/responses")]
    count_routes = [("POST", _COUNT_PATH)]

    def count_reply(self, body: dict[str, Any], request: web.Request) -> bytes | None:
        if request.path != _COUNT_PATH:
            return None
        unknown = sorted(set(body) - _COUNT_FIELDS)
        if unknown:
            raise BadRequest(f"Unknown parameter: '{unknown[0]}'.")
        return encode_json({"object": "response.input_tokens", "input_tokens": self.read(body, request).input_tokens})

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        raw_input = body.get("input")
        items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
        items = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        instructions = body.get("instructions")
        tokens = count_tokens(instructions) if isinstance(instructions, str) else 0
        last_user = ""
        for item in items:
            kind = item.get("type", "message")
            if kind == "message":
                text = text_of(item.get("content"))
                tokens += count_tokens(text)
                if item.get("role") == "user":
                    last_user = text
            elif kind == "function_call":
                tokens += count_tokens(str(item.get("arguments", "")))
            elif kind == "function_call_output":
                tokens += count_tokens(text_of(item.get("output")))
        outputs = []
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            outputs.append(text_of(item.get("output")))
        text_options = body.get("text")
        return Turn(
            last_user=last_user,
            tool_outputs=outputs[::-1],
            input_tokens=tokens,
            tools=callable_tools(body.get("tools"), body.get("tool_choice")),
            parallel=body.get("parallel_tool_calls") is not False,
            max_tokens=max_tokens_of(body.get("max_output_tokens")),
            output_format=output_format_of(text_options.get("format")) if isinstance(text_options, dict) else None,
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        envelope = _response_object(body, new_id("resp_"), int(time.time()))
        return encode_json(_finished(envelope, plan, _items(plan)))

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        envelope = _response_object(body, new_id("resp_"), int(time.time()))
        events = _Events()
        events.add("response.created", response=envelope)
        events.add("response.in_progress", response=envelope)
        output = _items(plan)
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
                for piece in pieces_of(item["arguments"]):
                    events.add("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                               delta=piece)
                events.add("response.function_call_arguments.done", item_id=item_id, output_index=index,
                           arguments=item["arguments"])
            events.add("response.output_item.done", output_index=index, item=item)
        final = _finished(envelope, plan, output)
        events.add("response.incomplete" if plan.incomplete else "response.completed", response=final)
        return events.frames


DIALECT = ResponsesDialect()
