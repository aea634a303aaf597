"""Azure OpenAI through the existing dialects, configured by catalogue data alone.

Azure has no adapter of its own: chat deployments are the ``openai_chat`` dialect with the base
URL ``https://{resource}.openai.azure.com/openai/deployments/{deployment}`` and an
``api-version`` query (or the v1 API, ``.../openai/v1``, which needs none), and the Responses API
is the ``openai_responses`` dialect at ``.../openai/v1`` (or ``.../openai`` with
``api-version=2025-04-01-preview``); both authenticate with an ``api-key`` header. The shared set
holds no recording of Azure traffic, so these tests replay synthetic interactions shaped as Azure
documents its replies (``prompt_filter_results``, ``content_filter_results``, the async filter's
annotation chunks with an empty ``model``, ``innererror`` on content-filter errors, numeric error
codes and ``retry-after-ms`` on 429s) and check what goes out (URL with its query, headers, body)
and how what comes back is normalised. The replay helper matches on method, host and path only,
so each test asserts the query string itself.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from providers.base import Provider
from providers.openai_chat import OpenAIChatProvider
from providers.openai_responses import OpenAIResponsesProvider
from proxy.errors import InvalidRequest, RateLimited
from proxy.schema.content import OutputText
from proxy.schema.deltas import Delta
from proxy.schema.items import Message
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, Dialect, UpstreamRequest
from proxy.streaming import ResponseBuilder
from tests.conformance._cases import ALIAS, build, collect, converted_request, to_json, validate
from tests.conformance.cassette import Interaction, SentRequest, replay, synthetic

API_KEY = "azure-test-key"
RESOURCE = "https://contoso.openai.azure.com"
CHAT_MODEL = "gpt-4o-2024-11-20"
RESPONSES_MODEL = "gpt-5-mini-2025-08-07"

# (base_url, query, the URL that must be called) per way of reaching a deployment
CHAT_ENDPOINTS = {
    "deployment-url": (f"{RESOURCE}/openai/deployments/gpt-4o-prod", {"api-version": "2024-10-21"},
                       f"{RESOURCE}/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"),
    "v1": (f"{RESOURCE}/openai/v1", {}, f"{RESOURCE}/openai/v1/chat/completions"),
}
RESPONSES_ENDPOINTS = {
    "v1": (f"{RESOURCE}/openai/v1", {}, f"{RESOURCE}/openai/v1/responses"),
    "preview": (f"{RESOURCE}/openai", {"api-version": "2025-04-01-preview"},
                f"{RESOURCE}/openai/responses?api-version=2025-04-01-preview"),
}
PROVIDERS: dict[Dialect, type[OpenAIChatProvider] | type[OpenAIResponsesProvider]] = {
    "openai_chat": OpenAIChatProvider, "openai_responses": OpenAIResponsesProvider}

SAFE = {category: {"filtered": False, "severity": "safe"} for category in ("hate", "self_harm", "sexual", "violence")}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": {**SAFE, "jailbreak": {"filtered": False,
                                                                                       "detected": False}}}]
FILTERED = {**SAFE, "violence": {"filtered": True, "severity": "medium"}}
FILTER_MESSAGE = ("The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                  "Please modify your prompt and retry. To learn more about our content filtering policies please "
                  "read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766")
RATE_MESSAGE = ("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
                "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 2 seconds.")
QUESTION = {"model": ALIAS, "instructions": "Be brief.", "input": "What is 4200 + 42?", "max_output_tokens": 64}


def _deployment(dialect: Dialect, base_url: str, query: dict[str, str], model: str) -> Deployment:
    return Deployment(name="azure", provider="azure", dialect=dialect, base_url=base_url, model=model,
                      api_key=API_KEY, auth="api-key", query=query)


async def _call(session: aiohttp.ClientSession, request: UpstreamRequest,
                interaction: Interaction) -> tuple[list[Delta], SentRequest]:
    provider: Provider = PROVIDERS[request.deployment.dialect](session)
    with replay(synthetic(interaction)) as cassette:
        deltas = await collect(provider.run(request))
    [sent] = cassette.sent_requests
    return deltas, sent


def _build(deltas: list[Delta]) -> tuple[ResponseBuilder, list[dict[str, Any]]]:
    """The response built from ``deltas`` (checked against the spec) and its events as JSON."""
    builder, events = build(deltas)
    validate(builder.resource, events)
    return builder, [to_json(event) for event in events]


def _texts(resource: ResponseResource) -> list[str]:
    return [part.text for item in resource.output if isinstance(item, Message)
            for part in item.content if isinstance(part, OutputText)]


def _check_sent(sent: SentRequest, url: str, body: dict[str, Any]) -> None:
    assert sent.url == url
    assert sent.header("api-key") == API_KEY
    assert sent.header("Authorization") is None
    assert sent.json() == body


# -- chat deployments (openai_chat) ------------------------------------------------------------
def _chat_reply(content: str, finish: str) -> dict[str, Any]:
    return {"id": "chatcmpl-az1", "object": "chat.completion", "created": 1740000000, "model": CHAT_MODEL,
            "system_fingerprint": "fp_b705f0c291", "prompt_filter_results": PROMPT_FILTER,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "content_filter_results": FILTERED if finish == "content_filter" else SAFE,
                         "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []}}],
            "usage": {"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}}


@pytest.mark.parametrize("endpoint", CHAT_ENDPOINTS)
async def test_chat_deployment(session: aiohttp.ClientSession, endpoint: str) -> None:
    base_url, query, url = CHAT_ENDPOINTS[endpoint]
    request = converted_request({**QUESTION, "temperature": 0.2},
                                _deployment("openai_chat", base_url, query, "gpt-4o-prod"))
    deltas, sent = await _call(session, request, Interaction.make(url, body=_chat_reply("4242", "stop")))
    _check_sent(sent, url, {"model": "gpt-4o-prod", "max_completion_tokens": 64, "temperature": 0.2, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 4200 + 42?"}]})
    builder, _ = _build(deltas)
    assert (_texts(builder.resource), builder.resource.status, builder.upstream_model) == (
        ["4242"], "completed", CHAT_MODEL)
    usage = builder.resource.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (25, 3, 28)


async def test_chat_stream_cut_by_the_content_filter(session: aiohttp.ClientSession) -> None:
    base_url, query, url = CHAT_ENDPOINTS["deployment-url"]
    request = converted_request({**QUESTION, "stream": True},
                                _deployment("openai_chat", base_url, query, "gpt-4o-prod"))
    unnamed = {"id": "", "object": "", "created": 0, "model": ""}  # Azure's filter chunks name no model
    named = {"id": "chatcmpl-az2", "object": "chat.completion.chunk", "created": 1740000000, "model": CHAT_MODEL}
    chunks = [
        {**unnamed, "choices": [], "prompt_filter_results": PROMPT_FILTER},
        {**named, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**named, "choices": [{"index": 0, "delta": {"content": "Here is"}, "finish_reason": None}]},
        {**named, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter",
                               "content_filter_results": FILTERED}]},
        {**named, "choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 2, "total_tokens": 27}},
        {**unnamed, "choices": [{"index": 0, "delta": {}, "finish_reason": None, "content_filter_results": FILTERED,
                                 "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 7}}]},
    ]
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    deltas, sent = await _call(session, request, Interaction.make(
        url, body=body, headers={"Content-Type": "text/event-stream"}))
    _check_sent(sent, url, {"model": "gpt-4o-prod", "max_completion_tokens": 64, "stream": True,
                            "stream_options": {"include_usage": True}, "messages": [
                                {"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is 4200 + 42?"}]})
    builder, events = _build(deltas)
    resource = builder.resource
    assert resource.status == "incomplete" and resource.incomplete_details is not None
    assert resource.incomplete_details.reason == "content_filter"
    assert events[-1]["type"] == "response.incomplete"
    assert _texts(resource) == ["Here is"]
    assert [getattr(item, "status", None) for item in resource.output] == ["incomplete"]
    assert builder.upstream_model == CHAT_MODEL  # not the filter chunks' empty model
    assert resource.usage is not None and resource.usage.total_tokens == 27


async def test_chat_reply_stopped_by_the_content_filter(session: aiohttp.ClientSession) -> None:
    base_url, query, url = CHAT_ENDPOINTS["v1"]
    request = converted_request(QUESTION, _deployment("openai_chat", base_url, query, "gpt-4o-prod"))
    deltas, _ = await _call(session, request, Interaction.make(url, body=_chat_reply("", "content_filter")))
    builder, events = _build(deltas)
    assert builder.resource.incomplete_details is not None
    assert (builder.resource.status, builder.resource.incomplete_details.reason) == ("incomplete", "content_filter")
    assert events[-1]["type"] == "response.incomplete"


# -- the Responses API (openai_responses) ------------------------------------------------------
def _responses_reply(text: str, reason: str | None) -> dict[str, Any]:
    status = "incomplete" if reason else "completed"
    return {"id": "resp_az1", "object": "response", "created_at": 1740000000, "status": status,
            "incomplete_details": {"reason": reason} if reason else None, "error": None, "model": RESPONSES_MODEL,
            "output": [{"id": "msg_az1", "type": "message", "role": "assistant", "status": status,
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25},
            "service_tier": "default", "store": False}


@pytest.mark.parametrize("endpoint", RESPONSES_ENDPOINTS)
async def test_responses_api(session: aiohttp.ClientSession, endpoint: str) -> None:
    base_url, query, url = RESPONSES_ENDPOINTS[endpoint]
    request = converted_request({**QUESTION, "store": False},
                        _deployment("openai_responses", base_url, query, "gpt-5-mini-prod"))
    deltas, sent = await _call(session, request, Interaction.make(url, body=_responses_reply("4242", None)))
    _check_sent(sent, url, {"model": "gpt-5-mini-prod", "instructions": "Be brief.", "max_output_tokens": 64,
                            "store": False,
                            "input": [{"type": "message", "role": "user", "content": "What is 4200 + 42?"}]})
    builder, _ = _build(deltas)
    assert (_texts(builder.resource), builder.resource.status, builder.upstream_model) == (
        ["4242"], "completed", RESPONSES_MODEL)


async def test_responses_incomplete_by_the_content_filter(session: aiohttp.ClientSession) -> None:
    base_url, query, url = RESPONSES_ENDPOINTS["v1"]
    request = converted_request(QUESTION, _deployment("openai_responses", base_url, query, "gpt-5-mini-prod"))
    deltas, _ = await _call(session, request, Interaction.make(url, body=_responses_reply("Here is", "content_filter")))
    builder, events = _build(deltas)
    assert builder.resource.incomplete_details is not None
    assert (builder.resource.status, builder.resource.incomplete_details.reason) == ("incomplete", "content_filter")
    assert _texts(builder.resource) == ["Here is"]
    assert events[-1]["type"] == "response.incomplete"


# -- errors, both dialects ---------------------------------------------------------------------
ENDPOINTS = [pytest.param("openai_chat", *CHAT_ENDPOINTS["deployment-url"], id="chat"),
             pytest.param("openai_responses", *RESPONSES_ENDPOINTS["preview"], id="responses")]
# An upstream's ``param`` names a field of its own request: it reaches the caller only from an
# upstream that speaks the caller's dialect (Responses).
FILTER_PARAM = {"openai_chat": None, "openai_responses": "prompt"}


@pytest.mark.parametrize(("dialect", "base_url", "query", "url"), ENDPOINTS)
async def test_prompt_blocked_by_the_content_filter(session: aiohttp.ClientSession, dialect: Dialect,
                                                    base_url: str, query: dict[str, str], url: str) -> None:
    body = {"error": {"message": FILTER_MESSAGE, "type": None, "param": "prompt", "code": "content_filter",
                      "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                                    "content_filter_result": FILTERED}}}
    request = converted_request(QUESTION, _deployment(dialect, base_url, query, "prod"))
    with pytest.raises(InvalidRequest) as caught:
        await _call(session, request, Interaction.make(url, status=400, body=body))
    error = caught.value
    assert (error.status, error.type, error.code, error.param, error.retryable) == (
        400, "invalid_request_error", "content_filter", FILTER_PARAM[dialect], False)
    assert error.message == FILTER_MESSAGE  # the policy text only: no innererror, no filter verdicts


@pytest.mark.parametrize(("dialect", "base_url", "query", "url"), ENDPOINTS)
async def test_rate_limit_honours_retry_after_ms(session: aiohttp.ClientSession, dialect: Dialect,
                                                 base_url: str, query: dict[str, str], url: str) -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "2", "x-ratelimit-remaining-requests": "0",
               "Content-Type": "application/json"}
    request = converted_request(QUESTION, _deployment(dialect, base_url, query, "prod"))
    with pytest.raises(RateLimited) as caught:
        await _call(session, request, Interaction.make(url, status=429, headers=headers,
                                                       body={"error": {"code": "429", "message": RATE_MESSAGE}}))
    error = caught.value
    assert (error.status, error.retryable, error.retry_after, error.message) == (429, True, 1.5, RATE_MESSAGE)
    assert API_KEY not in str(error)
