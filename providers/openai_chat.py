"""The Chat Completions dialect: OpenAI and every OpenAI-compatible host.

One adapter serves them all; what differs between hosts (base URL, auth style, headers, query,
``Quirks``) comes from the ``Deployment``. ``prepare`` translates an ``UpstreamRequest`` into
``POST {base_url}/chat/completions`` without I/O; ``run`` sends it and yields deltas, from the
whole JSON reply or, when streaming, through ``providers.openai_chat_stream``.

What Chat Completions cannot carry is refused with ``UnsupportedFeature`` naming the item or
tool (``input[3]``, ``tools[1]``), never dropped silently; the exceptions are reasoning items
(Chat cannot take reasoning back, so they are left out of the history unless the host takes
Mistral-style ``thinking`` chunks) and parameters that are only bookkeeping on the Responses side
(``metadata``, ``store``, ``reasoning.summary``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import string
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from providers.base import PreparedCall, SessionProvider
from providers.common import (
    TEXT_PARTS,
    Refusals,
    chat_function,
    part_texts,
    put,
    reasoning_effort,
    set_fields,
    tool_call_start,
)
from providers.http import (
    auth_headers,
    decode_events,
    error_message,
    join_url,
    logged_body,
    parse_retry_after,
    read_json,
    safe_message,
    send,
)
from providers.openai_chat_stream import (
    ChatStreamDecoder,
    arguments_text,
    chunk_usage,
    content_parts,
    finish_reason,
    raise_error_payload,
    reasoning_text,
    reply_info,
)
from proxy.errors import ContextTooLong, GatewayError, UnsupportedFeature, error_for_upstream_status
from proxy.schema.content import InputFile, InputImage
from proxy.schema.deltas import (
    Delta,
    Finish,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallArguments,
    UsageDelta,
)
from proxy.schema.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    Item,
    ItemReference,
    Message,
    OpaqueItem,
    Reasoning,
)
from proxy.schema.request import (
    AllowedTools,
    CreateResponseBody,
    FunctionTool,
    SpecificFunction,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    Tool,
    ToolChoice,
)
from proxy.schema.upstream import Quirks, UpstreamRequest

_PATH = "/chat/completions"
log = logging.getLogger(__name__)
_REFUSE = Refusals("Chat Completions")
_ALNUM9 = re.compile(r"[A-Za-z0-9]{9}")
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


class OpenAIChatProvider(SessionProvider):
    """``Provider`` for the ``openai_chat`` dialect."""

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        quirks = deployment.quirks
        body: dict[str, Any] = {
            "messages": _messages(request.items, request.instructions, quirks),
            "model": deployment.model,
        }
        _tools(request.tools, request.tool_choice, quirks, body)
        _parameters(request.body, quirks, body)
        if request.stream:
            body["stream"] = True
            if quirks.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return PreparedCall(url=join_url(deployment.base_url, _PATH, deployment.query),
                            headers=auth_headers(deployment), body=body)

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
        call = self.prepare(request)
        deployment = request.deployment
        provider = deployment.provider
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        response = await send(self._session, call, deployment, map_error)
        if request.stream:
            async for delta in decode_events(response, provider, ChatStreamDecoder(provider, map_error)):
                yield delta
            return
        raw, reply = await read_json(response, provider)
        if reply.get("error"):  # some compatible hosts answer 200 with an error body
            raise_error_payload(reply, raw, map_error)
        for delta in _reply_deltas(reply):
            yield delta


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The adapter's one error mapper: upstream status, ``retry-after``, OpenAI-style code.

    Only the upstream's message travels on (shortened, with the deployment's key removed should
    the upstream echo it); the rest of the body is not exposed."""
    log.debug("upstream error %s: %r", status, logged_body(body, secret))
    message, code, param = error_message(body)
    message = safe_message(_validation_errors(body) or message, secret)
    if code is not None and code.isdigit():  # OpenRouter and Azure repeat the HTTP status as the code
        code = None
    if code == "context_length_exceeded":
        return ContextTooLong(message, param=param)
    return error_for_upstream_status(status, message, code=code, param=param,
                                     retry_after=parse_retry_after(headers))


