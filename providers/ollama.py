"""The Ollama native dialect: ``POST {base_url}/api/chat`` (base URL e.g. ``http://127.0.0.1:11434``),
no auth locally (bearer for ollama.com when the catalogue holds a key), JSON or an NDJSON stream.

Ollama streams unless told otherwise, so ``stream`` is always sent. A whole reply has the shape
of a stream's last line, so both go through ``OllamaStreamDecoder`` and give the same deltas.

Request mapping:

* ``instructions``, ``system`` and ``developer`` messages become ``system`` messages. Content is one
  string (text parts joined by newlines); images go in the message's ``images`` list as raw
  base64, taken from ``data:`` URLs.
* An assistant turn (consecutive reasoning, assistant messages and function calls) becomes one
  ``assistant`` message: ``content``, ``thinking`` (the reasoning content, else its summary) and
  ``tool_calls`` with **object** arguments and no ids. Each ``function_call_output`` is a
  ``tool`` message whose ``tool_name`` is looked up from the earlier call with that ``call_id``
  (left out when the conversation does not hold the call).
* Tools nest under ``function`` (``strict`` is dropped: Ollama has none). ``tool_choice``:
  ``auto`` sends the tools, ``none`` sends none, ``allowed_tools`` in ``auto`` mode sends that subset.
* ``text.format``: a JSON schema becomes ``format`` (``json_object`` becomes ``"json"``);
  ``reasoning.effort`` becomes ``think`` (``false`` for ``none``, else ``true``); ``options`` carries
  ``num_predict``, ``temperature``, ``top_p``, ``presence_penalty``, ``frequency_penalty``.
* ``parallel_tool_calls: false`` has no Ollama switch: the adapter keeps the first call of a reply.

Refused with ``UnsupportedFeature`` (400): a forced tool call (``tool_choice`` ``required``, a
named function, ``allowed_tools`` in ``required`` mode: Ollama cannot force one), images by https
URL or ``file_id`` (the gateway does not download images), files, video, images outside user
messages, ``top_logprobs``, tools and items outside the core, compaction items. Left out because
Ollama has no equivalent: ``metadata``, ``store``, ``service_tier``, ``safety_identifier``,
``prompt_cache_key``, ``truncation``, ``text.verbosity``, ``reasoning.summary``.

Reply mapping: ``message.thinking`` -> reasoning content, ``message.content`` -> message text,
``message.tool_calls`` -> function calls (whole in one line; Ollama's ``id`` when it sends one,
else a minted one; arguments re-serialised). ``done_reason`` ``length`` is an incomplete reply,
anything else a completed one (``stop`` also ends tool calls). Usage: ``prompt_eval_count``
(absent when the prompt came from cache: 0) and ``eval_count``. Errors: the HTTP status with
``{"error": "..."}``, or an ``{"error"}`` line in a stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from providers.base import PreparedCall, SessionProvider
from providers.common import (
    TEXT_PARTS,
    AssistantTurn,
    Refusals,
    assistant_turns,
    chat_function,
    count,
    json_object,
    output_format,
    part_texts,
    put,
    reasoning_effort,
    token_usage,
    tool_call_start,
)
from providers.http import (
    ErrorMapper,
    auth_headers,
    decode_json,
    iter_ndjson,
    join_url,
    parse_retry_after,
    read_body,
    read_error,
    send,
)
from proxy.errors import GatewayError, UnsupportedFeature, UpstreamError, error_for_upstream_status
from proxy.schema.content import InputImage
from proxy.schema.deltas import (
    Delta,
    Finish,
    FinishReason,
    ReasoningDelta,
    ResponseInfo,
    TextDelta,
    ToolCallArguments,
    UsageDelta,
)
from proxy.schema.items import FunctionCall, Item, Message, OpaqueItem
from proxy.schema.request import (
    CreateResponseBody,
    SpecificFunction,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    Tool,
    ToolChoice,
)
from proxy.schema.response import Usage
from proxy.schema.upstream import UpstreamRequest

_PATH = "/api/chat"
log = logging.getLogger(__name__)
_REFUSE = Refusals("Ollama")
_TOOL_FIELDS = ("description", "parameters")
_BASE64_MARK = ";base64,"
_json_encode = msgspec.json.Encoder().encode


class OllamaProvider(SessionProvider):
    """``Provider`` for the ``ollama`` dialect."""

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        body: dict[str, Any] = {"model": deployment.model,
                                "messages": _messages(request.items, request.instructions)}
        tools = _tools(request.tools, request.tool_choice)
        if tools:
            body["tools"] = tools
        _parameters(request.body, body)
        body["stream"] = request.stream
        return PreparedCall(url=join_url(deployment.base_url, _PATH, deployment.query),
                            headers=auth_headers(deployment), body=body)

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
        call = self.prepare(request)
        deployment = request.deployment
        provider = deployment.provider
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        decoder = OllamaStreamDecoder(provider, map_error, single_call=request.body.parallel_tool_calls is False)
        response = await send(self._session, call, deployment, map_error)
        if request.stream:
            lines = iter_ndjson(response, provider)
            try:
                async for line in lines:
                    for delta in decoder.feed(line):
                        yield delta
            finally:
                await lines.aclose()  # release the upstream connection now, not at garbage collection
        else:
            for delta in decoder.feed(await read_body(response, provider)):
                yield delta
        for delta in decoder.close():
            yield delta


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The adapter's one error mapper: ``{"error": "..."}`` carries only a message, so the status
    decides (404: unknown model). Only the (shortened, redacted) message travels on."""
    message, _, _ = read_error(log, status, body, secret)
    return error_for_upstream_status(status, message, retry_after=parse_retry_after(headers))


