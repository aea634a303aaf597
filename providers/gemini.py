"""The Gemini dialect: Google AI Studio (the Gemini API) and Vertex AI, one request body.

``prepare`` translates an ``UpstreamRequest`` without I/O; ``run`` sends it and yields deltas
through ``providers.gemini_stream`` (streamed with ``:streamGenerateContent?alt=sse``, whole with
``:generateContent``).

Deployments (catalogue data):

* **AI Studio** (default): ``POST {base_url}/models/{model}:generateContent`` with the key in
  ``x-goog-api-key`` (Gemini takes no bearer key, so the catalogue's ``auth`` style is not used).
* **Vertex AI**: ``options.platform: vertex``; ``POST {base_url}/projects/{options.project}/
  locations/{options.location or region}/publishers/google/models/{model}:generateContent`` with
  ``base_url`` the regional endpoint and version (``https://us-central1-aiplatform.googleapis.com/v1``).
  Auth is a bearer token from the ``service_account`` credential (a service-account JSON key,
  ``providers.google_auth``; token endpoint ``options.token_url``), fetched in ``run``, cached,
  and replaced once when Vertex answers 401; without that credential the ``api_key`` goes in
  ``x-goog-api-key`` (Vertex express mode). ``service_tier`` flex/priority become Vertex's
  ``X-Vertex-AI-LLM-*`` headers instead of the body's ``serviceTier``.
* ``options.thinking: level`` sends ``thinkingLevel`` (Gemini 3) instead of ``thinkingBudget``.

Input tokens are counted by Gemini (``prepare_count``/``count_tokens``): ``:countTokens`` on the
same model path, its reply's ``totalTokens``. AI Studio takes the translated request whole as
``generateContentRequest`` (with ``model: models/{model}``), so instructions and tools count;
Vertex takes ``contents``, ``systemInstruction`` and ``tools`` at the top level.

Translation rules worth knowing:

* ``instructions`` and every system/developer message go, in order, into ``systemInstruction``.
* Reasoning items, assistant messages and function calls in a row are one ``model`` turn;
  reasoning summaries go back as ``thought`` parts, and the reasoning state (thought signatures,
  see ``providers.gemini_stream``) goes back onto the parts it came with.
* ``function_call_output`` items in a row are one ``user`` turn of ``functionResponse`` parts, in
  the order of the calls they answer; the function name comes from the matching
  ``function_call`` item; ``response`` is ``{"output": <text>}``. Call ids are sent as ``id``
  only when this adapter did not mint them.
* Tool and output schemas are turned into Gemini's OpenAPI subset (``_Schema``).
* Images and files: ``data:`` URLs become ``inlineData`` (the base64 as given); other URLs
  (``https``, ``gs://``) become ``fileData`` with the MIME type guessed from the URL's extension
  (or the file name); a URL whose type cannot be told is refused.
* ``reasoning.effort`` -> a thinking budget (``_BUDGETS``), at most half of
  ``max_output_tokens`` since thinking counts against it; ``reasoning.summary`` -> ``includeThoughts``.

Refused with ``UnsupportedFeature`` (400, naming the field): tools other than functions, items
outside the core, compaction items, files or images by ``file_id``, non-text parts in tool
outputs or system messages, ``top_logprobs``, recursive ``$ref`` schemas. Left out because Gemini
has no equivalent and they do not change the answer: ``parallel_tool_calls`` (Gemini may call
several functions either way), ``text.verbosity``, ``truncation``, ``prompt_cache_key`` (Gemini
caches implicitly), ``metadata``, ``safety_identifier``, ``store``, ``include``, ``max_tool_calls``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mimetypes
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from msgspec import UNSET

from providers.base import PreparedCall, SessionProvider
from providers.common import (
    TEXT_PARTS,
    Refusals,
    call_arguments,
    output_format,
    part_texts,
    put,
)
from providers.gemini_stream import (
    MINTED_CALL_PREFIX,
    GeminiDecoder,
    decode_signatures,
)
from providers.google_auth import DEFAULT_TOKEN_URL, ServiceAccountTokens
from providers.http import (
    decode_events,
    join_url,
    logged_body,
    parse_retry_after,
    read_body,
    read_token_count,
    safe_message,
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
from proxy.schema.content import InputFile, InputImage, InputText, InputVideo
from proxy.schema.deltas import Delta
from proxy.schema.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    Item,
    ItemReference,
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

log = logging.getLogger(__name__)
_REFUSE = Refusals("Gemini")
_BUDGETS = {"none": 0, "minimal": 200, "low": 1600, "medium": 6400, "high": 24576, "xhigh": 24576}
"""Thinking budget per ``reasoning.effort`` (the steps the recorded clients use; 24576 is the
most Gemini 2.5 Flash takes). ``none`` turns thinking off where the model allows it."""
_LEVELS = {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high",
           "xhigh": "high"}
"""``thinkingLevel`` per effort for ``options.thinking: level`` (Gemini 3 cannot turn thinking off)."""
_TIERS = ("flex", "priority")
"""``service_tier`` values sent on: AI Studio's ``serviceTier``, Vertex's shared request type
(``default`` is what both do unasked)."""
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
"""``ErrorInfo.reason``s of a 400 that are really about the gateway's key (Gemini answers a bad key
with 400, not 401)."""
_CONTEXT_TOO_LONG = "exceeds the maximum number of tokens"
"""How Gemini words a prompt over the context window (a plain 400 INVALID_ARGUMENT)."""
_COUNTED_FIELDS = frozenset({"contents", "systemInstruction", "tools", "toolConfig"})
"""What AI Studio counts of a ``generateContentRequest`` (generation settings add no input)."""
_VERTEX_COUNTED_FIELDS = frozenset({"contents", "systemInstruction", "tools"})
"""The input fields of Vertex's ``CountTokensRequest``."""


