"""Google Gemini, in the shapes of ``shared/fixtures/providers/gemini``: the Gemini API
(``POST /v1beta/models/{model}:generateContent``, ``...:streamGenerateContent?alt=sse``, key in
``x-goog-api-key``) and Vertex AI (``POST /v1/projects/{p}/locations/{l}/publishers/google/
models/{model}:generateContent``, ``Authorization: Bearer``).

Replies are ``GenerateContentResponse`` objects; a stream sends one per text piece (SSE ``data:``
events separated by ``\\r\\n\\r\\n``, usage cumulative on every chunk) and ends, as Gemini 3 does,
with an empty text part carrying ``finishReason``. Function calls come whole, without ids, and
finish with ``STOP`` like Gemini's own. Requests are checked the way Gemini checks them where an
adapter can get it wrong: a function-response turn must answer every call of the turn before it.

``...:countTokens`` answers ``{"totalTokens"}``, counted as a reply's prompt tokens are: on the
Gemini API from a ``generateContentRequest`` (which must name its ``model``; bare ``contents``,
which the real API also takes, is refused, as it would leave the instructions and tools
uncounted), on Vertex from the top-level ``contents``, ``systemInstruction`` and ``tools``.
"""

from __future__ import annotations

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
)

_decode = msgspec.json.decode
_METHODS = frozenset({"generateContent", "streamGenerateContent"})
_VERTEX_PREFIX = "/v1/projects/"
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "models/sim-model is not found for API version v1beta, or is not supported for generateContent.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def _method(request: web.Request) -> tuple[str, str]:
    """``(model, method)`` from the ``{target}`` capture, e.g. ``sim-model:generateContent``."""
    model, _, method = request.match_info["target"].partition(":")
    return model, method


def _part_tokens(part: dict[str, Any]) -> int:
    """A part's tokens: its text (not a thought's), a call's arguments, a function response's output."""
    if isinstance(part.get("text"), str) and not part.get("thought"):
        return count_tokens(part["text"])
    if "functionCall" in part:
        return count_tokens(encode_json(part["functionCall"].get("args", {})).decode())
    if "functionResponse" in part:
        return count_tokens(_output_text(part["functionResponse"].get("response")))
    return 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    system = body.get("systemInstruction") or {}
    parts = [*(system.get("parts") or []), *(part for content in body["contents"] for part in content["parts"])]
    return sum(_part_tokens(part) for part in parts)


def _json_schema(schema: Any) -> Any:
    """A Gemini ``Schema`` (upper-case OpenAPI types) as the JSON Schema ``sample_json`` reads."""
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _json_schema(value) for key, value in schema.items() if key != "type"}
    if isinstance(schema.get("type"), str):
        out["type"] = schema["type"].lower()
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: _json_schema(sub) for name, sub in schema["properties"].items()}
    return out


