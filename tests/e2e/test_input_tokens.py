"""``POST /v1/responses/input_tokens`` driven by the official SDK (``client.responses.input_tokens
.count``): the upstream's own count for OpenAI, Anthropic and Gemini (AI Studio and Vertex), the
documented estimate elsewhere, and the reply saying which.

The simulator counts exactly as it reports a reply's input tokens, so a provider count must equal
the ``usage.input_tokens`` of the same request created for real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from proxy.routes.lifecycle import COUNT_SOURCE_HEADER
from proxy.schema.items import Message
from proxy.token_count import estimate_tokens
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve
from tests.spec_validation import validate_resource

TIMEOUTS = {"connect": 2, "first_byte": 5, "idle": 5, "total": 20}
PROVIDERS: dict[str, dict[str, Any]] = {
    "openai_responses": {"dialect": "openai_responses", "base_url": "embedded"},
    "anthropic": {"dialect": "anthropic", "base_url": "embedded", "auth": "x-api-key"},
    "gemini": {"dialect": "gemini", "base_url": "embedded/v1beta"},
    "vertex": {"dialect": "gemini", "base_url": "embedded/v1",
               "options": {"platform": "vertex", "project": "p", "location": "us-central1"}},
    "openai_chat": {"dialect": "openai_chat", "base_url": "embedded"},
    "anthropic-down": {"dialect": "anthropic", "base_url": "embedded", "auth": "x-api-key",
                       "headers": {"x-sim-fault": "status:503"}},
}
COUNT_PATHS = {
    "openai_responses": "/v1/responses/input_tokens",
    "anthropic": "/v1/messages/count_tokens",
    "gemini": "/v1beta/models/sim-model:countTokens",
    "vertex": "/v1/projects/p/locations/us-central1/publishers/google/models/sim-model:countTokens",
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CONVERSATION = [{"role": "user", "content": "How many tokens does this conversation hold?"},
                {"role": "assistant", "content": "Let me count them for you."},
                {"role": "user", "content": "And with this question added?"}]
Log = Callable[[], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    providers = {name: {**config, "timeouts": TIMEOUTS} for name, config in PROVIDERS.items()}
    models = {name: {"deployments": [{"provider": name, "model": "sim-model"}]} for name in providers}
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with serve(gateway_settings(url, providers=providers, models=models,
                                retry={"attempts": 1, "backoff_base": 0.01, "backoff_max": 0.05})) as gateway:
        yield gateway


@pytest.fixture
def client(running: RunningGateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=running.base_url + "/v1", api_key=TEAM_A_KEY, max_retries=0) as sdk:
        yield sdk


def count(client: OpenAI, **body: Any) -> tuple[int, str]:
    """``(input_tokens, how they were counted)``, the reply's shape checked."""
    raw = client.responses.input_tokens.with_raw_response.count(**body)
    reply = raw.http_response.json()
    assert set(reply) == {"object", "input_tokens"} and reply["object"] == "response.input_tokens", reply
    parsed = raw.parse()
    assert parsed.input_tokens == reply["input_tokens"] >= 0
    return parsed.input_tokens, raw.headers[COUNT_SOURCE_HEADER]


def usage_of(client: OpenAI, **body: Any) -> int:
    raw = client.responses.with_raw_response.create(**body)
    validate_resource(raw.http_response.json())
    usage = raw.parse().usage
    assert usage is not None
    return usage.input_tokens


@pytest.mark.parametrize("model", list(COUNT_PATHS))
def test_the_provider_counts_what_a_reply_would_use(client: OpenAI, upstream_log: Log, model: str) -> None:
    body: dict[str, Any] = {"model": model, "input": CONVERSATION, "instructions": "Answer briefly.",
                            "tools": [WEATHER]}
    tokens, source = count(client, **body)
    assert source == "provider"
    calls = upstream_log()
    assert [call["path"] for call in calls] == [COUNT_PATHS[model]]
    sent = calls[0]["body"]
    assert "max_tokens" not in sent and "stream" not in sent and "store" not in sent
    assert tokens == usage_of(client, **body) > 0
    without_instructions = count(client, **{**body, "instructions": None})[0]
    assert without_instructions < tokens, "instructions are counted"


@pytest.mark.parametrize("model", ["openai_chat", "anthropic-down"])
def test_otherwise_the_estimate_is_used_and_said(client: OpenAI, upstream_log: Log, model: str) -> None:
    tokens, source = count(client, model=model, input=CONVERSATION, instructions="Answer briefly.")
    assert source == "estimate"
    items = [Message(role=turn["role"], content=turn["content"]) for turn in CONVERSATION]  # type: ignore[arg-type]
    assert tokens == estimate_tokens(items, instructions="Answer briefly.")
    tried = [call["path"] for call in upstream_log()]
    assert tried == ([] if model == "openai_chat" else [COUNT_PATHS["anthropic"]])


def test_the_previous_response_is_counted(client: OpenAI) -> None:
    first = client.responses.create(model="anthropic", input="Remember the number 42.")
    alone, _ = count(client, model="anthropic", input="Which number?")
    chained, source = count(client, model="anthropic", input="Which number?", previous_response_id=first.id)
    assert source == "provider" and chained > alone
    assert chained == usage_of(client, model="anthropic", input="Which number?", previous_response_id=first.id)


def test_a_compaction_item_counts_as_the_summary_it_expands_to(client: OpenAI) -> None:
    compacted = client.responses.with_raw_response.compact(model="openai_responses", input=CONVERSATION)
    follow_up = [*compacted.http_response.json()["output"], {"role": "user", "content": "Go on."}]
    tokens, source = count(client, model="gemini", input=follow_up)
    assert source == "provider"
    assert tokens == usage_of(client, model="gemini", input=follow_up)


def test_refusals_are_the_create_endpoint_s(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as missing:
        client.responses.input_tokens.count(input="no model")
    assert (missing.value.param, missing.value.code) == ("model", "missing_required_parameter")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.input_tokens.count(model="nope", input="x")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_tokens.count(model="anthropic", input=[{"type": "message", "role": "user"}])  # type: ignore[list-item]
    assert bad.value.param is not None and bad.value.param.startswith("input[0]")
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.input_tokens.count(model="anthropic", input="x", previous_response_id="resp_missing")
    assert gone.value.code == "previous_response_not_found"
