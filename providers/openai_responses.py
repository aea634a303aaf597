"""The OpenAI Responses dialect: OpenAI itself and hosts that implement ``/v1/responses``.

Requests pass through nearly as sent (the gateway resolves ``previous_response_id`` and item
references itself, so neither goes upstream); items and tools outside the core travel unchanged.
Replies are re-expressed as deltas so that the gateway numbers the events and builds the final
resource the same way as for every other dialect.

Input tokens are counted by the upstream (``prepare_count``/``count_tokens``): ``POST
/responses/input_tokens`` with the translated body cut to the fields that endpoint takes
(``_COUNT_FIELDS``; it refuses the others, ``store`` and ``stream`` among them).

Errors reported inside a 200 reply (a ``response.failed`` or ``error`` event, a failed JSON body)
carry no HTTP status; one is inferred from their ``code``/``type`` and they go through the same
``_map_error`` as HTTP errors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeVar

import aiohttp
import msgspec

from providers.base import PreparedCall, SessionProvider
from providers.http import (
    ErrorMapper,
    auth_headers,
    counting_call,
    decode_json,
    join_url,
    parse_retry_after,
    read_body,
    read_error,
    read_token_count,
    send,
    sse_reads,
)
from proxy.errors import ContextTooLong, GatewayError, UpstreamError, error_for_upstream_status
from proxy.schema import deltas as d
from proxy.schema.codec import encode
from proxy.schema.content import UrlCitation
from proxy.schema.response import Usage
from proxy.schema.upstream import Deployment, UpstreamRequest

log = logging.getLogger(__name__)

_DROPPED_FIELDS = ("previous_response_id", "background", "input", "tools", "tool_choice", "model", "stream",
                   "instructions")
_COUNT_PATH = "/responses/input_tokens"
_COUNT_FIELDS = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                           "reasoning", "text", "truncation"})
_CORE_EVENT_PREFIXES = ("response.output_text.", "response.content_part.", "response.refusal.",
                        "response.reasoning", "response.function_call_arguments.")
# Status to assume for an in-band error, by its ``code`` or ``type`` (OpenAI's ResponseError codes:
# server and rate-limit failures are worth a retry, the image/prompt ones are the caller's).
_IN_BAND_STATUS = {
    "server_error": 500,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "vector_store_timeout": 504,
    "invalid_prompt": 400,
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "overloaded_error": 503,
}
_CLIENT_CODE_MARKERS = ("image", "invalid_")
_json_encode = msgspec.json.Encoder().encode


def _map_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None) -> GatewayError:
    """The one place OpenAI Responses errors become gateway errors: status, ``retry-after`` and
    the upstream code. Only the message travels on (shortened, the deployment's key removed
    should the upstream echo it; for a refused credential not even that); the raw body goes to
    the debug log."""
    message, code, param = read_error(log, status, body, secret)
    if status in (401, 403):
        # OpenAI's message quotes a masked form of the gateway's own key and tells the reader to
        # fix it: that is for the operator (debug log above), not for the caller.
        message = f"{code or 'authentication failed'} (HTTP {status})"
    if code == "context_length_exceeded":
        return ContextTooLong(message, param=param)
    return error_for_upstream_status(status, message, code=code, param=param,
                                     retry_after=parse_retry_after(headers), same_dialect=True)


def _in_band_error(error: Any, map_error: ErrorMapper) -> GatewayError:
    """Map an error reported inside a 200 reply, inferring the status it would have had."""
    payload: dict[str, Any] = dict(error) if isinstance(error, Mapping) else {}
    code, kind = payload.get("code"), payload.get("type")
    status = _IN_BAND_STATUS.get(str(code)) or _IN_BAND_STATUS.get(str(kind))
    if status is None:
        client = isinstance(code, str) and any(marker in code for marker in _CLIENT_CODE_MARKERS)
        status = 400 if client else 502
    if not payload.get("message"):
        payload["message"] = "the upstream response failed"
    return map_error(status, {}, _json_encode({"error": payload}))


def _stream_error(event: Mapping[str, Any], map_error: ErrorMapper) -> GatewayError:
    """An ``error`` event: ``{"type": "error", "code", "message", "param"}`` or with ``error`` nested."""
    nested = event.get("error")
    if isinstance(nested, Mapping):
        return _in_band_error(nested, map_error)
    return _in_band_error({k: event[k] for k in ("code", "message", "param") if k in event}, map_error)


def _finish_reason(response: Mapping[str, Any]) -> d.FinishReason:
    details = response.get("incomplete_details") or {}
    reason = details.get("reason") if isinstance(details, dict) else None
    if response.get("status") == "incomplete":
        return "content_filter" if reason == "content_filter" else "max_output_tokens"
    outputs = response.get("output") or []
    return "tool_calls" if any(o.get("type") == "function_call" for o in outputs if isinstance(o, dict)) else "stop"


def _usage(raw: Any) -> Usage | None:
    """The reply's usage; ``null`` details (some compatible hosts) count as absent."""
    if not isinstance(raw, dict):
        return None
    cleaned = {key: value for key, value in raw.items() if value is not None}
    try:
        return msgspec.convert(cleaned, Usage)
    except msgspec.ValidationError as exc:
        log.warning("ignoring malformed upstream usage: %s", exc)
        return None