def _tools(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, JSON schema) of the callable declarations, narrowed by ``toolConfig``."""
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if config.get("mode") == "NONE":
        return []
    allowed = config.get("allowedFunctionNames")
    offered = []
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            name = declaration["name"]
            if allowed is None or name in allowed:
                schema = declaration.get("parametersJsonSchema") or _json_schema(declaration.get("parameters"))
                offered.append((name, schema))
    return offered


def _output_format(config: dict[str, Any]) -> Any:
    if config.get("responseMimeType") != "application/json":
        return None
    if "responseJsonSchema" in config:
        return config["responseJsonSchema"]
    if "responseSchema" in config:
        return _json_schema(config["responseSchema"])
    return "json_object"


def _output_text(response: Any) -> str:
    output = response.get("output") if isinstance(response, dict) else None
    return output if isinstance(output, str) else encode_json(response).decode()


class GeminiDialect(SimDialect):
    """Gemini ``contents`` in, one candidate out."""

    name = "gemini"
    routes = [("POST", "/v1beta/models/{target}"),
              ("POST", _VERTEX_PREFIX + "{project}/locations/{location}/publishers/google/models/{target}")]
    auth_header = "x-goog-api-key"
    auth_scheme = ""

    def authorized(self, request: web.Request, api_key: str) -> bool:
        if request.path.startswith(_VERTEX_PREFIX):  # Vertex takes an OAuth bearer token
            return request.headers.get("Authorization") == f"Bearer {api_key}"
        return super().authorized(request, api_key)

    def model_of(self, body: dict[str, Any], request: web.Request) -> str | None:
        return _method(request)[0] or None

    def wants_stream(self, body: dict[str, Any], request: web.Request) -> bool:
        return _method(request)[1] == "streamGenerateContent"

    def count_reply(self, body: dict[str, Any], request: web.Request) -> bytes | None:
        model, method = _method(request)
        if method != "countTokens":
            return None
        counted = body
        if not request.path.startswith(_VERTEX_PREFIX):
            if set(body) != {"generateContentRequest"}:
                raise BadRequest("The simulator counts a generateContentRequest alone: bare contents leave the "
                                 "system instruction and tools uncounted.")
            counted = body["generateContentRequest"]
            if counted.get("model") != f"models/{model}":
                raise BadRequest("* CountTokensRequest.generate_content_request.model: unexpected model name format")
        tokens = _prompt_tokens(counted)
        return encode_json({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        if _method(request)[1] not in _METHODS:
            raise BadRequest(f"Method not found: {_method(request)[1]}")
        contents = body["contents"]
        if not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
        last_user = ""
        calls = 0  # function calls of the last model turn, still to be answered
        for content in contents:
            parts = content["parts"]
            if not parts:
                raise BadRequest("* GenerateContentRequest.contents.parts: contents.parts must not be empty.")
            texts = [part["text"] for part in parts if isinstance(part.get("text"), str) and not part.get("thought")]
            responses = [part["functionResponse"] for part in parts if "functionResponse" in part]
            if content.get("role", "user") == "model":
                calls = sum(1 for part in parts if "functionCall" in part)
                continue
            if calls and len(responses) != calls:
                raise BadRequest("Please ensure that the number of function response parts is equal to the number "
                                 "of function call parts of the function call turn.")
            calls = 0
            if texts:
                last_user = " ".join(texts)
        last = contents[-1]
        outputs = [_output_text(part["functionResponse"].get("response")) for part in last["parts"]
                   if "functionResponse" in part] if last.get("role", "user") == "user" else []
        config = body.get("generationConfig") or {}
        return Turn(
            last_user=last_user,
            tool_outputs=outputs,
            input_tokens=_prompt_tokens(body),
            tools=_tools(body),
            parallel=True,  # Gemini has no switch for parallel calls
            max_tokens=max_tokens_of(config.get("maxOutputTokens")),
            output_format=_output_format(config),
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        parts = ([{"text": plan.text}] if plan.text is not None
                 else [{"functionCall": {"name": name, "args": _decode(args)}} for name, args in plan.calls])
        chunk = self._chunk(request, new_id(""), parts, plan.output_tokens, plan)
        chunk["candidates"][0]["finishReason"] = "MAX_TOKENS" if plan.incomplete else "STOP"
        return encode_json(chunk)

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        response_id = new_id("")
        frames: list[bytes] = []
        if plan.text is None:
            calls = [{"functionCall": {"name": name, "args": _decode(args)}} for name, args in plan.calls]
            frames.append(_frame(self._chunk(request, response_id, calls, plan.output_tokens, plan)))
        else:
            frames.extend(_frame(self._chunk(request, response_id, [{"text": piece}], count, plan))
                          for count, piece in enumerate(plan.pieces, 1))
        last = self._chunk(request, response_id, [{"text": ""}], plan.output_tokens, plan)
        last["candidates"][0]["finishReason"] = "MAX_TOKENS" if plan.incomplete else "STOP"
        frames.append(_frame(last))
        return frames

    def error_body(self, status: int, message: str | None = None, code: str | None = None,
                   param: str | None = None) -> bytes:
        """Google's ``{"error": {"code", "message", "status"}}``; a 429 carries ``RetryInfo``."""
        grpc_status = _STATUS.get(status, "UNKNOWN" if status >= 500 else "FAILED_PRECONDITION")
        text = message or _MESSAGES.get(status, f"Simulated error {status}.")
        error: dict[str, Any] = {"code": status, "message": text, "status": grpc_status}
        if status == 429:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
        return encode_json({"error": error})

    @staticmethod
    def _chunk(request: web.Request, response_id: str, parts: list[dict[str, Any]], output_tokens: int,
               plan: Plan) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": plan.input_tokens, "candidatesTokenCount": output_tokens,
                              "totalTokenCount": plan.input_tokens + output_tokens,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.input_tokens}]},
            "modelVersion": _method(request)[0],
            "responseId": response_id,
        }


def _frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + encode_json(chunk) + b"\r\n\r\n"


DIALECT = GeminiDialect()
