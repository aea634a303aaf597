"""What every simulator dialect shares: the neutral ``Turn`` and ``Plan``, the ``SimDialect``
base class a dialect module implements, and the helpers a dialect needs to read a request and
dress a reply.

A dialect reads its native request into a ``Turn``; the simulator decides the reply as a
``Plan``; the dialect renders the ``Plan`` in its native JSON body or stream frames. Token
counting, sample values and ids come from here so every dialect agrees on them.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from aiohttp import web

__all__ = [
    "BadRequest",
    "ErrorShape",
    "Plan",
    "SimDialect",
    "Turn",
    "callable_tools",
    "count_tokens",
    "encode_json",
    "max_tokens_of",
    "new_id",
    "output_format_of",
    "pieces_of",
    "sample_json",
    "service_tier",
    "text_of",
]

encode_json = msgspec.json.Encoder().encode
"""Encode a value to compact JSON bytes (one shared msgspec encoder)."""

_PIECE = re.compile(r"\s*\S{1,8}|\s+")
_SCHEMA_DEPTH = 8
"""Nesting bound for sample values, so a recursive ``$ref`` cannot loop."""
_SCALAR_SAMPLES: dict[str, Any] = {"number": 1, "integer": 1, "boolean": True}
_SERVICE_TIERS = frozenset({"default", "flex", "priority"})


# ---------------------------------------------------------------- the neutral turn and plan


class Turn(msgspec.Struct, kw_only=True):
    """A request reduced to what the reply depends on; the same for every dialect."""

    last_user: str
    """Text of the last user message ("" when there is none)."""
    tool_outputs: list[str]
    """Outputs of the tool results that end the conversation; non-empty means "answer them"."""
    input_tokens: int
    """Tokens (``count_tokens``) of the instructions, messages, tool calls and tool outputs."""
    tools: list[tuple[str, Any]]
    """(name, parameters schema) of the function tools the request lets the model call, in
    offered order; already narrowed by the dialect's tool choice (empty when it says none)."""
    parallel: bool
    """Whether the request allows several tool calls in one turn."""
    max_tokens: int | None
    """Output token limit, or ``None`` for none."""
    output_format: Any
    """A JSON schema (dict) the reply must follow, the string ``"json_object"`` for any JSON
    object, or ``None`` for plain text."""


class Plan(msgspec.Struct, kw_only=True):
    """The reply, before it is dressed in a dialect: text (cut into pieces) or tool calls."""

    text: str | None
    """The reply text, already cut at ``max_tokens``; ``None`` when the reply is tool calls."""
    pieces: list[str]
    """``text`` as tokens (``pieces_of``); a stream sends one delta per piece."""
    calls: list[tuple[str, str]]
    """(tool name, arguments as a JSON string); empty for a text reply."""
    incomplete: bool
    """The text was cut by ``max_tokens`` (finish reason "length" / "max_tokens")."""
    input_tokens: int
    output_tokens: int


class BadRequest(Exception):
    """Raised by ``SimDialect.read`` for a request the real service would reject; the simulator
    answers 400 with the message in the dialect's error shape."""


# ---------------------------------------------------------------- helpers for reading requests


def text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts carrying ``text`` (joined by
    spaces); anything else is ""."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def pieces_of(text: str) -> list[str]:
    """``text`` cut into tokens: runs of up to 8 non-space characters with the whitespace before
    them. Joining the pieces gives ``text`` back."""
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens (``pieces_of``) ``text`` is."""
    return len(_PIECE.findall(text))


def max_tokens_of(value: Any) -> int | None:
    """A request's output token limit if it is a non-negative integer, else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def callable_tools(tools: Any, choice: Any) -> list[tuple[str, Any]]:
    """(name, parameters) of the OpenAI-style function tools the model may call, in offered
    order, narrowed by an OpenAI-style ``tool_choice``. Reads both shapes: Chat (and Ollama)
    nest the function under ``function``, Responses keeps it flat."""
    if choice == "none" or not isinstance(tools, list):
        return []
    offered = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            fn = tool.get("function", tool)
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                offered.append((fn["name"], fn.get("parameters")))
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            forced = choice.get("name") or (choice.get("function") or {}).get("name")
            return [tool for tool in offered if tool[0] == forced][:1]
        if choice.get("type") == "allowed_tools":
            spec = choice.get("allowed_tools", choice)  # Chat nests the list one level deeper
            allowed = {(t.get("function") or t).get("name") for t in spec.get("tools") or [] if isinstance(t, dict)}
            return [tool for tool in offered if tool[0] in allowed]
    return offered


def output_format_of(fmt: Any) -> Any:
    """``Turn.output_format`` of an OpenAI-style format: ``json_schema`` (Responses flat, Chat
    nested under ``json_schema``) gives its schema, ``json_object`` the string, else ``None``."""
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "json_object"
    if fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema", fmt).get("schema")
        return schema if isinstance(schema, dict) else {}
    return None


def service_tier(body: Mapping[str, Any]) -> str:
    """The OpenAI service tier a reply reports: the requested one if OpenAI would echo it."""
    tier = body.get("service_tier")
    return tier if tier in _SERVICE_TIERS else "default"


# ---------------------------------------------------------------- helpers for building replies


def new_id(prefix: str) -> str:
    """A fresh random id: ``prefix`` and 24 hex digits."""
    return prefix + os.urandom(12).hex()


