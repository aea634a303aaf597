"""AWS Bedrock Runtime Converse (``POST /model/{modelId}/converse``) and ConverseStream
(``/converse-stream``): JSON, or binary ``application/vnd.amazon.eventstream`` messages, in the
shapes of ``shared/fixtures/providers/bedrock``.

Every stream message is a real AWS eventstream frame (prelude with total and header lengths and
its CRC32, the ``:event-type``/``:content-type``/``:message-type`` string headers, the JSON
payload, the message CRC32), and every event carries a random padding field ``p`` as the real
service's do. Any SigV4 signature (or none) is accepted. Errors are ``{"message": ...}`` as
Bedrock sends them. Requests Bedrock would refuse (a conversation that does not alternate or
start with the user, tool blocks without ``toolConfig``, blank text) get its 400 wording.
"""

from __future__ import annotations

import random
import struct
import zlib
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

_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TIERS = frozenset({"priority", "default", "flex", "reserved"})
_ERRORS: dict[int, str] = {
    400: "Malformed input request, please reformat your input and try again.",
    401: "The security token included in the request is invalid.",
    403: "The security token included in the request is invalid.",
    404: "Could not resolve the foundation model from the provided model identifier.",
    408: "Model has timed out in processing the request. Try your request again.",
    424: "The model returned an error. Try your request again.",
    429: "Too many requests, please wait before trying again.",
    500: "The system encountered an unexpected error during processing. Try your request again.",
    503: "Bedrock is unable to process your request.",
}