# -- request translation -----------------------------------------------------------------------
def _messages(items: list[Item], instructions: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    names: dict[str, str] = {}  # call_id -> function name, for the tool results that follow
    for entry in assistant_turns(items, _REFUSE):
        if isinstance(entry, AssistantTurn):
            names.update((call.call_id, call.name) for _, call in entry.calls)
            message = _assistant_message(entry)
            if message is not None:
                messages.append(message)
            continue
        index, item = entry
        if isinstance(item, Message):
            messages.append(_message(item, index))
        else:
            result = {"role": "tool", "content": _tool_output(item.output, index)}
            if item.call_id in names:
                result["tool_name"] = names[item.call_id]
            messages.append(result)
    return messages


def _assistant_message(turn: AssistantTurn) -> dict[str, Any] | None:
    """One assistant turn: its texts, thinking and calls (arguments as objects, no ids); nothing
    for reasoning alone (Ollama needs no thinking back)."""
    if not turn.texts and not turn.calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(turn.texts)}
    if turn.thinking:
        message["thinking"] = "\n\n".join(turn.thinking)
    if turn.calls:
        message["tool_calls"] = [{"function": {"name": call.name, "arguments": _arguments(call, index)}}
                                 for index, call in turn.calls]
    return message


def _arguments(item: FunctionCall, index: int) -> dict[str, Any]:
    """Ollama takes arguments as a JSON object, not a string."""
    return json_object(item.arguments or "{}", "function_call arguments must be a JSON object for this model's "
                       "provider (Ollama)", f"input[{index}].arguments")


def _message(item: Message, index: int) -> dict[str, Any]:
    role = "system" if item.role in ("system", "developer") else "user"
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    texts: list[str] = []
    images: list[str] = []
    for n, part in enumerate(item.content):
        param = f"input[{index}].content[{n}]"
        if isinstance(part, TEXT_PARTS):
            texts.append(part.text)
        elif isinstance(part, InputImage) and role == "user":
            images.append(_image(part, param))
        else:
            raise _REFUSE.part(part, f"{role} messages", param)
    message: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
    if images:
        message["images"] = images
    return message


def _image(part: InputImage, param: str) -> str:
    """The raw base64 of a ``data:`` URL image."""
    url = part.image_url or ""
    head, mark, data = url.partition(_BASE64_MARK)
    if not (head.startswith("data:") and mark and data):
        raise UnsupportedFeature("Ollama takes images as base64 data: URLs; the gateway does not download image "
                                 "URLs or resolve file_id", param=param)
    return data


def _tool_output(output: str | list[Any], index: int) -> str:
    if isinstance(output, str):
        return output
    return "\n".join(part_texts(output, f"input[{index}].output", "tool outputs", _REFUSE))