def _terminal(response: Mapping[str, Any]) -> list[d.Delta]:
    out: list[d.Delta] = []
    usage = _usage(response.get("usage"))
    if usage is not None:
        out.append(d.UsageDelta(usage=usage))
    tier = response.get("service_tier")
    out.append(d.ResponseInfo(model=_text_or_unset(response.get("model")),
                              service_tier=tier if isinstance(tier, str) and tier != "auto" else msgspec.UNSET))
    out.append(d.Finish(reason=_finish_reason(response)))
    return out


def _item_deltas(key: int, item: Mapping[str, Any], *, streamed: bool) -> list[d.Delta]:
    """Deltas for a whole output item. When ``streamed`` its text already arrived as deltas and
    only what streams never carry (encrypted reasoning, an empty message) is added."""
    kind = item.get("type")
    ident = _text_or_unset(item.get("id"))
    out: list[d.Delta] = []
    if kind == "message":
        phase = _text_or_unset(item.get("phase"))
        if not streamed:
            for part in item.get("content") or []:
                if part.get("type") == "refusal":
                    out.append(d.RefusalDelta(key=key, text=part.get("refusal", ""), item_id=ident))
                else:
                    out.append(d.TextDelta(key=key, text=part.get("text", ""), item_id=ident, phase=phase))
                    out.extend(d.AnnotationDelta(key=key, annotation=msgspec.convert(a, UrlCitation))
                               for a in part.get("annotations") or [] if a.get("type") == "url_citation")
        if not out and not streamed:
            out.append(d.TextDelta(key=key, text="", item_id=ident, phase=phase))
    elif kind == "function_call":
        if not streamed:
            out.append(d.ToolCallStart(key=key, call_id=item["call_id"], name=item["name"], item_id=ident))
            out.append(d.ToolCallArguments(key=key, text=item.get("arguments") or ""))
    elif kind == "reasoning":
        if not streamed:
            for index, part in enumerate(item.get("summary") or []):
                out.append(d.ReasoningDelta(key=key, text=part.get("text", ""), summary_index=index, item_id=ident))
            for part in item.get("content") or []:
                out.append(d.ReasoningDelta(key=key, text=part.get("text", ""), item_id=ident))
        encrypted = item.get("encrypted_content")
        if isinstance(encrypted, str):
            out.append(d.ReasoningState(key=key, encrypted_content=encrypted, item_id=ident))
        elif not out and not streamed:
            out.append(d.ReasoningStart(key=key, item_id=ident))
    else:
        return [d.PassthroughItem(key=key, item=dict(item), done=True)]
    out.append(d.ItemDone(key=key, status="incomplete" if item.get("status") == "incomplete" else "completed"))
    return out