class GeminiProvider(SessionProvider):
    """``Provider`` for the ``gemini`` dialect (AI Studio and Vertex AI)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        super().__init__(session)
        self._tokens: dict[tuple[str, str], ServiceAccountTokens] = {}

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        vertex = deployment.options.get("platform") == "vertex"
        contents, system = _contents(request.items, request.instructions)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        tools, config = _tools(request.tools, request.tool_choice)
        if tools:
            body["tools"] = [{"functionDeclarations": tools}]
        if config is not None:
            body["toolConfig"] = {"functionCallingConfig": config}
        generation = _generation_config(request.body, deployment)
        if generation:
            body["generationConfig"] = generation
        headers = dict(deployment.headers)
        tier = request.body.service_tier
        if tier in _TIERS:
            if vertex:
                headers["X-Vertex-AI-LLM-Request-Type"] = "shared"
                headers["X-Vertex-AI-LLM-Shared-Request-Type"] = tier
            else:
                body["serviceTier"] = tier
        if deployment.api_key and not (vertex and "service_account" in deployment.credentials):
            headers["x-goog-api-key"] = deployment.api_key
        headers["Content-Type"] = "application/json"
        method = "streamGenerateContent" if request.stream else "generateContent"
        query = {"alt": "sse", **deployment.query} if request.stream else deployment.query
        return PreparedCall(url=join_url(deployment.base_url, _model_path(deployment, vertex, method), query),
                            headers=headers, body=body)

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
        call = self.prepare(request)
        deployment = request.deployment
        provider = deployment.provider
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        response = await self._send(call, deployment, map_error)
        decoder = GeminiDecoder(provider, map_error, tier_header=response.headers.get("x-gemini-service-tier"))
        if request.stream:
            async for delta in decode_events(response, provider, decoder):
                yield delta
            return
        deltas = decoder.feed(None, await read_body(response, provider)) + decoder.close()
        for delta in deltas:
            yield delta

    def prepare_count(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        vertex = deployment.options.get("platform") == "vertex"
        call = self.prepare(msgspec.structs.replace(request, stream=False))
        if vertex:
            body = {name: value for name, value in call.body.items() if name in _VERTEX_COUNTED_FIELDS}
        else:
            body = {"generateContentRequest": {
                "model": f"models/{deployment.model}",
                **{name: value for name, value in call.body.items() if name in _COUNTED_FIELDS}}}
        return msgspec.structs.replace(
            call, body=body, url=join_url(deployment.base_url, _model_path(deployment, vertex, "countTokens"),
                                          deployment.query))

    async def count_tokens(self, call: PreparedCall, deployment: Deployment) -> int:
        response = await self._send(call, deployment, functools.partial(_map_error, secret=deployment.api_key))
        return await read_token_count(response, deployment.provider, "totalTokens")

    async def access_token(self, deployment: Deployment, *, rejected: str | None = None) -> str:
        """The bearer token ``run`` sends to a Vertex deployment with a ``service_account``
        credential: cached per service account and token endpoint, replaced near expiry or when
        it is the ``rejected`` one."""
        account = deployment.credentials["service_account"]
        token_url = deployment.options.get("token_url", DEFAULT_TOKEN_URL)
        tokens = self._tokens.get((account, token_url))
        if tokens is None:
            tokens = self._tokens[(account, token_url)] = ServiceAccountTokens(account, token_url)
        return await tokens.token(self._session, deployment.timeouts, rejected=rejected)

    async def _send(self, call: PreparedCall, deployment: Deployment,
                    map_error: Callable[[int, Mapping[str, str], bytes], GatewayError]) -> aiohttp.ClientResponse:
        if deployment.options.get("platform") != "vertex" or "service_account" not in deployment.credentials:
            return await send(self._session, call, deployment, map_error)
        token = await self.access_token(deployment)
        rejected = False

        def note_rejection(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
            nonlocal rejected
            rejected = status == 401
            return map_error(status, headers, body)

        try:
            return await send(self._session, _with_bearer(call, token), deployment, note_rejection)
        except GatewayError:
            if not rejected:
                raise
        # The token was revoked or expired early: one more try with a fresh one.
        token = await self.access_token(deployment, rejected=token)
        return await send(self._session, _with_bearer(call, token), deployment, map_error)


def _with_bearer(call: PreparedCall, token: str) -> PreparedCall:
    return msgspec.structs.replace(call, headers={**call.headers, "Authorization": f"Bearer {token}"})


def _model_path(deployment: Deployment, vertex: bool, method: str) -> str:
    if not vertex:
        return f"/models/{deployment.model}:{method}"
    project = deployment.options.get("project")
    location = deployment.options.get("location") or deployment.region
    if not project or not location:
        raise ServerError(f"Vertex deployment {deployment.name} needs options.project and a region "
                          "(or options.location)", code="gateway_misconfigured")
    return f"/projects/{project}/locations/{location}/publishers/google/models/{deployment.model}:{method}"


# -- errors ------------------------------------------------------------------------------------
def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The adapter's one error mapper for Google's ``{"error": {"code", "message", "status",
    "details"}}``: a bad API key (400 ``API_KEY_INVALID``) is the gateway's credential problem,
    429 ``RESOURCE_EXHAUSTED`` waits for ``RetryInfo.retryDelay`` (or ``retry-after``), a prompt
    over the context window is ``context_length_exceeded``; the rest goes by HTTP status.

    Only the upstream's message travels on (shortened, with the deployment's key removed should
    the upstream echo it)."""
    log.debug("upstream error %s: %r", status, logged_body(body, secret))
    message, grpc_status, reasons, retry_delay = _error_fields(body)
    message = safe_message(message, secret)
    if reasons & _AUTH_REASONS:
        status = 401
    if status == 400 and _CONTEXT_TOO_LONG in message:
        return ContextTooLong(message)
    code = grpc_status.lower() if grpc_status and 400 <= status < 500 and status not in (404, 429) else None
    return error_for_upstream_status(status, message, code=code,
                                     retry_after=parse_retry_after(headers) or retry_delay)


