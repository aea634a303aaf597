"""The Bedrock Runtime Converse dialect: ``POST {base_url}/model/{modelId}/converse`` and, when
streaming, ``/converse-stream`` (binary AWS eventstream, decoded by ``providers.bedrock_stream``).

Authentication, by what the deployment carries:

* ``credentials`` ``access_key_id`` + ``secret_access_key`` (+ ``session_token``): AWS SigV4 by
  botocore's signer, service ``bedrock``, region ``deployment.region`` (or the one in a
  ``bedrock-runtime.<region>.amazonaws.com`` base URL). The signature covers the URL as aiohttp
  puts it on the wire (yarl turns ``%3A`` back into ``:``, keeps ``%2F``) and the msgspec encoding
  of the body, the bytes ``providers.http.send`` sends;
* else ``api_key`` (a Bedrock API key) as ``Authorization: Bearer`` (``providers.http.auth_headers``);
* else nothing (the simulator).

Deployment ``options`` this adapter reads: ``latency`` (``standard``/``optimized``, sent as
``performanceConfig``) and ``model_family: anthropic`` for model ids that do not name the family
(ARNs of application inference profiles), so ``reasoning.effort`` becomes Claude's thinking budget.

Translation rules worth knowing:

* instructions and system/developer messages go to ``system``; messages strictly alternate
  (consecutive items of one role are merged; tool results lead their user message);
* ``toolConfig`` is sent whenever the history holds tool calls, because Bedrock rejects tool
  blocks without it; Converse has no ``none`` tool choice, so ``tool_choice: none`` drops
  ``toolConfig`` when the history allows and otherwise keeps the tools with no ``toolChoice``
  (the model may then still call one);
* ``function_call_output`` strings are ``text`` blocks, never promoted to ``json`` blocks (Bedrock
  rejects ``json`` values that are not objects, and some objects);
* images and documents must be ``data:`` URLs: the gateway does not fetch URLs on a caller's behalf;
* ``reasoning.effort`` becomes Claude's ``thinking.budget_tokens`` (``_THINKING_BUDGET``), kept
  below ``max_output_tokens``; without ``max_output_tokens`` Bedrock's default ``maxTokens``
  applies, which the larger budgets may exceed (Bedrock then answers 400). Other model families
  have no common switch: their deployments set ``quirks.reasoning_effort: false`` to drop it;
* reasoning items go back only with the state this adapter emitted (see ``bedrock_stream``);
  reasoning items without it are left out, as Bedrock would reject unsigned thinking.

What Converse cannot carry is refused with ``UnsupportedFeature`` naming the field: JSON-object
output, presence/frequency penalties, logprobs, URL and file-id media, other tool types.
``parallel_tool_calls``, ``metadata``, ``text.verbosity`` and ``reasoning.summary`` have no
Converse equivalent and are not sent.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import msgspec
import yarl
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from msgspec import UNSET

from providers.base import PreparedCall, SessionProvider
from providers.bedrock_stream import (
    arguments_text,
    decode_stream,
    finish_reason,
    reasoning_state,
    tier_info,
    usage_from,
)
from providers.common import TEXT_PARTS, Refusals, call_arguments, output_format, part_texts, reasoning_effort
from providers.http import auth_headers, join_url, parse_retry_after, read_json, safe_message, send
from providers.media import data_url
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    RateLimited,
    ServerError,
    UnsupportedFeature,
    UpstreamError,
    UpstreamTimeout,
    error_for_upstream_status,
)
from proxy.schema.content import InputFile, InputImage, InputText
from proxy.schema.deltas import (
    Delta,
    Finish,
    ReasoningDelta,
    ReasoningState,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    UsageDelta,
)
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message, Reasoning
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

log = logging.getLogger(__name__)
_json_encode = msgspec.json.Encoder().encode
_REFUSE = Refusals("Bedrock Converse")
_SERVICE = "bedrock"
_REGION_IN_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_DOCUMENT_NAME_BAD = re.compile(r"[^A-Za-z0-9\s()\[\]-]+")
_LATENCIES = frozenset({"standard", "optimized"})
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_DOCUMENT_FORMATS = {
    "application/pdf": "pdf", "text/csv": "csv", "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html", "text/plain": "txt", "text/markdown": "md",
}
_THINKING_BUDGET = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 16384, "xhigh": 32768}
"""``reasoning.effort`` -> Claude ``thinking.budget_tokens`` (1024 is Anthropic's minimum)."""
_MIN_THINKING = 1024

# Error type (lower case, as the header or an exception frame names it) -> the HTTP status
# Bedrock documents for it; it decides the mapping when the status alone would mislead.
_ERROR_STATUS = {
    "validationexception": 400,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 403,
    "invalidsignatureexception": 403,
    "expiredtokenexception": 403,
    "incompletesignatureexception": 403,
    "missingauthenticationtokenexception": 403,
    "resourcenotfoundexception": 404,
    "throttlingexception": 429,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
    "modelnotreadyexception": 503,
}


class BedrockProvider(SessionProvider):
    """``Provider`` for the ``bedrock`` dialect (Converse / ConverseStream)."""

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        items = request.items
        if request.tool_choice == "none":
            # Converse has no "none" tool choice and needs toolConfig beside tool blocks, so a
            # tool-free turn gets its tool history as text instead.
            items = [_tool_history_as_text(item) for item in items]
        messages, has_tool_blocks = _messages(items)
        body: dict[str, Any] = {"messages": messages}
        system = _system(request.instructions, request.items)
        if system:
            body["system"] = system
        tool_config = _tool_config(request.tools, request.tool_choice, has_tool_blocks)
        if tool_config is not None:
            body["toolConfig"] = tool_config
        _parameters(request.body, deployment, body)
        operation = "converse-stream" if request.stream else "converse"
        url = join_url(deployment.base_url, f"/model/{quote(deployment.model, safe='')}/{operation}",
                       deployment.query)
        url = str(yarl.URL(url))  # the form aiohttp sends, so the signature covers the same path
        return PreparedCall(url=url, headers=_signed(deployment, url, auth_headers(deployment), body), body=body)

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
        call = self.prepare(request)
        deployment = request.deployment
        provider = deployment.provider
        response = await send(self._session, call, deployment, _map_error)
        if request.stream:
            async for delta in decode_stream(response, provider, _map_error):
                yield delta
            return
        _, reply = await read_json(response, provider)
        for delta in _reply_deltas(reply, provider):
            yield delta


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """The adapter's one error mapper, for HTTP error replies and for exception frames inside a
    200 stream (the caller passes the frame's ``:exception-type`` as ``x-amzn-errortype``).

    The error type (header ``x-amzn-errortype``, else the body's ``__type``) decides; the status
    is the fallback (recordings and the simulator carry only ``{"message"}``). Only the upstream's
    message travels on, shortened; the raw body goes to the debug log."""
    log.debug("upstream error %s %r: %r", status, headers.get("x-amzn-errortype"), body[:4096])
    try:
        data = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    data = data if isinstance(data, dict) else {}
    kind = headers.get("x-amzn-errortype") or str(data.get("__type") or "")
    kind = kind.split(":", 1)[0].rsplit("#", 1)[-1].lower()
    message = safe_message(str(data.get("message") or data.get("Message") or f"Bedrock error {kind or status}"))
    status = _ERROR_STATUS.get(kind, status)
    if kind == "modeltimeoutexception":
        return UpstreamTimeout(message)
    if kind in ("modelerrorexception", "modelstreamerrorexception"):
        return UpstreamError(message, code="model_error")
    if kind == "servicequotaexceededexception":
        return RateLimited(message, code="insufficient_quota", retryable=False)
    if status == 400 and "too long" in message.lower():
        return ContextTooLong(message)
    code = "model_not_found" if status == 400 and "model identifier is invalid" in message else None
    return error_for_upstream_status(status, message, code=code, retry_after=parse_retry_after(headers))


# -- authentication ----------------------------------------------------------------------------
def _signed(deployment: Deployment, url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, str]:
    """``headers`` with a SigV4 signature when the deployment has AWS credentials."""
    credentials = deployment.credentials
    access_key, secret_key = credentials.get("access_key_id"), credentials.get("secret_access_key")
    if not access_key or not secret_key:
        return headers
    region = deployment.region
    if not region:
        found = _REGION_IN_HOST.match(urlsplit(url).hostname or "")
        if found is None:
            raise ServerError(f"deployment {deployment.name} signs with AWS credentials but has no region")
        region = found.group(1)
    aws = AWSRequest(method="POST", url=url, data=_json_encode(body), headers=headers)
    SigV4Auth(Credentials(access_key, secret_key, credentials.get("session_token")), _SERVICE, region).add_auth(aws)
    return dict(aws.headers.items())


# -- request translation -----------------------------------------------------------------------
def _system(instructions: str | None, items: list[Item]) -> list[dict[str, Any]]:
    texts = [instructions] if instructions else []
    for index, item in enumerate(items):
        if isinstance(item, Message) and item.role in ("system", "developer"):
            content = item.content
            if isinstance(content, str):
                texts.append(content)
            else:
                texts += part_texts(content, f"input[{index}].content", "system and developer messages", _REFUSE)
    return [{"text": text} for text in texts if text.strip()]


class _Conversation:
    """Messages with strict user/assistant alternation: blocks of one role in a row share a
    message, and in a user message tool results come first."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.tool_blocks = False

    def add(self, role: str, *blocks: dict[str, Any]) -> None:
        if not blocks:
            return
        if not self.messages or self.messages[-1]["role"] != role:
            self.messages.append({"role": role, "content": []})
        content = self.messages[-1]["content"]
        for block in blocks:
            if "toolResult" in block:
                content.insert(sum(1 for b in content if "toolResult" in b), block)
            else:
                content.append(block)


def _messages(items: list[Item]) -> tuple[list[dict[str, Any]], bool]:
    """The ``messages`` array, and whether it holds tool blocks (which need ``toolConfig``)."""
    conversation = _Conversation()
    for index, item in enumerate(items):
        if isinstance(item, Message):
            if item.role == "user":
                conversation.add("user", *_user_blocks(item.content, f"input[{index}].content"))
            elif item.role == "assistant":
                conversation.add("assistant", *_assistant_blocks(item.content, f"input[{index}].content"))
        elif isinstance(item, FunctionCall):
            conversation.tool_blocks = True
            conversation.add("assistant", {"toolUse": {
                "toolUseId": _tool_use_id(item.call_id), "name": item.name,
                "input": call_arguments(item.arguments, f"input[{index}].arguments", "for Bedrock Converse")}})
        elif isinstance(item, FunctionCallOutput):
            conversation.tool_blocks = True
            conversation.add("user", {"toolResult": {"toolUseId": _tool_use_id(item.call_id),
                                                     "content": _tool_output(item.output, index),
                                                     "status": "success"}})
        elif isinstance(item, Reasoning):
            state = _reasoning_block(item)
            if state is not None:
                conversation.add("assistant", {"reasoningContent": state})
        else:
            raise _REFUSE.item(item, index)
    messages = conversation.messages
    if not messages or messages[0]["role"] != "user":
        raise InvalidRequest("Bedrock Converse needs the conversation to start with a user message", param="input")
    return messages, conversation.tool_blocks


def _user_blocks(content: str | list[Any], param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for n, part in enumerate(content):
        if isinstance(part, TEXT_PARTS):
            if part.text.strip():
                blocks.append({"text": part.text})
        else:
            blocks.append(_media_block(part, f"{param}[{n}]"))
    return blocks


def _assistant_blocks(content: str | list[Any], param: str) -> list[dict[str, Any]]:
    texts = [content] if isinstance(content, str) else part_texts(content, param, "assistant messages", _REFUSE,
                                                                   refusals=True)
    return [{"text": text} for text in texts if text.strip()]


def _media_block(part: Any, param: str) -> dict[str, Any]:
    """An image or document block from an ``input_image`` / ``input_file`` with a data: URL."""
    if isinstance(part, InputImage):
        if not part.image_url or not part.image_url.startswith("data:"):
            raise UnsupportedFeature("Bedrock Converse takes images as bytes: send the image as a data: URL "
                                     "(the gateway does not fetch image URLs or file ids)", param=param)
        media_type, data = _data_url(part.image_url, param)
        image_format = _IMAGE_FORMATS.get(media_type)
        if image_format is None:
            raise UnsupportedFeature(f"Bedrock Converse does not take {media_type or 'untyped'} images "
                                     "(png, jpeg, gif, webp)", param=param)
        return {"image": {"format": image_format, "source": {"bytes": data}}}
    if isinstance(part, InputFile):
        if not isinstance(part.file_data, str) or not part.file_data.startswith("data:"):
            raise UnsupportedFeature("Bedrock Converse takes files as bytes: send file_data as a data: URL "
                                     "(the gateway does not fetch file URLs or file ids)", param=param)
        media_type, data = _data_url(part.file_data, param)
        filename = part.filename if isinstance(part.filename, str) else ""
        stem, dot, extension = filename.rpartition(".")
        if not dot:
            stem, extension = filename, ""
        document_format = _DOCUMENT_FORMATS.get(media_type) or (
            extension.lower() if extension.lower() in _DOCUMENT_FORMATS.values() else None)
        if document_format is None:
            raise UnsupportedFeature(f"Bedrock Converse does not take {media_type or 'untyped'} files "
                                     "(pdf, csv, doc, docx, xls, xlsx, html, txt, md)", param=param)
        return {"document": {"format": document_format, "name": _document_name(stem), "source": {"bytes": data}}}
    raise _REFUSE.part(part, "user messages", param)


def _data_url(url: str, param: str) -> tuple[str, str]:
    """``(media type, base64 payload)`` of a data: URL; a percent-encoded payload is re-encoded."""
    parts = data_url(url)
    if parts is None:
        raise InvalidRequest("malformed data: URL", param=param)
    media_type, parameters, payload = parts
    if "base64" in parameters:
        return media_type.strip().lower(), payload
    return media_type.strip().lower(), base64.b64encode(unquote_to_bytes(payload)).decode()


def _document_name(stem: str) -> str:
    """Bedrock allows letters, digits, single spaces, hyphens, parentheses and square brackets."""
    name = " ".join(_DOCUMENT_NAME_BAD.sub(" ", stem).split())
    return name[:200] or "document"


def _tool_use_id(call_id: str) -> str:
    """A call id Bedrock accepts (``[a-zA-Z0-9_.:-]{1,64}``); others (from another provider) are
    mapped deterministically, so a call and its output still pair up."""
    if _TOOL_USE_ID.match(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:16]
    return f"{re.sub(r'[^a-zA-Z0-9_.:-]', '_', call_id)[:47]}_{digest}"


def _tool_output(output: str | list[Any], index: int) -> list[dict[str, Any]]:
    if isinstance(output, str):
        return [{"text": output}]
    blocks: list[dict[str, Any]] = []
    for n, part in enumerate(output):
        if isinstance(part, TEXT_PARTS):
            blocks.append({"text": part.text})
        else:
            blocks.append(_media_block(part, f"input[{index}].output[{n}]"))
    return blocks


def _reasoning_block(item: Reasoning) -> dict[str, Any] | None:
    """The ``reasoningContent`` block this adapter emitted as state, or None (see module doc)."""
    state = item.encrypted_content
    if not isinstance(state, str):
        return None
    try:
        block = msgspec.json.decode(state)
    except msgspec.DecodeError:
        return None
    if isinstance(block, dict) and (isinstance(block.get("reasoningText"), dict)
                                    or isinstance(block.get("redactedContent"), str)):
        return block
    return None


def _tool_history_as_text(item: Item) -> Item:
    if isinstance(item, FunctionCall):
        return Message(role="assistant", content=f"[called {item.name} with {item.arguments}]")
    if isinstance(item, FunctionCallOutput):
        output = item.output if isinstance(item.output, str) else " ".join(
            part.text for part in item.output if isinstance(part, InputText))
        return Message(role="user", content=f"[result of that call: {output}]")
    return item


def _tool_config(tools: list[Tool], choice: ToolChoice | None, has_tool_blocks: bool) -> dict[str, Any] | None:
    """``toolConfig``, or None when no tool may be called and the history needs none."""
    if isinstance(choice, AllowedTools):
        allowed = {tool.name for tool in choice.tools}
        tools = [tool for tool in tools if isinstance(tool, FunctionTool) and tool.name in allowed]
        choice = choice.mode
    native: dict[str, Any] | None
    if choice is None or choice == "none":
        native = None
    elif choice == "auto":
        native = {"auto": {}}
    elif choice == "required":
        native = {"any": {}}
    elif isinstance(choice, SpecificFunction):
        native = {"tool": {"name": choice.name}}
    else:
        raise _REFUSE.tool_choice(choice)
    if choice == "none" and not has_tool_blocks:
        return None
    if not tools:
        if has_tool_blocks:
            raise UnsupportedFeature("Bedrock Converse needs the tool definitions whenever the conversation holds "
                                     "tool calls: send the tools", param="tools")
        if native is not None and choice != "auto":
            raise InvalidRequest("tool_choice asks for a tool call but no tools were given", param="tool_choice")
        return None
    config: dict[str, Any] = {"tools": [_tool_spec(tool, index) for index, tool in enumerate(tools)]}
    if native is not None:
        config["toolChoice"] = native
    return config


def _tool_spec(tool: Tool, index: int) -> dict[str, Any]:
    if not isinstance(tool, FunctionTool):
        raise _REFUSE.tool(tool, index)
    parameters = tool.parameters if isinstance(tool.parameters, dict) else {"type": "object", "properties": {}}
    spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": parameters}}
    if isinstance(tool.description, str) and tool.description:
        spec["description"] = tool.description
    if tool.strict is True:
        spec["strict"] = True
    return {"toolSpec": spec}


def _parameters(params: CreateResponseBody, deployment: Deployment, body: dict[str, Any]) -> None:
    """Sampling, limits, output format, reasoning and tiers; only what the caller set is sent."""
    inference: dict[str, Any] = {}
    max_tokens = params.max_output_tokens if isinstance(params.max_output_tokens, int) else None
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    if isinstance(params.temperature, float | int):
        inference["temperature"] = params.temperature
    if isinstance(params.top_p, float | int):
        inference["topP"] = params.top_p
    if inference:
        body["inferenceConfig"] = inference
    for name in ("presence_penalty", "frequency_penalty", "top_logprobs"):
        if getattr(params, name) not in (UNSET, None, 0):
            raise UnsupportedFeature(f"{name} is not supported by this model's provider (Bedrock Converse)",
                                     param=name)
    fmt = output_format(params)
    if isinstance(fmt, TextFormatJsonObject):
        raise UnsupportedFeature("Bedrock Converse has no JSON-object mode; use a json_schema format",
                                 param="text.format")
    if isinstance(fmt, TextFormatJsonSchema):
        schema: dict[str, Any] = {"name": fmt.name,
                                  "schema": _json_encode(fmt.schema if isinstance(fmt.schema, dict) else {}).decode()}
        if isinstance(fmt.description, str) and fmt.description:
            schema["description"] = fmt.description
        body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    thinking = _thinking(params, deployment, max_tokens)
    if thinking is not None:
        body["additionalModelRequestFields"] = {"thinking": thinking}
    if params.service_tier in ("default", "flex", "priority"):
        body["serviceTier"] = {"type": params.service_tier}
    latency = deployment.options.get("latency")
    if latency is not None:
        if latency not in _LATENCIES:
            raise ServerError(f"deployment {deployment.name}: option latency must be standard or optimized")
        body["performanceConfig"] = {"latency": latency}


def _thinking(params: CreateResponseBody, deployment: Deployment, max_tokens: int | None) -> dict[str, Any] | None:
    """Claude's extended thinking for ``reasoning.effort``. Other families have no common switch:
    their deployments set ``quirks.reasoning_effort: false`` to drop the effort."""
    effort = reasoning_effort(params)
    if effort is None or effort == "none" or not deployment.quirks.reasoning_effort:
        return None
    model = deployment.model.lower()
    if "anthropic" not in model and "claude" not in model and deployment.options.get("model_family") != "anthropic":
        raise UnsupportedFeature("reasoning.effort is translated for Anthropic Claude models on Bedrock only; "
                                 "set the deployment's quirks.reasoning_effort to false to drop it",
                                 param="reasoning.effort")
    budget = _THINKING_BUDGET[effort]
    if max_tokens is not None:  # the budget counts against max_output_tokens and must stay below it
        budget = min(budget, max_tokens - 1)
        if budget < _MIN_THINKING:
            raise UnsupportedFeature(f"reasoning on Claude needs max_output_tokens above {_MIN_THINKING}",
                                     param="max_output_tokens")
    return {"type": "enabled", "budget_tokens": budget}


# -- whole replies -----------------------------------------------------------------------------
def _reply_deltas(reply: Mapping[str, Any], provider: str) -> list[Delta]:
    """Deltas for a Converse reply; built whole so a failed reply raises before any delta."""
    output = reply.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    if not isinstance(message, Mapping):
        raise UpstreamError(f"{provider} sent a reply without a message")
    finish = finish_reason(reply.get("stopReason"), provider)
    out: list[Delta] = []
    info = tier_info(reply)
    if info is not None:
        out.append(info)
    for index, block in enumerate(message.get("content") or ()):
        if not isinstance(block, Mapping):
            continue
        text, tool, reasoning = block.get("text"), block.get("toolUse"), block.get("reasoningContent")
        if isinstance(text, str) and text:
            out.append(TextDelta(key=index, text=text))
        elif isinstance(tool, Mapping):
            name, call_id = tool.get("name"), tool.get("toolUseId")
            if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
                raise UpstreamError(f"{provider} returned a tool call without a name or id")
            out.append(ToolCallStart(key=index, call_id=call_id, name=name))
            out.append(ToolCallArguments(key=index, text=arguments_text(tool.get("input"))))
        elif isinstance(reasoning, Mapping):
            out += _reasoning_deltas(index, reasoning)
    usage = usage_from(reply.get("usage"))
    if usage is not None:
        out.append(UsageDelta(usage=usage))
    out.append(Finish(reason=finish))
    return out


def _reasoning_deltas(index: int, block: Mapping[str, Any]) -> list[Delta]:
    out: list[Delta] = []
    reasoning_text = block.get("reasoningText")
    reasoning_text = reasoning_text if isinstance(reasoning_text, Mapping) else {}
    text, signature, redacted = (reasoning_text.get("text"), reasoning_text.get("signature"),
                                 block.get("redactedContent"))
    text = text if isinstance(text, str) else ""
    if text:
        out.append(ReasoningDelta(key=index, text=text))
    state = reasoning_state(text, signature if isinstance(signature, str) else None,
                            redacted if isinstance(redacted, str) else None)
    if state is not None:
        out.append(ReasoningState(key=index, encrypted_content=state))
    return out
