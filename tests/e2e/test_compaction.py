"""``POST /v1/responses/compact`` driven by the official SDK (``client.responses.compact``), on both
store backends: the conversation's user messages plus one compaction item sealed by the gateway,
which a later request expands back into the summary on every dialect; compaction items the
gateway did not issue to the caller's team are a 400.

The simulator's summary is its echo of the gateway's summary request, so what every upstream
must receive after compaction is known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from proxy.adaptation import SUMMARY_HEADING
from proxy.compaction import SUMMARY_INSTRUCTIONS, SUMMARY_REQUEST
from tests import spec_validation
from tests.conformance.test_dialects_e2e import DIALECTS
from tests.conftest import Api
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve_backend
from tests.spec_validation import validate_error_body, validate_resource

TIMEOUTS = {"connect": 2, "first_byte": 5, "idle": 5, "total": 20}
CONVERSATION = [{"role": "user", "content": "My name is Ada and I drink green tea."},
                {"role": "assistant", "content": "Noted, Ada: green tea it is."},
                {"role": "user", "content": "Book a table for two tonight."}]
SUMMARY = "Echo: " + SUMMARY_REQUEST
"""What the simulator answers the summary request with."""
Log = Callable[[], list[dict[str, Any]]]


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Every dialect behind the simulator, once per store backend."""
    providers = {d.name: {"dialect": d.name, "base_url": d.base_url, "timeouts": TIMEOUTS, **d.extra}
                 for d in DIALECTS}
    models = {name: {"deployments": [{"provider": name, "model": "sim-model"}]} for name in providers}
    with serve_backend(request.param, tmp_path_factory.mktemp("store"), lambda url, prefix: gateway_settings(
            url, store_prefix=prefix, providers=providers, models=models)) as gateway:
        yield gateway


@pytest.fixture
def client(running: RunningGateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=running.base_url + "/v1", api_key=TEAM_A_KEY, max_retries=0) as sdk:
        yield sdk


def compact(client: OpenAI, **body: Any) -> dict[str, Any]:
    """The compacted resource as JSON, checked against the spec and read by the SDK."""
    raw = client.responses.with_raw_response.compact(**body)
    resource: dict[str, Any] = raw.http_response.json()
    # spec_validation has no helper of its own for this component yet.
    spec_validation._check("CompactResource", resource)
    parsed = raw.parse()
    assert parsed.object == "response.compaction" and parsed.id == resource["id"]
    return resource


def compact_error(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    reply = api.http.post("/v1/responses/compact", json=body)
    assert reply.status_code == 400, reply.text
    error: dict[str, Any] = reply.json()
    validate_error_body(error)
    return error["error"]


def test_compaction_keeps_user_messages_and_seals_a_summary(client: OpenAI, upstream_log: Log) -> None:
    resource = compact(client, model="openai_responses", input=CONVERSATION, instructions="Be a concierge.")
    *kept, item = resource["output"]
    assert [(message["role"], message["content"][0]["text"]) for message in kept] == \
        [(turn["role"], turn["content"]) for turn in CONVERSATION if turn["role"] == "user"]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert item["encrypted_content"].startswith("ilk1.") and "Echo" not in item["encrypted_content"]
    usage = resource["usage"]
    assert usage["input_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    [summarised] = upstream_log()
    sent = summarised["body"]
    assert sent["instructions"].startswith(SUMMARY_INSTRUCTIONS) and sent["instructions"].endswith("Be a concierge.")
    assert [turn["content"] for turn in sent["input"]] == [turn["content"] for turn in CONVERSATION] + [SUMMARY_REQUEST]
    assert sent["store"] is False and "tools" not in sent


@pytest.mark.parametrize("dialect", [d.name for d in DIALECTS])
def test_every_dialect_sees_the_summary(client: OpenAI, api: Api, upstream_log: Log, dialect: str) -> None:
    output = compact(client, model="openai_responses", input=CONVERSATION)["output"]
    upstream_log()  # the summary request is not what this test looks at
    follow_up = [*output, {"role": "user", "content": "Which tea again?"}]
    reply = client.responses.with_raw_response.create(model=dialect, input=follow_up)
    validate_resource(reply.http_response.json())
    assert reply.parse().output_text == "Echo: Which tea again?"
    events = api.stream({"model": dialect, "input": follow_up})
    assert events[-1]["response"]["status"] == "completed"
    for call in upstream_log()[-2:]:
        sent = json.dumps(call["body"])
        assert json.dumps(SUMMARY_HEADING + SUMMARY)[1:-1] in sent, sent
        assert "ilk1." not in sent, "the sealed token never goes upstream"


def test_a_stored_conversation_compacts_by_previous_response_id(client: OpenAI) -> None:
    first = client.responses.create(model="anthropic", input="Remember the number 42.")
    resource = compact(client, model="gemini", previous_response_id=first.id, input="And remember 7.")
    stored_input = client.responses.input_items.list(first.id)
    kept = resource["output"][:-1]
    assert [message["content"][0]["text"] for message in kept] == ["Remember the number 42.", "And remember 7."]
    assert kept[0]["id"] == stored_input.data[0].id, "stored items keep their ids"
    again = client.responses.create(model="cohere", input=[*resource["output"], {"role": "user", "content": "Sum?"}])
    assert again.output_text == "Echo: Sum?"


def test_compaction_items_not_issued_to_the_team_are_refused(client: OpenAI, api: Api, api_b: Api) -> None:
    item = compact(client, model="openai_responses", input="Keep this between us.")["output"][-1]
    token = item["encrypted_content"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    cases = [
        (api, {"type": "compaction", "encrypted_content": "gAAAAABfromanotherserver"}, "another server"),
        (api, {**item, "encrypted_content": forged}, "altered"),
        (api_b, item, "this team"),
    ]
    for caller, compaction, says in cases:
        for model in ("openai_responses", "anthropic"):
            error = caller.create({"model": model, "input": [compaction, {"role": "user", "content": "hi"}]},
                                  expect=400)["error"]
            assert (error["code"], error["param"]) == ("invalid_encrypted_content", "input[0].encrypted_content")
            assert says in error["message"], error


def test_compact_needs_a_model_and_a_conversation(client: OpenAI, api: Api) -> None:
    missing_model = compact_error(api, {"input": CONVERSATION})
    assert (missing_model["param"], missing_model["code"]) == ("model", "missing_required_parameter")
    nothing = compact_error(api, {"model": "openai_responses"})
    assert nothing["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        client.responses.compact(model="openai_responses", previous_response_id="resp_missing")
