"""The OpenAI Responses dialect: OpenAI itself and hosts that implement ``/v1/responses``.

Requests pass through nearly as sent (the gateway resolves ``previous_response_id`` and item
references itself, so neither goes upstream); items and tools outside the core travel unchanged.
Replies are re-expressed as deltas so that the gateway numbers the events and builds the final
resource the same way as for every other dialect.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

from providers.base import PreparedCall
from providers.http import (
    auth_headers,
    decode_json,
    error_message,
    iter_sse,
    join_url,
    parse_retry_after,
    read_body,
    send,
)
from proxy.errors import GatewayError, UpstreamError, error_for_upstream_status
from proxy.schema import deltas as d
from proxy.schema.codec import encode
from proxy.schema.content import UrlCitation
from proxy.schema.response import Usage
from proxy.schema.upstream import UpstreamRequest

_DROPPED_FIELDS = ("previous_response_id", "background", "input", "tools", "tool_choice", "model", "stream",
                   "instructions")
_CORE_EVENT_PREFIXES = ("response.output_text.", "response.content_part.", "response.refusal.",
                        "response.reasoning", "response.function_call_arguments.")


def _map_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """The one place OpenAI Responses errors become gateway errors."""
    message, code, param = error_message(body)
    return error_for_upstream_status(status, message, code=code, param=param,
                                     retry_after=parse_retry_after(headers))


def _finish_reason(response: Mapping[str, Any]) -> d.FinishReason:
    details = response.get("incomplete_details") or {}
    reason = details.get("reason") if isinstance(details, dict) else None
    if response.get("status") == "incomplete":
        return "content_filter" if reason == "content_filter" else "max_output_tokens"
    outputs = response.get("output") or []
    return "tool_calls" if any(o.get("type") == "function_call" for o in outputs if isinstance(o, dict)) else "stop"


def _terminal(response: Mapping[str, Any]) -> list[d.Delta]:
    out: list[d.Delta] = []
    usage = response.get("usage")
    if isinstance(usage, dict):
        out.append(d.UsageDelta(usage=msgspec.convert(usage, Usage)))
    tier = response.get("service_tier")
    out.append(d.ResponseInfo(model=str(response.get("model", "")),
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
        if isinstance(encrypted, str) or (not out and not streamed):
            out.append(d.ReasoningState(key=key, encrypted_content=encrypted or "", item_id=ident)
                       if isinstance(encrypted, str) else d.ReasoningDelta(key=key, text="", summary_index=None,
                                                                            item_id=ident))
    else:
        return [d.PassthroughItem(key=key, item=dict(item), done=True)]
    out.append(d.ItemDone(key=key, status="incomplete" if item.get("status") == "incomplete" else "completed"))
    return out


class OpenAIResponsesProvider:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def prepare(self, request: UpstreamRequest) -> PreparedCall:
        deployment = request.deployment
        body: dict[str, Any] = msgspec.to_builtins(request.body)
        for name in _DROPPED_FIELDS:
            body.pop(name, None)
        wire: dict[str, Any] = {"model": deployment.model,
                                "input": msgspec.json.decode(encode(request.items))}
        if request.instructions is not None:
            wire["instructions"] = request.instructions
        if request.tools:
            wire["tools"] = msgspec.json.decode(encode(request.tools))
        if request.tool_choice is not None:
            wire["tool_choice"] = msgspec.json.decode(encode(request.tool_choice))
        wire.update(body)
        if request.stream:
            wire["stream"] = True
        return PreparedCall(url=join_url(deployment.base_url, "/responses", deployment.query),
                            headers=auth_headers(deployment), body=wire)

    async def run(self, request: UpstreamRequest) -> AsyncGenerator[d.Delta, None]:
        call = self.prepare(request)
        provider = request.deployment.provider
        response = await send(self._session, call, request.deployment, _map_error)
        if not request.stream:
            data = decode_json(await read_body(response, provider), provider)
            if not isinstance(data, dict):
                raise UpstreamError(f"{provider} sent an unexpected reply")
            if data.get("status") == "failed":
                raise _failed(data)
            for index, item in enumerate(data.get("output") or []):
                for delta in _item_deltas(index, item, streamed=False):
                    yield delta
            for delta in _terminal(data):
                yield delta
            return
        async for delta in self._stream(response, provider):
            yield delta

    async def _stream(self, response: aiohttp.ClientResponse, provider: str) -> AsyncIterator[d.Delta]:
        seen: set[int] = set()  # items whose content already arrived as deltas
        async for _event, data in iter_sse(response, provider):
            if data == b"[DONE]":
                break
            event = decode_json(data, provider)
            kind = event.get("type", "")
            index = event.get("output_index")
            item_id = _text_or_unset(event.get("item_id"))
            if kind in ("response.created", "response.in_progress", "response.queued"):
                yield d.ResponseInfo(model=str(event.get("response", {}).get("model", "")))
            elif kind == "response.output_item.added":
                item = event["item"]
                item_type = item.get("type")
                if item_type == "function_call":
                    seen.add(index)
                    ident = _text_or_unset(item.get("id"))
                    yield d.ToolCallStart(key=index, call_id=item["call_id"], name=item["name"], item_id=ident)
                elif item_type not in ("message", "reasoning"):
                    seen.add(index)
                    yield d.PassthroughItem(key=index, item=dict(item), done=False)
            elif kind == "response.output_item.done":
                item = event["item"]
                if item.get("type") not in ("message", "function_call", "reasoning"):
                    yield d.PassthroughItem(key=index, item=dict(item), done=True)
                else:
                    for delta in _item_deltas(index, item, streamed=index in seen):
                        yield delta
            elif kind == "response.output_text.delta":
                seen.add(index)
                yield d.TextDelta(key=index, text=event["delta"], item_id=item_id)
            elif kind == "response.output_text.annotation.added":
                annotation = event.get("annotation") or {}
                if annotation.get("type") == "url_citation":
                    yield d.AnnotationDelta(key=index, annotation=msgspec.convert(annotation, UrlCitation))
            elif kind == "response.refusal.delta":
                seen.add(index)
                yield d.RefusalDelta(key=index, text=event["delta"], item_id=item_id)
            elif kind == "response.reasoning_summary_text.delta":
                seen.add(index)
                yield d.ReasoningDelta(key=index, text=event["delta"], summary_index=event.get("summary_index", 0),
                                       item_id=item_id)
            elif kind in ("response.reasoning_text.delta", "response.reasoning.delta"):
                seen.add(index)
                yield d.ReasoningDelta(key=index, text=event["delta"], item_id=item_id)
            elif kind == "response.function_call_arguments.delta":
                yield d.ToolCallArguments(key=index, text=event["delta"])
            elif kind in ("response.completed", "response.incomplete"):
                for delta in _terminal(event.get("response") or {}):
                    yield delta
                return
            elif kind == "response.failed":
                raise _failed(event.get("response") or {})
            elif kind == "error":
                raise _stream_error(event)
            elif not kind.startswith(_CORE_EVENT_PREFIXES):
                # Events of items outside the core (custom tool input, web search progress...).
                yield d.PassthroughEvent(event=event, key=index if isinstance(index, int) else None)
        raise UpstreamError(f"{provider} stream ended before its terminal event")


def _text_or_unset(value: Any) -> str | msgspec.UnsetType:
    return value if isinstance(value, str) else msgspec.UNSET


def _failed(response: Mapping[str, Any]) -> GatewayError:
    error = response.get("error") or {}
    message = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return UpstreamError(str(message or "the upstream response failed"), code=str(code) if code else None,
                         retryable=False)


def _stream_error(event: Mapping[str, Any]) -> GatewayError:
    nested = event.get("error")
    error: Mapping[str, Any] = nested if isinstance(nested, dict) else event
    message = str(error.get("message") or "upstream stream error")
    code = error.get("code")
    return UpstreamError(message, code=str(code) if code else None, retryable=False)
