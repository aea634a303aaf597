"""Anthropic Messages (``POST /v1/messages``): a ``message`` JSON body, or SSE with ``event:``
lines (``message_start``, ``content_block_start``/``_delta``/``_stop``, ``ping``,
``message_delta``, ``message_stop``), in the shapes of ``shared/fixtures/providers/anthropic``.

The key comes in ``x-api-key``; errors are ``{"type": "error", "error": {"type", "message"},
"request_id"}``. ``read`` refuses what the real API refuses and a translator easily gets wrong:
no ``max_tokens``, a first message from the assistant, tool results that do not answer the
previous turn's ``tool_use`` blocks (or do not come first), ``output_format`` without its beta
flag, and a thinking budget or a forced tool choice that thinking does not allow.

``POST /v1/messages/count_tokens`` answers ``{"input_tokens"}``, counted as a reply's usage is,
and refuses fields the real endpoint does not take (``max_tokens`` first of all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from providers.sim_dialects.base import (
    BadRequest,
    Plan,
    SimDialect,
    Turn,
    count_tokens,
    encode_json,
    max_tokens_of,
    new_id,
    pieces_of,
    text_of,
)

_STRUCTURED_OUTPUTS_BETA = "structured-outputs-2025-11-13"
_COUNT_PATH = "/v1/messages/count_tokens"
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                           "cache_control"})
_MIN_THINKING_BUDGET = 1024
_decode_json = msgspec.json.Decoder().decode

# (error type, message) per status, worded like Anthropic's own errors.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Simulated bad request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: simulated model not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization (simulated)."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    529: ("overloaded_error", "Overloaded"),
}
_TEXT_DELTA_HEAD = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":')
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
# Anthropic pads some events with spaces inside the closing brace; a translator must not mind.
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"     }\n\n'


def _usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": plan.input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens, "service_tier": "standard"}


def _stop_reason(plan: Plan) -> str:
    return "tool_use" if plan.calls else "max_tokens" if plan.incomplete else "end_turn"


def _frame(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + encode_json({"type": kind, **payload}) + b"\n\n"


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(block, dict) for block in content):
        return content
    raise BadRequest("messages: content must be a string or a list of content blocks")


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    return messages


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_tokens(str(block.get("text", "")))
    if kind == "tool_use":
        return count_tokens(encode_json(block.get("input")).decode())
    if kind == "tool_result":
        return count_tokens(text_of(block.get("content")))
    return 0


def _input_tokens(body: Mapping[str, Any]) -> int:
    """The system text, message text, tool inputs and tool results, in tokens."""
    return count_tokens(text_of(body.get("system"))) + sum(
        _block_tokens(block) for message in _messages(body) for block in _blocks(message.get("content")))


def _tools(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, input schema) of the client tools the model may call, narrowed by ``tool_choice``."""
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if choice.get("type") == "none" or not isinstance(body.get("tools"), list):
        return []
    offered = [(tool["name"], tool.get("input_schema")) for tool in body["tools"]
               if isinstance(tool, dict) and tool.get("type", "custom") == "custom" and isinstance(tool.get("name"),
                                                                                                   str)]
    if choice.get("type") == "tool":
        return [tool for tool in offered if tool[0] == choice.get("name")][:1]
    return offered


def _output_format(body: Mapping[str, Any], request: web.Request) -> Any:
    fmt = body.get("output_format")
    if fmt is not None and _STRUCTURED_OUTPUTS_BETA not in request.headers.get("anthropic-beta", ""):
        raise BadRequest("output_format: Extra inputs are not permitted")
    config = body.get("output_config")
    if fmt is None and isinstance(config, dict):
        fmt = config.get("format")  # where the generally available API puts it
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema") if isinstance(fmt.get("schema"), dict) else {}
    return None


def _check_thinking(body: Mapping[str, Any]) -> None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or not _MIN_THINKING_BUDGET <= budget < body["max_tokens"]:
        raise BadRequest(f"thinking.budget_tokens: must be at least {_MIN_THINKING_BUDGET} and less than max_tokens")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise BadRequest("Thinking may not be enabled when tool_choice forces tool use.")