class OpenAIResponsesProvider(SessionProvider):
    """``Provider`` for the ``openai_responses`` dialect."""

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        body: dict[str, Any] = msgspec.to_builtins(request.body)
        for name in _DROPPED_FIELDS:
            body.pop(name, None)
        if not request.stream:
            body.pop("stream_options", None)  # the upstream refuses stream options without stream
        # The items, tools and tool choice go out as the JSON they encode to, written once when
        # the body is sent: an agent's request carries tens of KB of them (a captured Codex
        # request: 31 KB of items and 9 KB of tools), which a decode into builtins to be encoded
        # again cost six times over.
        wire: dict[str, Any] = {"model": deployment.model, "input": msgspec.Raw(encode(request.items))}
        if request.instructions is not None:
            wire["instructions"] = request.instructions
        if request.tools:
            wire["tools"] = msgspec.Raw(encode(request.tools))
        if request.tool_choice is not None:
            wire["tool_choice"] = msgspec.Raw(encode(request.tool_choice))
        wire.update(body)
        if request.stream:
            wire["stream"] = True
        return PreparedCall(url=join_url(deployment.base_url, "/responses", deployment.query),
                            headers=auth_headers(deployment), body=wire)

    def prepare_count(self, request: UpstreamRequest) -> PreparedCall:
        call = self.prepare(msgspec.structs.replace(request, stream=False))
        return counting_call(call, request.deployment, _COUNT_PATH, _COUNT_FIELDS)

    async def count_tokens(self, call: PreparedCall, deployment: Deployment) -> int:
        map_error = functools.partial(_map_error, secret=deployment.api_key)
        response = await send(self._session, call, deployment, map_error)
        return await read_token_count(response, deployment.provider, "input_tokens")

    def run(self, request: UpstreamRequest) -> AsyncGenerator[d.Delta, None]:
        # Either generator is the caller's directly: a streamed event crosses no layer of ours.
        return self._streamed(request) if request.stream else self._whole(request)

    async def _send(self, request: UpstreamRequest) -> tuple[aiohttp.ClientResponse, ErrorMapper]:
        call = self.prepare(request)
        map_error: ErrorMapper = functools.partial(_map_error, secret=request.deployment.api_key)
        return await send(self._session, call, request.deployment, map_error), map_error

    async def _whole(self, request: UpstreamRequest) -> AsyncGenerator[d.Delta, None]:
        response, map_error = await self._send(request)
        provider = request.deployment.provider
        reply = _read(_whole_reply_decoder, await read_body(response, provider), provider, misfit="an unexpected reply")
        if reply.status == "failed" or (reply.output is msgspec.UNSET and reply.error):
            raise _in_band_error(reply.error, map_error)
        try:
            deltas = [delta for index, item in enumerate(reply.output or [])
                      for delta in _item_deltas(index, item, streamed=False)] + _terminal(msgspec.structs.asdict(reply))
        except _MISSHAPEN as exc:
            raise UpstreamError(f"{provider} sent an unexpected reply") from exc
        for delta in deltas:
            yield delta

    async def _streamed(self, request: UpstreamRequest) -> AsyncGenerator[d.Delta, None]:
        response, map_error = await self._send(request)
        provider = request.deployment.provider
        seen: set[int] = set()  # items whose content already arrived as deltas
        phases: dict[int, str] = {}  # message phase, announced only by output_item.added
        arguments: dict[int, str] = {}  # function call arguments streamed so far
        reads = sse_reads(response, provider)
        try:
            async for events in reads:
                for _event, data in events:
                    if data.startswith(_TEXT_DELTA_START):  # most of a stream: the fast path
                        key, text, text_item = _text_delta(data, provider)
                        seen.add(key)
                        yield d.TextDelta(key=key, text=text, item_id=text_item, phase=phases.get(key, msgspec.UNSET))
                        continue
                    if data.startswith(_OPENING_STARTS):
                        yield d.ResponseInfo(model=_opening_model(data, provider))
                        continue
                    if data.startswith(_ENDING_STARTS):
                        for delta in _terminal(_ending(data, provider)):
                            yield delta
                        return
                    if data == b"[DONE]":
                        raise _ended_early(provider)
                    event = decode_json(data, provider)
                    if not isinstance(event, dict):
                        raise UpstreamError(f"{provider} sent an unexpected stream event")
                    kind = event.get("type") or ""
                    index: Any = event.get("output_index")  # the item's key: its position in the upstream output
                    item_id = _text_or_unset(event.get("item_id"))
                    if kind in ("response.created", "response.in_progress", "response.queued"):
                        yield d.ResponseInfo(model=_text_or_unset((event.get("response") or {}).get("model")))
                    elif kind == "response.output_item.added":
                        item = event["item"]
                        item_type = item.get("type")
                        if item_type == "message":
                            if isinstance(item.get("phase"), str):
                                phases[index] = item["phase"]
                        elif item_type == "function_call":
                            seen.add(index)
                            arguments[index] = item.get("arguments") or ""
                            yield d.ToolCallStart(key=index, call_id=item["call_id"], name=item["name"],
                                                  item_id=_text_or_unset(item.get("id")))
                            if arguments[index]:
                                yield d.ToolCallArguments(key=index, text=arguments[index])
                        elif item_type != "reasoning":
                            seen.add(index)
                            yield d.PassthroughItem(key=index, item=dict(item), done=False)
                    elif kind == "response.output_item.done":
                        item = event["item"]
                        item_type = item.get("type")
                        if item_type not in ("message", "function_call", "reasoning"):
                            yield d.PassthroughItem(key=index, item=dict(item), done=True)
                            continue
                        if item_type == "function_call" and index in arguments:
                            # Some hosts send the arguments only with the finished item.
                            final, sent = item.get("arguments") or "", arguments.pop(index)
                            if len(final) > len(sent) and final.startswith(sent):
                                yield d.ToolCallArguments(key=index, text=final[len(sent):])
                        for delta in _item_deltas(index, item, streamed=index in seen):
                            yield delta
                    elif kind == "response.output_text.delta":
                        seen.add(index)
                        yield d.TextDelta(key=index, text=event["delta"], item_id=item_id,
                                          phase=phases.get(index, msgspec.UNSET))
                    elif kind == "response.output_text.annotation.added":
                        annotation = event.get("annotation") or {}
                        if annotation.get("type") == "url_citation":
                            yield d.AnnotationDelta(key=index, annotation=msgspec.convert(annotation, UrlCitation))
                    elif kind == "response.refusal.delta":
                        seen.add(index)
                        yield d.RefusalDelta(key=index, text=event["delta"], item_id=item_id)
                    elif kind == "response.reasoning_summary_text.delta":
                        seen.add(index)
                        yield d.ReasoningDelta(key=index, text=event["delta"], item_id=item_id,
                                               summary_index=event.get("summary_index", 0))
                    elif kind in ("response.reasoning_text.delta", "response.reasoning.delta"):
                        seen.add(index)
                        yield d.ReasoningDelta(key=index, text=event["delta"], item_id=item_id)
                    elif kind == "response.function_call_arguments.delta":
                        arguments[index] = arguments.get(index, "") + event["delta"]
                        yield d.ToolCallArguments(key=index, text=event["delta"])
                    elif kind in ("response.completed", "response.incomplete"):
                        for delta in _terminal(event.get("response") or {}):
                            yield delta
                        return
                    elif kind == "response.failed":
                        raise _in_band_error((event.get("response") or {}).get("error"), map_error)
                    elif kind == "error" or (not kind and "error" in event):
                        raise _stream_error(event, map_error)
                    elif not kind.startswith(_CORE_EVENT_PREFIXES):
                        # Events of items outside the core (custom tool input, web search progress...).
                        yield d.PassthroughEvent(event=event, key=index if isinstance(index, int) else None)
        except _MISSHAPEN as exc:
            raise UpstreamError(f"{provider} sent an unexpected stream event") from exc
        finally:
            await reads.aclose()
        raise _ended_early(provider)