def _error_fields(body: bytes) -> tuple[str, str | None, set[str], float | None]:
    """``(message, gRPC status, ErrorInfo reasons, RetryInfo delay in seconds)``."""
    try:
        data = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "upstream error", None, set(), None
    message = error.get("message")
    grpc_status = error.get("status")
    reasons: set[str] = set()
    delay = None
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        if isinstance(detail.get("reason"), str):
            reasons.add(detail["reason"])
        raw_delay = detail.get("retryDelay")
        if isinstance(raw_delay, str) and raw_delay.endswith("s"):
            with contextlib.suppress(ValueError):
                delay = max(float(raw_delay[:-1]), 0.0)
    return (message if isinstance(message, str) and message else "upstream error",
            grpc_status if isinstance(grpc_status, str) else None, reasons, delay)


# -- conversation ------------------------------------------------------------------------------
@dataclass(slots=True)
class _ModelTurn:
    """A ``model`` content being built, with what is needed to put signatures back."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    call_parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # call id -> its part


def _contents(items: list[Item], instructions: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(contents, systemInstruction parts)`` for the conversation."""
    system: list[dict[str, Any]] = [{"text": instructions}] if instructions else []
    names = {item.call_id: item.name for item in items if isinstance(item, FunctionCall)}
    contents: list[dict[str, Any]] = []
    model: _ModelTurn | None = None
    calls: list[str] = []  # call ids of the last model turn, in order
    responses: list[tuple[int, dict[str, Any]]] | None = None  # (call position, part) of the open user turn

    def close_model() -> None:
        nonlocal model, calls
        if model is not None and model.parts:
            contents.append({"parts": model.parts, "role": "model"})
            calls = list(model.call_parts)
        model = None

    def close_responses() -> None:
        nonlocal responses
        if responses:
            # Gemini pairs results with calls by position: answer in the order of the calls.
            contents.append({"parts": [part for _, part in sorted(responses, key=lambda pair: pair[0])],
                             "role": "user"})
        responses = None

    for index, item in enumerate(items):
        param = f"input[{index}]"
        if isinstance(item, FunctionCallOutput):
            if responses is None:
                close_model()
                responses = []
            position = calls.index(item.call_id) if item.call_id in calls else len(calls)
            responses.append((position, _function_response(item, names.get(item.call_id), param)))
            continue
        if isinstance(item, Message) and item.role in ("system", "developer"):
            system += _system_parts(item, param)
            continue
        if isinstance(item, Message) and item.role == "user":
            close_model()
            close_responses()
            contents.append({"parts": _user_parts(item, param), "role": "user"})
            continue
        if isinstance(item, Message | FunctionCall | Reasoning):
            close_responses()
            if model is None:
                model = _ModelTurn()
            _model_item(model, item, param)
            continue
        raise _unsupported_item(item, index)
    close_model()
    close_responses()
    return contents, system