class AnthropicDialect(SimDialect):
    """Anthropic Messages: ``system`` plus alternating ``messages`` in, content blocks out."""

    name = "anthropic"
    routes = [("POST", "/v1/messages")]
    count_routes = [("POST", _COUNT_PATH)]
    auth_header = "x-api-key"
    auth_scheme = ""

    def count_reply(self, body: dict[str, Any], request: web.Request) -> bytes | None:
        if request.path != _COUNT_PATH:
            return None
        extra = sorted(set(body) - _COUNT_FIELDS)
        if extra:
            raise BadRequest(f"{extra[0]}: Extra inputs are not permitted")
        return encode_json({"input_tokens": _input_tokens(body)})

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        if not isinstance(body.get("max_tokens"), int):
            raise BadRequest("max_tokens: Field required")
        temperature = body.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
            raise BadRequest("temperature: Input should be less than or equal to 1")
        _check_thinking(body)
        messages = _messages(body)
        last_user = ""
        calls: list[str] = []  # tool_use ids of the previous message, which the next must answer
        blocks: list[dict[str, Any]] = []
        for position, message in enumerate(messages):
            role = message.get("role")
            if role not in ("user", "assistant") or (position == 0 and role != "user"):
                raise BadRequest(f"messages.{position}.role: the first message must use the \"user\" role and "
                                 "the others \"user\" or \"assistant\"")
            blocks = _blocks(message.get("content"))
            kinds = [block.get("type") for block in blocks]
            answered = [str(block.get("tool_use_id")) for block in blocks if block.get("type") == "tool_result"]
            if sorted(answered) != sorted(calls):
                raise BadRequest(f"messages.{position}: each tool_use block must have a tool_result block in the "
                                 "next message, and each tool_result a tool_use block in the previous one")
            if kinds[:len(answered)] != ["tool_result"] * len(answered):
                raise BadRequest(f"messages.{position}: tool_result blocks must come first in the content")
            calls = [str(block.get("id")) for block in blocks if block.get("type") == "tool_use"]
            if role == "user" and len(answered) < len(blocks):
                last_user = text_of(blocks)
        last = messages[-1]
        outputs = [text_of(block.get("content")) for block in blocks] \
            if last.get("role") == "user" and all(block.get("type") == "tool_result" for block in blocks) else []
        choice = body.get("tool_choice")
        return Turn(
            last_user=last_user,
            tool_outputs=outputs,
            input_tokens=_input_tokens(body),
            tools=_tools(body),
            parallel=not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True),
            max_tokens=max_tokens_of(body["max_tokens"]),
            output_format=_output_format(body, request),
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        if plan.text is None:
            content = [{"type": "tool_use", "id": new_id("toolu_"), "name": name, "input": _decode_json(args)}
                       for name, args in plan.calls]
        else:
            content = [{"type": "text", "text": plan.text}]
        return encode_json({
            "model": body.get("model"), "id": new_id("msg_"), "type": "message", "role": "assistant",
            "content": content, "stop_reason": _stop_reason(plan), "stop_sequence": None,
            "usage": _usage(plan, plan.output_tokens),
        })

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        message: dict[str, Any] = {
            "model": body.get("model"), "id": new_id("msg_"), "type": "message", "role": "assistant", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": _usage(plan, 1)}
        frames = [_frame("message_start", {"message": message})]
        if plan.text is None:
            for index, (name, args) in enumerate(plan.calls):
                frames.append(_frame("content_block_start", {"index": index, "content_block": {
                    "type": "tool_use", "id": new_id("toolu_"), "name": name, "input": {}}}))
                if index == 0:
                    frames.append(_PING)
                frames.extend(_frame("content_block_delta", {"index": index, "delta": {
                    "type": "input_json_delta", "partial_json": piece}}) for piece in ["", *pieces_of(args)])
                frames.append(_frame("content_block_stop", {"index": index}))
        else:
            frames.append(_frame("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
            frames.append(_PING)
            # The hot path: splice each piece into pre-encoded bytes.
            frames.extend(_TEXT_DELTA_HEAD + encode_json(piece) + b"}}\n\n" for piece in plan.pieces)
            frames.append(_frame("content_block_stop", {"index": 0}))
        usage = _usage(plan, plan.output_tokens)
        del usage["cache_creation"], usage["service_tier"]  # message_delta carries the counts only
        frames.append(_frame("message_delta", {"delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
                                               "usage": usage}))
        frames.append(_MESSAGE_STOP)
        return frames

    def error_body(self, status: int, message: str | None = None, code: str | None = None,
                   param: str | None = None) -> bytes:
        kind, stock = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error",
                                           f"Simulated error {status}."))
        return encode_json({"type": "error", "error": {"type": kind, "message": message or stock},
                            "request_id": new_id("req_")})


DIALECT = AnthropicDialect()