_MISSHAPEN = (KeyError, TypeError, AttributeError, IndexError)
"""What reading an event or reply without the fields its type promises raises (a missing key, a
string where an object belongs): the upstream's fault, a 502, not the gateway's 500."""


_TEXT_DELTA_START = b'{"type":"response.output_text.delta",'
"""How OpenAI begins a text delta event, the bulk of a stream: those are read into ``_TextDelta``
(no dict, no chain of event types); one written otherwise takes the general path, which reads
it the same."""


class _TextDelta(msgspec.Struct):
    delta: str
    output_index: Any = None
    item_id: Any = None


_Event = TypeVar("_Event")


def _read(decoder: msgspec.json.Decoder[_Event], data: bytes, provider: str, *,
          misfit: str = "malformed JSON") -> _Event:
    """An event or reply read by one of the typed decoders; JSON the decoder's type does not fit
    is the upstream's ``misfit``."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise UpstreamError(f"{provider} sent {misfit}") from exc
    except msgspec.DecodeError as exc:
        raise UpstreamError(f"{provider} sent malformed JSON") from exc


_text_delta_decoder = msgspec.json.Decoder(_TextDelta)


def _text_delta(data: bytes, provider: str) -> tuple[Any, str, str | msgspec.UnsetType]:
    """A text delta event's item key, text and item id; one without its text is malformed."""
    event = _read(_text_delta_decoder, data, provider)
    return event.output_index, event.delta, _text_or_unset(event.item_id)