def _unsupported_item(item: Item, index: int) -> UnsupportedFeature:
    param = f"input[{index}]"
    if isinstance(item, Compaction):
        return UnsupportedFeature("compaction items cannot be sent to a Gemini upstream", param=param)
    if isinstance(item, ItemReference):
        return UnsupportedFeature(f"item_reference {item.id!r} was not resolved", param=param)
    return _REFUSE.item(item, index)


def _model_item(model: _ModelTurn, item: Message | FunctionCall | Reasoning, param: str) -> None:
    if isinstance(item, FunctionCall):
        call: dict[str, Any] = {"name": item.name,
                                "args": call_arguments(item.arguments, f"{param}.arguments", "for Gemini")}
        if not item.call_id.startswith(MINTED_CALL_PREFIX):  # an id Gemini (or the client) chose
            call["id"] = item.call_id
        part = {"functionCall": call}
        model.parts.append(part)
        model.call_parts[item.call_id] = part
    elif isinstance(item, Message):
        content = item.content
        texts = [content] if isinstance(content, str) else part_texts(content, f"{param}.content",
                                                                       "assistant messages", _REFUSE, refusals=True)
        model.parts += [{"text": text} for text in texts if text]
    else:
        model.parts += [{"text": part.text, "thought": True} for part in item.summary if part.text]
        if isinstance(item.encrypted_content, str):
            _restore_signatures(model, item.encrypted_content, f"{param}.encrypted_content")


