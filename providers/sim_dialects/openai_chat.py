"""OpenAI Chat Completions (``POST /v1/chat/completions``): JSON, or SSE ``data:`` chunks ending
in ``data: [DONE]``, with a usage chunk when ``stream_options.include_usage`` is true."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from providers.sim_dialects.base import (
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

_FINGERPRINT = "fp_simulator"


def _usage(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.input_tokens, "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _finish_reason(plan: Plan) -> str:
    return "tool_calls" if plan.calls else "length" if plan.incomplete else "stop"


class ChatDialect(SimDialect):
    """OpenAI Chat Completions: ``messages`` in, one ``choice`` out."""

    name = "openai_chat"
    routes = [("POST", "/v1/chat/completions")]

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        messages = body.get("messages")
        messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        tokens = 0
        last_user = ""
        for message in messages:
            text = text_of(message.get("content"))
            tokens += count_tokens(text)
            if message.get("role") == "user":
                last_user = text
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict):
                    tokens += count_tokens(str((call.get("function") or {}).get("arguments", "")))
        outputs = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            outputs.append(text_of(message.get("content")))
        max_tokens = body.get("max_completion_tokens")
        return Turn(
            last_user=last_user,
            tool_outputs=outputs[::-1],
            input_tokens=tokens,
            tools=callable_tools(body.get("tools"), body.get("tool_choice")),
            parallel=body.get("parallel_tool_calls") is not False,
            max_tokens=max_tokens_of(body.get("max_tokens") if max_tokens is None else max_tokens),
            output_format=output_format_of(body.get("response_format")),
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text}
        if plan.calls:
            message["tool_calls"] = [
                {"id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": args}}
                for name, args in plan.calls
            ]
        message |= {"refusal": None, "annotations": []}
        return encode_json({
            "id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(plan)}],
            "usage": _usage(plan), "service_tier": service_tier(body), "system_fingerprint": _FINGERPRINT,
        })

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        head = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model"), "service_tier": service_tier(body), "system_fingerprint": _FINGERPRINT}
        # OpenAI adds "usage": null to every chunk only when a usage chunk will follow.
        tail = {"usage": None} if with_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + encode_json(head | {"choices": [choice]} | tail) + b"\n\n"

        frames: list[bytes] = []
        if plan.text is None:
            frames.append(chunk({"role": "assistant", "content": None}))
            for index, (name, args) in enumerate(plan.calls):
                frames.append(chunk({"tool_calls": [{"index": index, "id": new_id("call_"), "type": "function",
                                                      "function": {"name": name, "arguments": ""}}]}))
                frames.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                              for piece in pieces_of(args))
        else:
            frames.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            # Pre-encode everything around the content so each piece costs one small encode.
            before, after = chunk({"content": "\x00"}).rsplit(b'"\\u0000"', 1)
            frames.extend(before + encode_json(piece) + after for piece in plan.pieces)
        frames.append(chunk({}, _finish_reason(plan)))
        if with_usage:
            frames.append(b"data: " + encode_json(head | {"choices": [], "usage": _usage(plan)}) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return frames


DIALECT = ChatDialect()
