"""Cohere v2 Chat (``POST /v2/chat``): JSON, or SSE with named events (``message-start``,
``content-start``/``-delta``/``-end``, ``tool-plan-delta``, ``tool-call-start``/``-delta``/``-end``,
``message-end``) ending in ``data: [DONE]``, in the shapes of ``shared/fixtures/providers/cohere``.

A tool-call reply carries a ``tool_plan`` as Cohere's always do; its tokens count as output.
Errors are Cohere's ``{"id", "message"}``.
"""

from __future__ import annotations

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
    pieces_of,
    text_of,
)

_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TOOL_CHOICES = frozenset({"REQUIRED", "NONE"})
_ERRORS: dict[int, str] = {
    400: "invalid request: simulated bad request.",
    401: "invalid api token",
    403: "Forbidden.",
    404: "model 'sim-model' not found, make sure the correct model ID was used and that you have access to the model.",
    422: "invalid request: simulated unprocessable request.",
    429: "You are using a Trial key, which is limited to 10 API calls / minute (simulated).",
    499: "request cancelled by user",
    500: "internal server error, this has been reported to our developers.",
    503: "service unavailable (simulated).",
}


def _tool_plan(plan: Plan) -> str:
    return "I will call " + " and ".join(name for name, _ in plan.calls) + "."


def _output_tokens(plan: Plan) -> int:
    return plan.output_tokens + (count_tokens(_tool_plan(plan)) if plan.calls else 0)


def _usage(plan: Plan) -> dict[str, Any]:
    tokens = {"input_tokens": plan.input_tokens, "output_tokens": _output_tokens(plan)}
    return {"billed_units": tokens, "tokens": tokens, "cached_tokens": 0}


def _finish_reason(plan: Plan) -> str:
    return "TOOL_CALL" if plan.calls else "MAX_TOKENS" if plan.incomplete else "COMPLETE"


def _calls(plan: Plan) -> list[dict[str, Any]]:
    return [{"id": f"{name}_{new_id('')[:12]}", "type": "function", "function": {"name": name, "arguments": args}}
            for name, args in plan.calls]


def _output_format(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    if value.get("type") != "json_object":
        raise BadRequest(f"invalid response_format type {value.get('type')!r}")
    schema = value.get("json_schema")
    return schema if isinstance(schema, dict) else "json_object"


class CohereDialect(SimDialect):
    """Cohere v2 Chat: ``messages`` in, one assistant ``message`` out."""

    name = "cohere"
    routes = [("POST", "/v2/chat")]

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("invalid request: messages must be a non-empty list")
        tokens = 0
        last_user = ""
        for message in messages:
            if message.get("role") not in _ROLES:
                raise BadRequest(f"invalid request: unknown role {message.get('role')!r}")
            text = text_of(message.get("content"))
            tokens += count_tokens(text) + count_tokens(message.get("tool_plan") or "")
            if message["role"] == "user":
                last_user = text
            for call in message.get("tool_calls") or []:
                tokens += count_tokens(str(call["function"]["arguments"]))
        outputs = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            outputs.append(text_of(message.get("content")))
        choice = body.get("tool_choice")
        if choice is not None and choice not in _TOOL_CHOICES:
            raise BadRequest(f"invalid request: tool_choice must be one of {sorted(_TOOL_CHOICES)}")
        return Turn(
            last_user=last_user,
            tool_outputs=outputs[::-1],
            input_tokens=tokens,
            tools=[] if choice == "NONE" else callable_tools(body.get("tools"), None),
            parallel=True,
            max_tokens=max_tokens_of(body.get("max_tokens")),
            output_format=_output_format(body.get("response_format")),
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        message: dict[str, Any] = {"role": "assistant"}
        if plan.calls:
            message |= {"tool_plan": _tool_plan(plan), "tool_calls": _calls(plan)}
        else:
            message["content"] = [{"type": "text", "text": plan.text}]
        return encode_json({"id": new_id(""), "message": message, "finish_reason": _finish_reason(plan),
                            "usage": _usage(plan)})

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        def event(kind: str, **payload: Any) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + encode_json({"type": kind, **payload}) + b"\n\n"

        start = {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}
        frames = [event("message-start", id=new_id(""), delta=start)]
        if plan.calls:
            frames.extend(event("tool-plan-delta", delta={"message": {"tool_plan": piece}})
                          for piece in pieces_of(_tool_plan(plan)))
            for index, call in enumerate(_calls(plan)):
                arguments = call["function"]["arguments"]
                call["function"]["arguments"] = ""
                frames.append(event("tool-call-start", index=index, delta={"message": {"tool_calls": call}}))
                frames.extend(event("tool-call-delta", index=index,
                                    delta={"message": {"tool_calls": {"function": {"arguments": piece}}}})
                              for piece in pieces_of(arguments))
                frames.append(event("tool-call-end", index=index))
        else:
            frames.append(event("content-start", index=0,
                                delta={"message": {"content": {"type": "text", "text": ""}}}))
            frames.extend(event("content-delta", index=0, delta={"message": {"content": {"text": piece}}})
                          for piece in plan.pieces)
            frames.append(event("content-end", index=0))
        frames.append(event("message-end", delta={"finish_reason": _finish_reason(plan), "usage": _usage(plan)}))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def error_body(
        self, status: int, message: str | None = None, code: str | None = None, param: str | None = None
    ) -> bytes:
        """Cohere's ``{"id", "message"}``; it has no code or param."""
        stock = _ERRORS.get(status, f"simulated error {status}")
        return encode_json({"id": new_id(""), "message": message or stock})


DIALECT = CohereDialect()