def _restore_signatures(model: _ModelTurn, state: str, param: str) -> None:
    """Put a reply's thought signatures back on the parts they came with; parts the client left
    out of the history lose theirs."""
    try:
        signatures = decode_signatures(state)
    except msgspec.DecodeError:
        raise InvalidRequest("the reasoning item's encrypted_content is not Gemini reasoning state",
                             param=param) from None
    for call_id, signature in signatures.calls.items():
        part = model.call_parts.get(call_id)
        if part is not None:
            part["thoughtSignature"] = signature
    _sign_from_end(model.parts, signatures.texts, thought=False)
    _sign_from_end(model.parts, signatures.thoughts, thought=True)
    model.parts += [{"text": "", "thoughtSignature": signature} for signature in signatures.empty]


def _sign_from_end(parts: list[dict[str, Any]], signatures: dict[int, str], *, thought: bool) -> None:
    candidates = [part for part in parts if "text" in part and part.get("thought", False) is thought]
    for back, signature in signatures.items():
        if back < len(candidates):
            candidates[-1 - back]["thoughtSignature"] = signature


def _system_parts(item: Message, param: str) -> list[dict[str, Any]]:
    if isinstance(item.content, str):
        return [{"text": item.content}] if item.content else []
    return [{"text": text} for text in part_texts(item.content, f"{param}.content", "system and developer messages",
                                                  _REFUSE)]


def _user_parts(item: Message, param: str) -> list[dict[str, Any]]:
    if isinstance(item.content, str):
        return [{"text": item.content}]
    return [_user_part(part, f"{param}.content[{n}]") for n, part in enumerate(item.content)]


def _user_part(part: Any, param: str) -> dict[str, Any]:
    if isinstance(part, TEXT_PARTS):
        return {"text": part.text}
    if isinstance(part, InputImage):
        if not part.image_url:
            raise UnsupportedFeature("Gemini takes images by URL or data: URL, not by file_id", param=param)
        return _media(part.image_url, None, param)
    if isinstance(part, InputFile):
        if isinstance(part.file_data, str) and part.file_data:
            data = part.file_data
            if not data.startswith("data:"):  # bare base64: the file name tells the type
                return {"inlineData": {"mimeType": _guess_type(part.filename, None, param), "data": data}}
            return _media(data, None, param)
        if isinstance(part.file_url, str) and part.file_url:
            return _media(part.file_url, part.filename, param)
        raise UnsupportedFeature("Gemini takes files as file_data or file_url, not by file_id", param=param)
    if isinstance(part, InputVideo):
        return _media(part.video_url, None, param)
    raise _REFUSE.part(part, "user messages", param)


def _media(url: str, filename: Any, param: str) -> dict[str, Any]:
    """``inlineData`` for a ``data:`` URL (its base64 passed on as given), ``fileData`` for any
    other URL (Files API, ``gs://`` or ``https``)."""
    if url.startswith("data:"):
        inline = base64_data_url(url)
        if inline is None:
            raise InvalidRequest("a data: URL for Gemini must be base64 with a media type", param=param)
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    return {"fileData": {"mimeType": _guess_type(filename, url, param), "fileUri": url}}


def _guess_type(filename: Any, url: str | None, param: str) -> str:
    for name in (filename if isinstance(filename, str) else None, urlsplit(url).path if url else None):
        if name:
            guessed, _ = mimetypes.guess_type(name, strict=False)
            if guessed:
                return guessed
    raise UnsupportedFeature("Gemini needs the media type of a file, and it cannot be told from the URL or "
                             "file name; send it as a data: URL", param=param)


def _function_response(item: FunctionCallOutput, name: str | None, param: str) -> dict[str, Any]:
    if name is None:
        raise InvalidRequest(f"no function_call with call_id {item.call_id!r} precedes this output; Gemini needs "
                             "the function's name", param=f"{param}.call_id")
    output = item.output
    if not isinstance(output, str):
        texts = []
        for n, part in enumerate(output):
            if not isinstance(part, InputText):
                raise _REFUSE.part(part, "function_call_output", f"{param}.output[{n}]")
            texts.append(part.text)
        output = "".join(texts)
    response: dict[str, Any] = {"name": name, "response": {"output": output}}
    if not item.call_id.startswith(MINTED_CALL_PREFIX):
        response["id"] = item.call_id
    return {"functionResponse": response}


