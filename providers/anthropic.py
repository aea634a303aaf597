"""The Anthropic Messages dialect: ``POST {base_url}/messages``.

``prepare`` translates an ``UpstreamRequest`` without I/O; ``run`` sends it and yields deltas from
the whole ``message`` or, when streaming, through ``providers.anthropic_stream``.

Catalogue data (``Deployment``): the key travels as ``x-api-key`` (``auth: x-api-key``); these
``options`` are read:

* ``version``: the ``anthropic-version`` header (default ``2023-06-01``);
* ``beta``: comma-separated ``anthropic-beta`` flags, sent with every request;
* ``max_tokens``: the output limit when the caller sets no ``max_output_tokens`` (Anthropic
  requires one; default 4096);
* ``reasoning``: how ``reasoning.effort`` is sent. ``budget`` (default): ``thinking: {type:
  enabled, budget_tokens}`` with the budget a share of ``max_tokens`` (``_BUDGET_SHARE``: minimal
  0, low 20%, medium 40%, high 60%, xhigh 80%, never under Anthropic's minimum of 1024 and always
  below ``max_tokens``); ``thinking_budget_<effort>`` options set a fixed budget instead.
  ``adaptive`` (Claude 4.6+): ``thinking: {type: adaptive}`` plus ``output_config.effort``.
  ``effort``: ``output_config.effort`` alone. In every mode effort ``none`` sends ``thinking:
  {type: disabled}``.

Input tokens are counted by Anthropic (``prepare_count``/``count_tokens``): ``POST
{base_url}/messages/count_tokens`` with the translated body cut to the fields that endpoint takes
(``_COUNT_FIELDS``: no ``max_tokens``, sampling or metadata) and the same headers.

Decisions where the dialects differ:

* ``instructions`` and every system/developer message, wherever it stands, become the top-level
  ``system`` text blocks; user/assistant turns are merged so roles alternate; a conversation that
  starts with the assistant gets a ``"."`` user turn first, as the API requires.
* ``function_call_output`` items become ``tool_result`` blocks, all of one turn in one user
  message ahead of any user text. Call ids with characters Anthropic refuses are rewritten the
  same way in calls and results (``_tool_id``) so they still pair.
* Reasoning items carry their thinking block as state (see ``providers.anthropic_stream``) and
  are sent back where they stand in the history; reasoning without state (another provider's)
  cannot be replayed to Anthropic and is left out.
* ``allowed_tools``: Anthropic has no allow-list, so only the allowed tools are sent, with
  ``auto``/``any`` by mode (``tool`` when exactly one is required).
* Thinking refuses a forced ``tool_choice`` and changed ``temperature``/``top_p``; those requests
  get a 400 naming the field rather than a silently different behaviour.
* ``text.format`` ``json_schema`` -> ``output_format`` with the ``structured-outputs-2025-11-13``
  beta (its ``name``/``description`` have no place there); ``json_object`` has no Anthropic
  equivalent and is refused.
* ``service_tier``: ``auto``/``priority`` -> ``auto`` (Priority Tier when the organisation has
  it), ``default`` -> ``standard_only``; ``flex`` does not exist there and is left to the default.
  The reply reports the tier used.
* ``safety_identifier`` -> ``metadata.user_id``. ``metadata``, ``store``, ``prompt_cache_key``,
  ``text.verbosity``, ``reasoning.summary`` and image ``detail`` are bookkeeping or hints with no
  Anthropic field and are not sent; penalties, ``top_logprobs`` and ``max_tool_calls`` would
  change the answer and are refused. (``stop_sequences`` stays unused: ``stop`` is not a
  Responses field.)
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import UNSET

from providers.anthropic_stream import AnthropicStreamDecoder, message_deltas, raise_error_payload
from providers.base import PreparedCall, SessionProvider
from providers.common import TEXT_PARTS, Refusals, call_arguments, output_format, part_texts, reasoning_effort
from providers.http import (
    auth_headers,
    counting_call,
    decode_events,
    join_url,
    parse_retry_after,
    read_error,
    read_json,
    read_token_count,
    send,
)
from providers.media import base64_data_url
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    ServerError,
    UnsupportedFeature,
    error_for_upstream_status,
)
from proxy.schema.content import InputFile, InputImage
from proxy.schema.deltas import Delta
from proxy.schema.items import (
    FunctionCall,
    FunctionCallOutput,
    Item,
    Message,
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
from proxy.schema.upstream import Deployment, UpstreamRequest

_PATH = "/messages"
_COUNT_PATH = "/messages/count_tokens"
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"})
_VERSION = "2023-06-01"
_DEFAULT_MAX_TOKENS = "4096"
_STRUCTURED_OUTPUTS_BETA = "structured-outputs-2025-11-13"
_MIN_BUDGET = 1024
_BUDGET_SHARE = {"minimal": 0.0, "low": 0.2, "medium": 0.4, "high": 0.6, "xhigh": 0.8}
_OUTPUT_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
_SERVICE_TIER = {"auto": "auto", "priority": "auto", "default": "standard_only"}
_FORCED_CHOICES = frozenset({"any", "tool"})
_STATE_FIELDS = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}
_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_PLACEHOLDER_USER = "."
_REFUSE = Refusals("Anthropic")
log = logging.getLogger(__name__)


class AnthropicProvider(SessionProvider):
    """``Provider`` for the ``anthropic`` dialect."""

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        options = deployment.options
        betas = [flag.strip() for flag in options.get("beta", "").split(",") if flag.strip()]
        system, messages = _conversation(request.items, request.instructions)
        body: dict[str, Any] = {"model": deployment.model, "messages": messages}
        if system:
            body["system"] = system
        tools, choice = _tools(request.tools, request.tool_choice, request.body.parallel_tool_calls, betas)
        if tools is not None:
            body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        _parameters(request.body, deployment, body, betas)
        if request.stream:
            body["stream"] = True
        headers = auth_headers(deployment)
        headers["anthropic-version"] = options.get("version", _VERSION)
        if betas:
            headers["anthropic-beta"] = ",".join(dict.fromkeys(betas))
        return PreparedCall(url=join_url(deployment.base_url, _PATH, deployment.query), headers=headers, body=body)

    def prepare_count(self, request: UpstreamRequest) -> PreparedCall:
        call = self.prepare(msgspec.structs.replace(request, stream=False))
        return counting_call(call, request.deployment, _COUNT_PATH, _COUNT_FIELDS)

    async def count_tokens(self, call: PreparedCall, deployment: Deployment) -> int:
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        response = await send(self._session, call, deployment, map_error)
        return await read_token_count(response, deployment.provider, "input_tokens")

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
        call = self.prepare(request)
        deployment = request.deployment
        provider = deployment.provider
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        response = await send(self._session, call, deployment, map_error)
        if request.stream:
            async for delta in decode_events(response, provider, AnthropicStreamDecoder(provider, map_error)):
                yield delta
            return
        raw, reply = await read_json(response, provider)
        if reply.get("type") == "error":
            raise_error_payload(reply, raw, map_error)
        for delta in message_deltas(reply):
            yield delta


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The adapter's one error mapper, for HTTP errors and for ``error`` events inside a 200
    stream (whose status ``anthropic_stream`` infers from the error type, 529 for
    ``overloaded_error``). Anthropic's error ``type`` only restates the status class, so the
    gateway's own codes apply; only the upstream's message travels on (shortened, with the
    deployment's key removed should it be echoed)."""
    message, kind, _ = read_error(log, status, body, secret)
    if kind == "invalid_request_error" and message.startswith("prompt is too long"):
        return ContextTooLong(message)
    return error_for_upstream_status(status, message, retry_after=parse_retry_after(headers))