def _tools(tools: list[Tool], choice: ToolChoice | None) -> list[dict[str, Any]]:
    """Ollama tools after ``tool_choice``: Ollama always lets the model choose, so a choice that
    forces a call is refused and one that rules tools out sends none."""
    functions = _REFUSE.functions(tools)
    if choice is None or choice == "auto":
        return [chat_function(tool, _TOOL_FIELDS) for tool in functions]
    if choice == "none":
        return []
    if isinstance(choice, OpaqueItem):
        raise _REFUSE.tool_choice(choice)
    if choice == "required" or isinstance(choice, SpecificFunction) or choice.mode == "required":
        raise UnsupportedFeature("Ollama cannot force a tool call (tool_choice required or a named function)",
                                 param="tool_choice")
    if choice.mode == "none":
        return []
    names = {tool.name for tool in choice.tools}  # proxy.decoding checked they exist
    return [chat_function(tool, _TOOL_FIELDS) for tool in functions if tool.name in names]


def _parameters(params: CreateResponseBody, body: dict[str, Any]) -> None:
    """Output format, thinking and ``options``; only what the caller set is sent."""
    if params.top_logprobs not in (UNSET, None, 0):
        raise UnsupportedFeature("Ollama does not return top log probabilities through the gateway",
                                 param="top_logprobs")
    fmt = output_format(params)
    if isinstance(fmt, TextFormatJsonSchema):
        body["format"] = fmt.schema if isinstance(fmt.schema, dict) else "json"
    elif isinstance(fmt, TextFormatJsonObject):
        body["format"] = "json"
    effort = reasoning_effort(params)
    if effort is not None:
        body["think"] = effort != "none"
    options: dict[str, Any] = {}
    for name, value in (("num_predict", params.max_output_tokens), ("temperature", params.temperature),
                        ("top_p", params.top_p), ("presence_penalty", params.presence_penalty),
                        ("frequency_penalty", params.frequency_penalty)):
        put(options, name, value)
    if options:
        body["options"] = options


# -- replies -----------------------------------------------------------------------------------
class OllamaStreamDecoder:
    """Turns ``/api/chat`` objects (NDJSON lines, or a whole reply) into deltas. Item keys are
    minted per segment: a new item starts whenever the kind of output changes."""

    def __init__(self, provider: str, map_error: ErrorMapper, single_call: bool = False) -> None:
        self._provider = provider
        self._map_error = map_error
        self._single_call = single_call
        self._segment = 0
        self._kind: str | None = None
        self._model: str | None = None
        self._calls = 0
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None

    def feed(self, line: bytes) -> list[Delta]:
        chunk = decode_json(line, self._provider)
        if not isinstance(chunk, Mapping):
            raise UpstreamError(f"{self._provider} sent an unexpected stream line")
        if chunk.get("error"):
            raise self._map_error(500, {}, line)
        out: list[Delta] = []
        model = chunk.get("model")
        if isinstance(model, str) and model != self._model:
            self._model = model
            out.append(ResponseInfo(model=model))
        message = chunk.get("message")
        if isinstance(message, Mapping):
            thinking, content = message.get("thinking"), message.get("content")
            if isinstance(thinking, str) and thinking:
                out.append(ReasoningDelta(key=self._key("reasoning"), text=thinking))
            if isinstance(content, str) and content:
                out.append(TextDelta(key=self._key("message"), text=content))
            for tool_call in message.get("tool_calls") or ():
                if isinstance(tool_call, Mapping) and not (self._single_call and self._calls):
                    out += self._tool_call(tool_call)
        if chunk.get("done") is True:
            self._usage = token_usage(count(chunk.get("prompt_eval_count")), count(chunk.get("eval_count")))
            length = chunk.get("done_reason") == "length"
            self._finish = "max_output_tokens" if length else "tool_calls" if self._calls else "stop"
        return out

    def close(self) -> list[Delta]:
        """Deltas that end the turn; raises when the reply stopped before its ``done`` line."""
        if self._finish is None:
            raise UpstreamError(f"{self._provider} stream ended early")
        out: list[Delta] = [UsageDelta(usage=self._usage)] if self._usage is not None else []
        out.append(Finish(reason=self._finish))
        return out

    def _key(self, kind: str) -> str:
        if self._kind != kind:
            self._segment += 1
            self._kind = kind
        return f"{kind}{self._segment}"

    def _tool_call(self, tool_call: Mapping[str, Any]) -> list[Delta]:
        start, function = tool_call_start(f"call{self._segment + 1}", tool_call, self._provider)
        self._calls += 1
        self._segment += 1
        self._kind = "call"
        arguments = function.get("arguments")
        text = _json_encode(arguments if isinstance(arguments, Mapping) else {}).decode()  # always an object
        return [start, ToolCallArguments(key=start.key, text=text)]
