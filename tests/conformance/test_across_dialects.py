"""Conversations that move between providers, and Codex's flow on every dialect.

A ``previous_response_id`` chain created on one provider continues on another and back; tool
call ids stay stable across the move. Codex's captured requests (custom tools, ``store: false``,
replayed reasoning, client-made ids) are replayed against every dialect through the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conformance.test_dialects_e2e import DIALECTS, WEATHER
from tests.conftest import Api
from tests.gateway_server import RunningGateway, gateway_settings, serve
from tests.spec_validation import SHARED, parse_sse, validate_resource, validate_stream

CODEX = [json.loads(line) for name in ("codex-exec", "codex-apply-patch-resume", "codex-unknown-model")
         for line in (SHARED / "fixtures" / "clients" / f"{name}.jsonl").read_text().splitlines()]
CODEX_POSTS = [record["body"] for record in CODEX
               if record["method"] == "POST" and isinstance(record.get("body"), dict)]
OPAQUE = frozenset({"custom_tool_call", "web_search_call", "tool_search_call"})
NAMES = [dialect.name for dialect in DIALECTS]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    providers = {d.name: {"dialect": d.name, "base_url": d.base_url, **d.extra} for d in DIALECTS}
    models = {name: {"deployments": [{"provider": name, "model": "sim-model"}]} for name in providers}
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with serve(gateway_settings(url, providers=providers, models=models)) as gateway:
        yield gateway


def _text(resource: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in resource["output"] if item["type"] == "message"
                   for part in item["content"])


@pytest.mark.parametrize("route", [NAMES, list(reversed(NAMES))], ids=["forward", "backward"])
def test_conversation_moves_between_providers(api: Api, upstream_log: Any, route: list[str]) -> None:
    first = api.create({"model": route[0], "input": "Weather in Lima", "tools": [WEATHER]})
    call = first["output"][-1]
    assert call["type"] == "function_call"
    answered = api.create({"model": route[1], "previous_response_id": first["id"], "tools": [WEATHER],
                           "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "mild"}]})
    assert _text(answered) == "Tool said: mild"
    assert call["call_id"] in json.dumps(upstream_log()[-1]["body"]) or route[1] == "openai_chat", \
        "the call id the client saw is the one the next provider gets (unless the dialect must rewrite it)"
    previous = answered["id"]
    for turn, model in enumerate(route[2:], start=1):
        reply = api.create({"model": model, "previous_response_id": previous, "input": f"question {turn}"})
        assert _text(reply) == f"Echo: question {turn}", model
        previous = reply["id"]
    items = api.get(f"/v1/responses/{previous}/input_items", params={"order": "asc", "limit": 100})["data"]
    assert [i["type"] for i in items][:3] == ["message", "function_call", "function_call_output"]
    assert items[1]["call_id"] == call["call_id"]


@pytest.mark.parametrize("dialect", NAMES)
@pytest.mark.parametrize("number", range(len(CODEX_POSTS)))
def test_codex_requests_on_every_dialect(running: RunningGateway, api: Api, dialect: str, number: int) -> None:
    body = {**CODEX_POSTS[number], "model": dialect}
    reply = httpx.post(running.base_url + "/v1/responses", json=body, timeout=30,
                       headers={"Authorization": api.http.headers["Authorization"]})
    assert reply.status_code == 200, reply.text
    if body.get("stream"):
        events, saw_done = parse_sse(reply.text)
        assert saw_done
        validate_stream(events, opaque_types=OPAQUE)
        output = events[-1]["response"]["output"]
    else:
        validate_resource(reply.json(), opaque_types=OPAQUE)
        output = reply.json()["output"]
    assert output, "Codex needs at least one item back"
    assert all(item["type"] in {"message", "function_call", "reasoning", *OPAQUE} for item in output)
