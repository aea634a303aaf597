"""Ollama native chat (``POST /api/chat``): one JSON object, or an NDJSON stream (Ollama's default
when ``stream`` is absent) whose last line has ``done: true``, in the shapes of
``shared/fixtures/providers/ollama``. Tool calls arrive whole in one line with object arguments
and the ids newer servers add. Errors are ``{"error": "..."}``.

Like the real server it rejects tool-call arguments that are not objects and images that are not
base64, so a gateway that sends either gets the 400 Ollama would give it.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import msgspec
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
    text_of,
)

_ROLES = frozenset({"system", "user", "assistant", "tool"})
_NS_PER_TOKEN = 10_000_000
"""Nanoseconds of simulated generation per token, for the ``*_duration`` fields."""
_ERRORS: dict[int, str] = {
    400: "simulated bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "model 'sim-model' not found",
    429: "too many requests (simulated)",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again. maximum pending requests exceeded",
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _done(plan: Plan) -> dict[str, Any]:
    return {
        "done": True, "done_reason": "length" if plan.incomplete else "stop",
        "total_duration": (plan.input_tokens + plan.output_tokens) * _NS_PER_TOKEN, "load_duration": 0,
        "prompt_eval_count": plan.input_tokens, "prompt_eval_duration": plan.input_tokens * _NS_PER_TOKEN,
        "eval_count": plan.output_tokens, "eval_duration": plan.output_tokens * _NS_PER_TOKEN,
    }


def _tool_calls(plan: Plan) -> list[dict[str, Any]]:
    return [{"id": new_id("call_")[:13], "function": {"index": index, "name": name,
                                                      "arguments": msgspec.json.decode(args)}}
            for index, (name, args) in enumerate(plan.calls)]


def _check_message(message: dict[str, Any]) -> None:
    if message.get("role") not in _ROLES:
        raise BadRequest(f"invalid role {message.get('role')!r}")
    for call in message.get("tool_calls") or []:
        if not isinstance(call["function"]["arguments"], dict):
            raise BadRequest("json: cannot unmarshal string into Go struct field .messages.tool_calls.function."
                             "arguments of type api.ToolCallFunctionArguments")
    for image in message.get("images") or []:
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, TypeError):
            raise BadRequest("illegal base64 data in images") from None


def _output_format(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    return "json_object" if value == "json" else None


class OllamaDialect(SimDialect):
    """Ollama ``/api/chat``: ``messages`` in, one assistant ``message`` out."""

    name = "ollama"
    routes = [("POST", "/api/chat")]
    stream_content_type = "application/x-ndjson"

    def wants_stream(self, body: dict[str, Any], request: web.Request) -> bool:
        return body.get("stream") is not False

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        tokens = 0
        last_user = ""
        for message in messages:
            _check_message(message)
            text = text_of(message.get("content"))
            tokens += count_tokens(text)
            if message["role"] == "user":
                last_user = text
            for call in message.get("tool_calls") or []:
                tokens += count_tokens(encode_json(call["function"]["arguments"]).decode())
        outputs = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            outputs.append(text_of(message.get("content")))
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        return Turn(
            last_user=last_user,
            tool_outputs=outputs[::-1],
            input_tokens=tokens,
            tools=callable_tools(body.get("tools"), None),
            parallel=True,
            max_tokens=max_tokens_of(options.get("num_predict")),
            output_format=_output_format(body.get("format")),
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text or ""}
        if plan.calls:
            message["tool_calls"] = _tool_calls(plan)
        return encode_json({"model": body.get("model"), "created_at": _now(), "message": message, **_done(plan)})

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        head = {"model": body.get("model"), "created_at": _now()}

        def line(message: dict[str, Any], tail: dict[str, Any]) -> bytes:
            return encode_json(head | {"message": {"role": "assistant", **message}} | tail) + b"\n"

        if plan.calls:
            frames = [line({"content": "", "tool_calls": _tool_calls(plan)}, {"done": False})]
        else:
            frames = [line({"content": piece}, {"done": False}) for piece in plan.pieces or [""]]
        frames.append(line({"content": ""}, _done(plan)))
        return frames

    def error_body(
        self, status: int, message: str | None = None, code: str | None = None, param: str | None = None
    ) -> bytes:
        """Ollama's ``{"error": "..."}``; it has no code or param."""
        return encode_json({"error": message or _ERRORS.get(status, f"simulated error {status}")})


DIALECT = OllamaDialect()