def _validation_errors(body: bytes) -> str | None:
    """Field-by-field validation errors (Mistral's 422s, in any of the shapes it uses: ``detail``
    at the top, under ``message``, or ``message`` itself) as ``path: problem``; the rejected
    input values are left out."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, Mapping):
        return None
    detail, message = data.get("detail"), data.get("message")
    if isinstance(message, str) and message.startswith("{"):
        with contextlib.suppress(msgspec.DecodeError):
            message = msgspec.json.decode(message)
    if detail is None:
        detail = message.get("detail") if isinstance(message, Mapping) else message
    if not isinstance(detail, list):
        return None
    problems = []
    for entry in detail:
        if isinstance(entry, Mapping) and isinstance(entry.get("msg"), str):
            path = ".".join(str(step) for step in entry.get("loc") or () if step != "body")
            problems.append(f"{path}: {entry['msg']}" if path else entry["msg"])
    return "; ".join(problems) or None


# -- request translation -----------------------------------------------------------------------
def _messages(items: list[Item], instructions: str | None, quirks: Quirks) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    calls: list[dict[str, Any]] | None = None  # tool_calls of the assistant message being grouped
    thinking: list[dict[str, Any]] = []  # thinking chunks waiting for the next assistant turn
    for index, item in enumerate(items):
        if isinstance(item, FunctionCall):
            if calls is None:
                calls = []
                turn: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
                if thinking:
                    turn["content"], thinking = thinking, []
                messages.append(turn)
            calls.append({"id": _call_id(item.call_id, quirks), "type": "function",
                          "function": {"name": item.name, "arguments": item.arguments}})
            continue
        calls = None
        if isinstance(item, Reasoning):  # only hosts that take thinking chunks get reasoning back
            if quirks.thinking_history:
                thinking += _thinking_chunk(item)
            continue
        pending, thinking = thinking, []
        if isinstance(item, Message):
            message = _message(item, index, quirks)
            if pending and item.role == "assistant":
                text = message["content"]
                message["content"] = [*pending, *([{"type": "text", "text": text}] if text else [])]
            messages.append(message)
        elif isinstance(item, FunctionCallOutput):
            messages.append({"role": "tool", "tool_call_id": _call_id(item.call_id, quirks),
                             "content": _tool_output(item.output, index)})
        elif isinstance(item, Compaction):
            raise UnsupportedFeature("compaction items cannot be sent to a Chat Completions upstream",
                                     param=f"input[{index}]")
        elif isinstance(item, ItemReference):
            raise UnsupportedFeature(f"item_reference {item.id!r} was not resolved", param=f"input[{index}]")
        elif isinstance(item, OpaqueItem):
            raise _REFUSE.item(item, index)
    return messages


def _call_id(call_id: str, quirks: Quirks) -> str:
    """``call_id`` as the host accepts it. Under ``alnum9`` an id that is not nine letters and
    digits becomes nine base-62 digits of its hash: stable, so a call and its output (and the same
    history sent again) keep matching."""
    if quirks.tool_call_ids == "any" or _ALNUM9.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_BASE62))
        digits.append(_BASE62[digit])
    return "".join(digits)


def _thinking_chunk(item: Reasoning) -> list[dict[str, Any]]:
    """A Mistral ``thinking`` chunk holding the item's reasoning text (its summary when it has
    none); no chunk when there is no text at all."""
    parts = item.content if isinstance(item.content, list) and item.content else item.summary
    texts = [{"type": "text", "text": part.text} for part in parts if part.text]
    return [{"type": "thinking", "thinking": texts}] if texts else []


def _message(item: Message, index: int, quirks: Quirks) -> dict[str, Any]:
    role = item.role
    if role == "developer" and not quirks.developer_role:
        role = "system"
    content = item.content
    if isinstance(content, str):
        return {"role": role, "content": content}
    param = f"input[{index}].content"
    if role == "assistant":
        return {"role": role, "content": "".join(part_texts(content, param, "assistant messages", _REFUSE,
                                                            refusals=True))}
    if role in ("system", "developer"):
        return {"role": role, "content": _text_parts(content, param, "system and developer messages")}
    return {"role": role, "content": [_user_part(part, f"{param}[{n}]") for n, part in enumerate(content)]}


def _text_parts(parts: list[Any], param: str, where: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text} for text in part_texts(parts, param, where, _REFUSE)]


def _user_part(part: Any, param: str) -> dict[str, Any]:
    if isinstance(part, TEXT_PARTS):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if not part.image_url:
            raise UnsupportedFeature("Chat Completions takes images by URL or data: URL, not by file_id",
                                     param=param)
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}}
    if isinstance(part, InputFile):
        file: dict[str, Any] = {}
        if part.file_data:
            file["file_data"] = part.file_data
            if part.filename:
                file["filename"] = part.filename
        elif isinstance(part.file_id, str):
            file["file_id"] = part.file_id
        else:
            raise UnsupportedFeature("Chat Completions takes files as file_data or file_id, not file_url",
                                     param=param)
        return {"type": "file", "file": file}
    raise _REFUSE.part(part, "user messages", param)


def _tool_output(output: str | list[Any], index: int) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    return _text_parts(output, f"input[{index}].output", "tool outputs")


def _tools(tools: list[Tool], choice: ToolChoice | None, quirks: Quirks, body: dict[str, Any]) -> None:
    """``tools`` and ``tool_choice``; an ``allowed_tools`` choice becomes the allowed subset with
    the choice's mode on hosts without Chat's own ``allowed_tools``."""
    offered = list(enumerate(tools))
    if isinstance(choice, AllowedTools) and quirks.allowed_tools == "subset":
        allowed = {tool.name for tool in choice.tools}
        offered = [(index, tool) for index, tool in offered if isinstance(tool, FunctionTool) and tool.name in allowed]
        choice = choice.mode
    if offered:
        body["tools"] = [_tool(tool, index) for index, tool in offered]
    if choice is not None:
        body["tool_choice"] = _tool_choice(choice, quirks)


def _tool(tool: Tool, index: int) -> dict[str, Any]:
    if not isinstance(tool, FunctionTool):
        raise _REFUSE.tool(tool, index)
    return chat_function(tool, ("description", "parameters", "strict"))


def _tool_choice(choice: ToolChoice, quirks: Quirks) -> Any:
    if choice == "required":
        return quirks.tool_choice_required
    if isinstance(choice, str):
        return choice
    if isinstance(choice, SpecificFunction):
        return {"type": "function", "function": {"name": choice.name}}
    if isinstance(choice, AllowedTools):
        return {"type": "allowed_tools", "allowed_tools": {
            "mode": choice.mode,
            "tools": [{"type": "function", "function": {"name": tool.name}} for tool in choice.tools],
        }}
    raise _REFUSE.tool_choice(choice)


def _parameters(params: CreateResponseBody, quirks: Quirks, body: dict[str, Any]) -> None:
    """Sampling, limits and output options; only what the caller set is sent."""
    text = params.text
    if text is not UNSET and text is not None:
        fmt = text.format
        if isinstance(fmt, TextFormatJsonSchema):
            schema = {"name": fmt.name, **set_fields(fmt, ("schema", "strict", "description"))}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif isinstance(fmt, TextFormatJsonObject):
            body["response_format"] = {"type": "json_object"}
        put(body, "verbosity", text.verbosity)
    effort = reasoning_effort(params)
    if quirks.reasoning_effort and effort is not None:
        put(body, "reasoning_effort", quirks.reasoning_effort_map.get(effort, effort))
    put(body, quirks.max_tokens_field, params.max_output_tokens)
    if quirks.sampling_params:
        put(body, "temperature", params.temperature)
        put(body, "top_p", params.top_p)
    put(body, "presence_penalty", params.presence_penalty)
    put(body, "frequency_penalty", params.frequency_penalty)
    put(body, "parallel_tool_calls", params.parallel_tool_calls)
    if params.top_logprobs is not UNSET and params.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = params.top_logprobs
    put(body, "safety_identifier", params.safety_identifier)
    put(body, "prompt_cache_key", params.prompt_cache_key)
    if params.service_tier != "auto":
        put(body, "service_tier", params.service_tier)


# -- whole replies -----------------------------------------------------------------------------
def _reply_deltas(reply: Mapping[str, Any]) -> list[Delta]:
    """Deltas for a non-streamed ``chat.completion``; only choice 0 is read (``n`` is never sent)."""
    out: list[Delta] = []
    info = reply_info(reply)
    if info is not None:
        out.append(info)
    choices = reply.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else {}
    message = choice.get("message")
    if isinstance(message, Mapping):
        parts = content_parts(message.get("content"))
        reasoning = reasoning_text(message) + "".join(text for kind, text in parts if kind == "reasoning")
        if reasoning:
            out.append(ReasoningDelta(key="reasoning", text=reasoning))
        text = "".join(text for kind, text in parts if kind == "message")
        if text:
            out.append(TextDelta(key="message", text=text))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            out.append(RefusalDelta(key="message", text=refusal))
        for position, tool_call in enumerate(message.get("tool_calls") or ()):
            if not isinstance(tool_call, Mapping):
                continue
            start, function = tool_call_start(f"call{position}", tool_call)
            out.append(start)
            out.append(ToolCallArguments(key=start.key, text=arguments_text(function.get("arguments")) or "{}"))
    usage = chunk_usage(reply)
    if usage is not None:
        out.append(UsageDelta(usage=usage))
    out.append(Finish(reason=finish_reason(choice.get("finish_reason"))))
    return out