# -- the conversation --------------------------------------------------------------------------
@dataclass(slots=True)
class _Turn:
    role: str
    content: str | list[dict[str, Any]]
    results: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, content: str | list[dict[str, Any]]) -> None:
        self.content = _blocks(self.content) + _blocks(content)


class _Turns:
    """Messages under construction: consecutive same-role content merges into one message, and
    tool results collect ahead of the user content of theirs."""

    def __init__(self) -> None:
        self.turns: list[_Turn] = []

    def add(self, role: str, content: str | list[dict[str, Any]]) -> None:
        if not content:
            return
        last = self.turns[-1] if self.turns else None
        if last is not None and last.role == role:
            last.extend(content)
        else:
            self.turns.append(_Turn(role, content))

    def add_result(self, block: dict[str, Any]) -> None:
        last = self.turns[-1] if self.turns else None
        if last is None or last.role != "user":
            last = _Turn("user", [])
            self.turns.append(last)
        last.results.append(block)

    def messages(self) -> list[dict[str, Any]]:
        out = [{"role": turn.role, "content": turn.results + _blocks(turn.content) if turn.results
                else turn.content} for turn in self.turns]
        if out and out[0]["role"] == "assistant":
            out.insert(0, {"role": "user", "content": _PLACEHOLDER_USER})
        return out


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