_OPENING_STARTS = (b'{"type":"response.created",', b'{"type":"response.in_progress",',
                   b'{"type":"response.queued",')
"""How OpenAI begins the events that open a response. Each carries the whole response so far, the
request's tools and instructions echoed back (kilobytes for a coding agent), of which only the
model is read: those are read into ``_Opening``, the rest skipped without being built."""


class _ModelOnly(msgspec.Struct):
    model: Any = None


class _Opening(msgspec.Struct):
    response: _ModelOnly | None = None


_opening_decoder = msgspec.json.Decoder(_Opening)


def _opening_model(data: bytes, provider: str) -> str | msgspec.UnsetType:
    response = _read(_opening_decoder, data, provider).response
    return _text_or_unset(response.model) if response is not None else msgspec.UNSET


class _Settled(msgspec.Struct):
    """The fields of a finished response that ``_terminal`` reads besides its output; the rest
    (the request it echoes: the tools and instructions, kilobytes for a coding agent) is skipped
    without being built."""

    model: Any = None
    status: Any = None
    service_tier: Any = None
    usage: Any = None
    incomplete_details: Any = None


class _WholeReply(_Settled):
    """A whole (non-streamed) reply: its output items in full."""

    output: Any = msgspec.UNSET
    error: Any = None


_whole_reply_decoder = msgspec.json.Decoder(_WholeReply)


_ENDING_STARTS = (b'{"type":"response.completed",', b'{"type":"response.incomplete",')
"""How OpenAI begins the events that end a response: the whole response again, its output items
(the text that already streamed) among it. Read into ``_Ending``: what ``_terminal`` needs."""


class _Typed(msgspec.Struct):
    type: Any = None


class _Ended(_Settled):
    """An ending event's response: each output item's type alone."""

    output: list[_Typed] | None = None


class _Ending(msgspec.Struct):
    response: _Ended | None = None


_ending_decoder = msgspec.json.Decoder(_Ending)


def _ending(data: bytes, provider: str) -> dict[str, Any]:
    """The fields ``_terminal`` reads of an ending event's response (each output item's type alone)."""
    response = _read(_ending_decoder, data, provider).response
    if response is None:
        return {}
    fields = msgspec.structs.asdict(response)
    fields["output"] = [{"type": item.type} for item in response.output or ()]
    return fields


def _ended_early(provider: str) -> UpstreamError:
    return UpstreamError(f"{provider} stream ended before its terminal event")


def _text_or_unset(value: Any) -> str | msgspec.UnsetType:
    return value if isinstance(value, str) else msgspec.UNSET