# -- tools -------------------------------------------------------------------------------------
def _tools(tools: list[Tool], choice: ToolChoice | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``(functionDeclarations, functionCallingConfig)``. An ``allowed_tools`` choice declares only
    its tools (Gemini's ``allowedFunctionNames`` works only in mode ``ANY``)."""
    declarations = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, FunctionTool):
            raise _REFUSE.tool(tool, index)
        declaration: dict[str, Any] = {"name": tool.name}
        if isinstance(tool.description, str):
            declaration["description"] = tool.description
        if isinstance(tool.parameters, dict):
            parameters = _Schema(tool.parameters, f"tools[{index}].parameters").convert()
            if parameters.get("properties"):  # Gemini rejects an OBJECT without properties
                declaration["parameters"] = parameters
        declarations.append(declaration)
    if choice is None or not declarations:  # Gemini wants no toolConfig without tools
        return declarations, None
    if isinstance(choice, str):
        return declarations, {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]}
    if isinstance(choice, SpecificFunction):
        return declarations, {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    if isinstance(choice, AllowedTools):
        allowed = {tool.name for tool in choice.tools}
        subset = [declaration for declaration in declarations if declaration["name"] in allowed]
        return subset, {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice.mode]}
    raise _REFUSE.tool_choice(choice)


# -- generation config -------------------------------------------------------------------------
def _generation_config(params: CreateResponseBody, deployment: Deployment) -> dict[str, Any]:
    config: dict[str, Any] = {}
    put(config, "temperature", params.temperature)
    put(config, "topP", params.top_p)
    put(config, "maxOutputTokens", params.max_output_tokens)
    put(config, "presencePenalty", params.presence_penalty)
    put(config, "frequencyPenalty", params.frequency_penalty)
    if isinstance(params.top_logprobs, int) and params.top_logprobs > 0:
        raise UnsupportedFeature("top_logprobs is not supported by this model's provider (Gemini)",
                                 param="top_logprobs")
    fmt = output_format(params)
    if isinstance(fmt, TextFormatJsonSchema):
        config["responseMimeType"] = "application/json"
        if isinstance(fmt.schema, dict):
            config["responseSchema"] = _Schema(fmt.schema, "text.format.schema", ordered=True).convert()
    elif isinstance(fmt, TextFormatJsonObject):
        config["responseMimeType"] = "application/json"
    thinking = _thinking(params, deployment)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _thinking(params: CreateResponseBody, deployment: Deployment) -> dict[str, Any]:
    reasoning = params.reasoning
    if reasoning is UNSET or reasoning is None:
        return {}
    thinking: dict[str, Any] = {}
    if isinstance(reasoning.summary, str):
        thinking["includeThoughts"] = True
    effort = reasoning.effort
    if isinstance(effort, str):
        if deployment.options.get("thinking") == "level":
            thinking["thinkingLevel"] = _LEVELS[effort]
        else:
            budget = _BUDGETS[effort]
            if isinstance(params.max_output_tokens, int):
                budget = min(budget, params.max_output_tokens // 2)
            thinking["thinkingBudget"] = budget
    return thinking


# -- schemas -----------------------------------------------------------------------------------
_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN", "array": "ARRAY",
          "object": "OBJECT", "null": "NULL"}
_FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}
_KEPT = ("title", "description", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
         "pattern", "minProperties", "maxProperties")
_MAX_DEPTH = 32