def _conversation(items: list[Item], instructions: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system blocks, messages)`` for the conversation."""
    system: list[dict[str, Any]] = []
    if instructions:
        system.append({"type": "text", "text": instructions})
    turns = _Turns()
    for index, item in enumerate(items):
        if isinstance(item, Message):
            param = f"input[{index}].content"
            if item.role in ("system", "developer"):
                system += _blocks(_text_content(item.content, param, "system and developer messages"))
            elif item.role == "assistant":
                turns.add("assistant", _text_content(item.content, param, "assistant messages", refusals=True))
            else:
                turns.add("user", _user_content(item.content, param))
        elif isinstance(item, FunctionCall):
            turns.add("assistant", [{"type": "tool_use", "id": _tool_id(item.call_id), "name": item.name,
                                     "input": call_arguments(item.arguments, f"input[{index}].arguments",
                                                             "to be sent to Anthropic")}])
        elif isinstance(item, FunctionCallOutput):
            turns.add_result({"type": "tool_result", "tool_use_id": _tool_id(item.call_id),
                              "content": _user_content(item.output, f"input[{index}].output", "tool outputs")})
        elif isinstance(item, Reasoning):
            block = _reasoning_block(item, index)
            if block is not None:
                turns.add("assistant", [block])
        else:  # compaction, an unresolved item_reference, a type outside the core
            raise _REFUSE.item(item, index)
    return system, turns.messages()


def _text_content(content: str | list[Any], param: str, where: str,
                  refusals: bool = False) -> str | list[dict[str, Any]]:
    """Text-only content (an assistant's refusals read as its text); empty text is left out, as
    Anthropic refuses empty text blocks."""
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": text} for text in part_texts(content, param, where, _REFUSE, refusals=refusals)
            if text]


def _user_content(content: str | list[Any], param: str, where: str = "user messages") -> str | list[dict[str, Any]]:
    """Text, image and PDF content; empty text parts are left out, as Anthropic refuses them."""
    if isinstance(content, str):
        return content
    return [_user_block(part, f"{param}[{n}]", where) for n, part in enumerate(content)
            if not (isinstance(part, TEXT_PARTS) and not part.text)]


def _user_block(part: Any, param: str, where: str) -> dict[str, Any]:
    if isinstance(part, TEXT_PARTS):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        return {"type": "image", "source": _image_source(part, param)}
    if isinstance(part, InputFile):
        return {"type": "document", "source": _document_source(part, param)}
    raise _REFUSE.part(part, where, param)


def _image_source(part: InputImage, param: str) -> dict[str, Any]:
    url = part.image_url or ""
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    inline = base64_data_url(url)
    if inline is None:
        raise UnsupportedFeature("Anthropic takes images as http(s) or base64 data: URLs (not file_id)",
                                 param=param)
    return {"type": "base64", "media_type": inline[0], "data": inline[1]}


def _document_source(part: InputFile, param: str) -> dict[str, Any]:
    if isinstance(part.file_data, str) and part.file_data:
        inline = base64_data_url(part.file_data)
        if inline is None or inline[0] != "application/pdf":
            raise UnsupportedFeature("Anthropic takes files as PDF, sent as a base64 data: URL", param=param)
        return {"type": "base64", "media_type": inline[0], "data": inline[1]}
    if isinstance(part.file_url, str) and part.file_url:
        return {"type": "url", "url": part.file_url}
    raise UnsupportedFeature("Anthropic takes files as file_data or file_url, not by file_id", param=param)


def _tool_id(call_id: str) -> str:
    """Anthropic accepts tool ids of ``[a-zA-Z0-9_-]`` only; ids minted elsewhere are rewritten,
    identically in the call and its result."""
    return _BAD_ID_CHARS.sub("_", call_id)


def _reasoning_block(item: Reasoning, index: int) -> dict[str, Any] | None:
    """The thinking block a reasoning item carries as state, exactly as Anthropic sent it."""
    state = item.encrypted_content
    if not isinstance(state, str):
        return None
    try:
        block = msgspec.json.decode(state)
    except msgspec.DecodeError:
        block = None
    fields = _STATE_FIELDS.get(str(block.get("type"))) if isinstance(block, dict) else None
    if fields is None or not all(isinstance(block.get(name), str) for name in fields):
        raise InvalidRequest("the reasoning item does not hold Anthropic thinking state",
                             param=f"input[{index}].encrypted_content")
    return block


# -- tools -------------------------------------------------------------------------------------
def _tools(tools: list[Tool], choice: ToolChoice | None, parallel: Any,
           betas: list[str]) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """``(tools, tool_choice)`` as Anthropic takes them; ``None`` for what is not sent."""
    native = [_tool(tool, index, betas) for index, tool in enumerate(tools)]
    native_choice: dict[str, Any] | None = None
    if isinstance(choice, AllowedTools):
        allowed = {tool.name for tool in choice.tools}
        native = [tool for tool in native if tool["name"] in allowed]
        if choice.mode != "required":
            native_choice = {"type": choice.mode}
        elif len(native) == 1:
            native_choice = {"type": "tool", "name": native[0]["name"]}
        else:
            native_choice = {"type": "any"}
    elif isinstance(choice, SpecificFunction):
        native_choice = {"type": "tool", "name": choice.name}
    elif isinstance(choice, str):
        native_choice = {"type": {"required": "any"}.get(choice, choice)}
    elif choice is not None:
        raise _REFUSE.tool_choice(choice)
    if not native:
        if native_choice is not None and native_choice["type"] in _FORCED_CHOICES:
            raise InvalidRequest("tool_choice forces a tool call but the request offers no tool", param="tool_choice")
        return None, None
    if parallel is False:
        native_choice = native_choice or {"type": "auto"}
        if native_choice["type"] != "none":  # the flag exists only where a tool may be called
            native_choice["disable_parallel_tool_use"] = True
    return native, native_choice


def _tool(tool: Tool, index: int, betas: list[str]) -> dict[str, Any]:
    if not isinstance(tool, FunctionTool):
        raise _REFUSE.tool(tool, index)
    schema = dict(tool.parameters) if isinstance(tool.parameters, dict) else {}
    # Anthropic requires an object schema at the top; one without a type is taken as one.
    if schema.setdefault("type", "object") != "object":
        raise UnsupportedFeature("Anthropic tool parameters must be an object schema",
                                 param=f"tools[{index}].parameters")
    native: dict[str, Any] = {"name": tool.name, "input_schema": schema}
    if isinstance(tool.description, str):
        native["description"] = tool.description
    if tool.strict is True:
        native["strict"] = True
        betas.append(_STRUCTURED_OUTPUTS_BETA)
    return native


# -- parameters --------------------------------------------------------------------------------
def _parameters(params: CreateResponseBody, deployment: Deployment, body: dict[str, Any], betas: list[str]) -> None:
    """Limits, reasoning, sampling and output options; only what the caller set is sent."""
    for name in ("presence_penalty", "frequency_penalty", "top_logprobs", "max_tool_calls"):
        value = getattr(params, name)
        if value is not UNSET and value is not None and value != 0:
            raise UnsupportedFeature(f"{name} is not supported by this model's provider (Anthropic)", param=name)
    max_tokens = params.max_output_tokens
    if not isinstance(max_tokens, int):
        max_tokens = _int_option(deployment, "max_tokens", _DEFAULT_MAX_TOKENS)
    body["max_tokens"] = max_tokens
    _reasoning(params, deployment, body)
    thinking = body.get("thinking", {}).get("type") in ("enabled", "adaptive")
    choice = body.get("tool_choice")
    if thinking and isinstance(choice, dict) and choice["type"] in _FORCED_CHOICES:
        raise UnsupportedFeature("Anthropic cannot force a tool call while thinking; use tool_choice auto, or "
                                 "reasoning.effort none", param="tool_choice")
    temperature, top_p = params.temperature, params.top_p
    if isinstance(temperature, float | int):
        if temperature > 1:
            raise UnsupportedFeature("Anthropic takes a temperature between 0 and 1", param="temperature")
        if thinking and temperature != 1:
            raise UnsupportedFeature("Anthropic does not allow changing temperature while thinking",
                                     param="temperature")
        body["temperature"] = temperature
    if isinstance(top_p, float | int):
        if thinking and top_p < 0.95:
            raise UnsupportedFeature("Anthropic takes top_p of at least 0.95 while thinking", param="top_p")
        body["top_p"] = top_p
    fmt = output_format(params)
    if isinstance(fmt, TextFormatJsonSchema):
        body["output_format"] = {"type": "json_schema",
                                 "schema": fmt.schema if isinstance(fmt.schema, dict) else {"type": "object"}}
        betas.append(_STRUCTURED_OUTPUTS_BETA)
    elif isinstance(fmt, TextFormatJsonObject):
        raise UnsupportedFeature("Anthropic has no JSON mode; use text.format json_schema", param="text.format")
    if isinstance(params.safety_identifier, str):
        body["metadata"] = {"user_id": params.safety_identifier}
    tier = _SERVICE_TIER.get(params.service_tier) if isinstance(params.service_tier, str) else None
    if tier is not None:
        body["service_tier"] = tier


def _reasoning(params: CreateResponseBody, deployment: Deployment, body: dict[str, Any]) -> None:
    effort = reasoning_effort(params)
    if effort is None:
        return
    if effort == "none":
        body["thinking"] = {"type": "disabled"}
        return
    mode = deployment.options.get("reasoning", "budget")
    if mode in ("adaptive", "effort"):
        if mode == "adaptive":
            body["thinking"] = {"type": "adaptive"}
        body["output_config"] = {"effort": _OUTPUT_EFFORT[effort]}
        return
    if mode != "budget":
        raise ServerError(f"deployment {deployment.name}: option reasoning must be budget, adaptive or effort")
    max_tokens = body["max_tokens"]
    if max_tokens <= _MIN_BUDGET:
        raise UnsupportedFeature(f"Anthropic thinks with at least {_MIN_BUDGET} tokens, so max_output_tokens must "
                                 f"exceed {_MIN_BUDGET} when reasoning is on", param="max_output_tokens")
    budget = max(_MIN_BUDGET, int(_BUDGET_SHARE[effort] * max_tokens))
    if f"thinking_budget_{effort}" in deployment.options:
        budget = _int_option(deployment, f"thinking_budget_{effort}", "")
    body["thinking"] = {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


def _int_option(deployment: Deployment, name: str, default: str) -> int:
    value = deployment.options.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ServerError(f"deployment {deployment.name}: option {name} must be an integer, not {value!r}") from None