def _header(name: str, value: str) -> bytes:
    """One eventstream header of type 7 (string): name length, name, type, value length, value."""
    raw_name, raw_value = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS eventstream message: prelude (total and header lengths, CRC32), string headers,
    payload, and the CRC32 of everything before it."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    prelude = struct.pack(">II", 12 + len(raw_headers) + len(payload) + 4, len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """A ConverseStream event carrying ``payload`` and its random padding."""
    padded = {**payload, "p": _PADDING[: random.randint(1, len(_PADDING))]}
    return encode_message({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                          encode_json(padded))


def _check(messages: list[Any], tool_config: Any) -> None:
    """What Bedrock refuses before a model sees the request, in its own words."""
    if not messages or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        raise BadRequest("A conversation must start with a user message. Try again with a conversation that "
                         "starts with a user message.")
    for index, message in enumerate(messages):
        if index and message.get("role") == messages[index - 1].get("role"):
            raise BadRequest("A conversation must alternate between user and assistant roles. Make sure the "
                             "conversation alternates between user and assistant roles and try again.")
        for position, block in enumerate(message["content"]):
            if ("toolUse" in block or "toolResult" in block) and not isinstance(tool_config, dict):
                raise BadRequest("The toolConfig field must be defined when using toolUse and toolResult content "
                                 "blocks.")
            if "text" in block and not block["text"].strip():
                raise BadRequest(f"The text field in the ContentBlock object at messages.{index}.content.{position} "
                                 "is blank. Add text to the text field, and try again.")


def _tools(tool_config: Any) -> list[tuple[str, Any]]:
    """(name, schema) of the tools the model may call, narrowed by ``toolChoice.tool``."""
    if not isinstance(tool_config, dict):
        return []
    offered = [(spec["name"], (spec.get("inputSchema") or {}).get("json"))
               for tool in tool_config.get("tools") or [] if isinstance(spec := tool.get("toolSpec"), dict)]
    forced = (tool_config.get("toolChoice") or {}).get("tool")
    if isinstance(forced, dict):
        return [tool for tool in offered if tool[0] == forced.get("name")][:1]
    return offered


def _output_format(body: dict[str, Any]) -> Any:
    fmt = ((body.get("outputConfig") or {}).get("textFormat") or {})
    if fmt.get("type") != "json_schema":
        return None
    schema = ((fmt.get("structure") or {}).get("jsonSchema") or {}).get("schema")
    try:
        decoded = msgspec.json.decode(schema) if isinstance(schema, str) else None
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise BadRequest("The json schema definition at outputConfig.textFormat.structure.jsonSchema.schema is "
                         "invalid. Provide a valid JSON schema string and try again.")
    return decoded


def _stop_reason(plan: Plan) -> str:
    return "tool_use" if plan.calls else "max_tokens" if plan.incomplete else "end_turn"


def _usage(plan: Plan) -> dict[str, int]:
    return {"inputTokens": plan.input_tokens, "outputTokens": plan.output_tokens,
            "totalTokens": plan.input_tokens + plan.output_tokens}


def _echoes(body: dict[str, Any]) -> dict[str, Any]:
    """What a reply repeats of the request: the latency setting and the tier it was served on."""
    echoed: dict[str, Any] = {}
    performance = body.get("performanceConfig")
    if isinstance(performance, dict):
        echoed["performanceConfig"] = performance
    tier = body.get("serviceTier")
    if isinstance(tier, dict) and tier.get("type") in _TIERS:
        echoed["serviceTier"] = {"type": tier["type"]}
    return echoed


class BedrockDialect(SimDialect):
    """Bedrock Converse: ``messages`` of content blocks in, one assistant message out."""

    name = "bedrock"
    routes = [("POST", "/model/{model_id}/converse"), ("POST", "/model/{model_id}/converse-stream")]
    stream_content_type = "application/vnd.amazon.eventstream"
    auth_header = None

    def model_of(self, body: dict[str, Any], request: web.Request) -> str | None:
        return request.match_info.get("model_id")

    def wants_stream(self, body: dict[str, Any], request: web.Request) -> bool:
        return request.path.endswith("/converse-stream")

    def error_body(self, status: int, message: str | None = None, code: str | None = None,
                   param: str | None = None) -> bytes:
        return encode_json({"message": message or _ERRORS.get(status, f"Simulated error {status}.")})

    def read(self, body: dict[str, Any], request: web.Request) -> Turn:
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        tool_config = body.get("toolConfig")
        _check(messages, tool_config)
        tokens = sum(count_tokens(text_of([block])) for block in body.get("system") or [])
        last_user = ""
        for message in messages:
            text = text_of(message["content"])
            tokens += count_tokens(text)
            if message["role"] == "user" and text:
                last_user = text
            for block in message["content"]:
                if "toolUse" in block:
                    tokens += count_tokens(encode_json(block["toolUse"].get("input")).decode())
                elif "toolResult" in block:
                    tokens += count_tokens(text_of(block["toolResult"].get("content")))
        last = messages[-1]["content"]
        outputs = [text_of(block["toolResult"].get("content")) for block in last if "toolResult" in block]
        return Turn(
            last_user=last_user,
            tool_outputs=outputs if messages[-1]["role"] == "user" else [],
            input_tokens=tokens,
            tools=_tools(tool_config),
            parallel=True,  # Converse has no switch for parallel tool calls
            max_tokens=max_tokens_of((body.get("inferenceConfig") or {}).get("maxTokens")),
            output_format=_output_format(body),
        )

    def render_json(self, body: dict[str, Any], request: web.Request, plan: Plan) -> bytes:
        content: list[dict[str, Any]]
        if plan.text is None:
            content = [{"toolUse": {"toolUseId": new_id("tooluse_"), "name": name,
                                    "input": msgspec.json.decode(args)}} for name, args in plan.calls]
        else:
            content = [{"text": plan.text}]
        return encode_json({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _stop_reason(plan), "usage": _usage(plan), "metrics": {"latencyMs": 1},
            **_echoes(body),
        })

    def render_stream(self, body: dict[str, Any], request: web.Request, plan: Plan) -> list[bytes]:
        frames = [frame("messageStart", {"role": "assistant"})]
        if plan.text is None:
            for index, (name, args) in enumerate(plan.calls):
                frames.append(frame("contentBlockStart", {"contentBlockIndex": index, "start": {
                    "toolUse": {"toolUseId": new_id("tooluse_"), "name": name}}}))
                frames.extend(frame("contentBlockDelta", {"contentBlockIndex": index,
                                                          "delta": {"toolUse": {"input": piece}}})
                              for piece in pieces_of(args))
                frames.append(frame("contentBlockStop", {"contentBlockIndex": index}))
        else:
            frames.extend(frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                          for piece in plan.pieces)
            frames.append(frame("contentBlockStop", {"contentBlockIndex": 0}))
        frames.append(frame("messageStop", {"stopReason": _stop_reason(plan)}))
        frames.append(frame("metadata", {"usage": _usage(plan), "metrics": {"latencyMs": 1}, **_echoes(body)}))
        return frames


DIALECT = BedrockDialect()