class _Schema:
    """JSON Schema -> Gemini's ``Schema`` (an OpenAPI 3 subset), keyword by keyword:

    * ``$ref`` into ``$defs``/``definitions`` is inlined (sibling keywords win); a recursive one
      cannot be and is refused;
    * ``type`` is upper-cased (the API's enum names); a type list becomes one type plus
      ``nullable`` or an ``anyOf``; ``anyOf``/``oneOf`` become ``anyOf``, a ``null`` member
      ``nullable``; ``allOf`` is merged;
    * ``const`` becomes a one-value ``enum``; enums of non-strings (Gemini takes string enums only)
      are dropped, their values named in the description;
    * ``format`` is kept only where Gemini knows it; empty ``properties`` are left out;
    * everything else (``additionalProperties``, ``$schema``, ``default``, ``examples``,
      ``not``, ``if``...) is dropped.

    ``ordered`` adds ``propertyOrdering`` (the schema's own order; Gemini otherwise orders the
    output's keys alphabetically) for response schemas.
    """

    def __init__(self, root: dict[str, Any], param: str, *, ordered: bool = False) -> None:
        self._defs: dict[str, Any] = {**(root.get("definitions") or {}), **(root.get("$defs") or {})}
        self._root = root
        self._param = param
        self._ordered = ordered

    def convert(self) -> dict[str, Any]:
        return self._node(self._root, ())

    def _resolve(self, node: dict[str, Any], refs: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        while isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            name = ref.rsplit("/", 1)[-1]
            if ref in refs or len(refs) > _MAX_DEPTH:
                raise UnsupportedFeature(f"recursive schema references ({ref}) are not supported by Gemini",
                                         param=self._param)
            target = self._defs.get(name) if ref.startswith(("#/$defs/", "#/definitions/")) else None
            if not isinstance(target, dict):
                raise UnsupportedFeature(f"schema reference {ref!r} cannot be resolved for Gemini", param=self._param)
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            refs = (*refs, ref)
        for merged in node.get("allOf") or ():
            if isinstance(merged, dict):
                inner, refs = self._resolve(merged, refs)
                node = _merge(node, inner)
        return node, refs

    def _node(self, node: Any, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, dict):
            return {}
        node, refs = self._resolve(node, refs)
        out: dict[str, Any] = {key: node[key] for key in _KEPT if key in node}
        types = node.get("type")
        types = [types] if isinstance(types, str) else list(types) if isinstance(types, list) else []
        variants = [v for v in (node.get("anyOf") or node.get("oneOf") or ()) if isinstance(v, dict)]
        if "null" in types or any(v.get("type") == "null" for v in variants):
            out["nullable"] = True
        types = [t for t in types if t != "null"]
        variants = [v for v in variants if v.get("type") != "null"]
        if len(types) > 1:
            variants += [{**{k: v for k, v in node.items() if k not in ("type", "anyOf", "oneOf")}, "type": t}
                         for t in types]
            types = []
        if variants:
            converted = [self._node(v, refs) for v in variants]
            if len(converted) == 1:
                return {**converted[0], **out}
            return {**out, "anyOf": converted}
        enum = node.get("enum")
        if "const" in node:
            enum = [node["const"]]
        kind = _TYPES.get(types[0]) if types else None
        if kind is None and isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            kind = "STRING"
        if kind is None and "properties" in node:
            kind = "OBJECT"
        if kind is None and "items" in node:
            kind = "ARRAY"
        if kind is not None:
            out["type"] = kind
        if isinstance(enum, list) and enum:
            if all(isinstance(v, str) for v in enum):
                out["enum"] = enum
            else:
                allowed = ", ".join(msgspec.json.encode(v).decode() for v in enum)
                out["description"] = f"{out.get('description', '')} (one of: {allowed})".strip()
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(kind or "", ()):
            out["format"] = fmt
        properties = node.get("properties")
        if isinstance(properties, dict) and properties:
            out["properties"] = {name: self._node(sub, refs) for name, sub in properties.items()}
            required = node.get("required")
            if isinstance(required, list):
                out["required"] = [name for name in required if name in properties]
            if self._ordered and len(properties) > 1:
                out["propertyOrdering"] = list(properties)
        if isinstance(node.get("items"), dict):
            out["items"] = self._node(node["items"], refs)
        return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` member folded into its schema: properties and required lists are united."""
    merged = {**extra, **{k: v for k, v in base.items() if k != "allOf"}}
    props = {**(extra.get("properties") or {}), **(base.get("properties") or {})}
    if props:
        merged["properties"] = props
    required = [*(extra.get("required") or []), *(base.get("required") or [])]
    if required:
        merged["required"] = list(dict.fromkeys(required))
    return merged