def _sample(schema: Any, word: str, defs: Mapping[str, Any], depth: int = 0) -> Any:
    if not isinstance(schema, dict) or depth > _SCHEMA_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _sample(defs.get(ref.rsplit("/", 1)[-1]), word, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _sample(schema[key][0], word, defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _sample(props.get(name), word, defs, depth + 1) for name in schema.get("required") or []}
    if kind == "string":
        return word
    if kind == "array":
        return []
    return _SCALAR_SAMPLES.get(str(kind))


def sample_json(schema: Any, word: str) -> str:
    """A deterministic JSON value matching ``schema``, as a string: objects get their required
    properties, strings ``word``, numbers 1, booleans true, arrays []; enums and consts their
    first value; ``$ref`` into ``$defs``/``definitions`` is followed (to a bounded depth)."""
    defs: Mapping[str, Any] = {}
    if isinstance(schema, dict):
        defs = schema.get("$defs") or schema.get("definitions") or {}
    return encode_json(_sample(schema, word, defs)).decode()


# ---------------------------------------------------------------- errors and dialects

# (type, code, message) per status, worded like OpenAI's own errors so error mappers see real shapes.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Simulated bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Simulated forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("timeout", None, "Request timed out."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (simulated). Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("timeout", None, "Gateway timeout."),
}


class ErrorShape:
    """How error replies look. This default is OpenAI's
    ``{"error": {"message", "type", "param", "code"}}``; a dialect overrides ``error_body`` (and
    ``error_content_type``) to reply in its own native shape."""

    error_content_type: str = "application/json"
    """Content type of ``error_body``'s bytes."""

    def error_body(
        self, status: int, message: str | None = None, code: str | None = None, param: str | None = None
    ) -> bytes:
        """The body of an error reply with HTTP ``status``. ``message`` ``None`` means the
        dialect's stock wording for the status; ``code`` ``None`` its stock error code (if its
        shape has one); ``param`` names the request field at fault where the shape has a place."""
        kind, stock_code, stock_message = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Simulated error {status}.")
        )
        return encode_json({"error": {"message": message or stock_message, "type": kind, "param": param,
                                      "code": code or stock_code}})


class SimDialect(ErrorShape, ABC):
    """One wire dialect of the simulator. A dialect module sets a module-level
    ``DIALECT = MyDialect()``; see ``providers.simulator`` for how to add one.

    ``body`` is always the request's JSON object (the simulator answers 400 itself to a body
    that is not one). ``read`` may raise ``BadRequest`` (or ``AttributeError``/``TypeError``/
    ``KeyError``/``ValueError`` for a field of the wrong JSON type), which become a 400.
    Rendering runs on every request, so keep it to building dicts and encoding them once, or
    splicing pre-encoded bytes.
    """

    name: str
    """Unique, stable name, by habit the module's (``"openai_chat"``)."""
    routes: Sequence[tuple[str, str]]
    """(HTTP method, aiohttp path pattern) served by this dialect, e.g. ``("POST", "/v1/responses")``.
    A pattern may capture parts for the dialect to parse from ``request.match_info``, e.g.
    ``"/v1beta/models/{model}:generateContent"`` or ``"/v1beta/models/{target}"`` (a capture
    matches any characters but ``/``, colons included)."""
    count_routes: Sequence[tuple[str, str]] = ()
    """(HTTP method, path) of the dialect's token-counting endpoint when ``routes`` does not cover
    it already, answered by ``count_reply``."""
    stream_content_type: str = "text/event-stream"
    """Content type of a streamed reply: ``text/event-stream`` (SSE), ``application/x-ndjson`` or
    ``application/vnd.amazon.eventstream``; ``text/*`` types get ``; charset=utf-8``. It also
    tells the ``malformed`` fault how to break a frame."""
    auth_header: str | None = "Authorization"
    """Header that carries the key when ``SimulatorOptions.api_key`` is set (``x-api-key``,
    ``x-goog-api-key``, ``api-key``...), or ``None`` to accept any credentials (SigV4, none)."""
    auth_scheme: str = "Bearer "
    """What comes before the key in ``auth_header`` ("" for headers that carry the bare key)."""

    @abstractmethod
    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        """Reduce the native request to a ``Turn``."""

    def wants_stream(self, body: dict[str, Any], request: web.Request) -> bool:
        """Whether to answer with ``render_stream``; by default when ``"stream": true``."""
        return body.get("stream") is True

    def model_of(self, body: dict[str, Any], request: web.Request) -> str | None:
        """The model the request names, or ``None`` to reject it with a 400 "missing model";
        by default the body's ``"model"`` string."""
        model = body.get("model")
        return model if isinstance(model, str) else None

    @abstractmethod
    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        """The non-streamed reply body (``application/json``)."""

    @abstractmethod
    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        """The streamed reply as frames, each one write unit: an SSE block ending in a blank
        line, an NDJSON line, or one binary AWS eventstream message. Streams have at least two."""

    def count_reply(self, body: dict[str, Any], request: web.Request) -> bytes | None:
        """The reply (``application/json``) to a token-counting request, or ``None`` when the
        request asks for a model reply instead (the default: the dialect counts nothing). A
        dialect that counts serves its counting path (``count_routes``, or one of ``routes``),
        counts exactly as ``read`` does for ``Turn.input_tokens``, and may raise what ``read`` may."""
        return None

    def authorized(self, request: web.Request, api_key: str) -> bool:
        """Whether the request carries ``api_key`` the way this dialect sends it."""
        if self.auth_header is None:
            return True
        return request.headers.get(self.auth_header) == self.auth_scheme + api_key

    def extra_routes(self) -> Sequence[web.RouteDef]:
        """Side endpoints (a model list, say) served as they are: no auth, recording or faults."""
        return ()
