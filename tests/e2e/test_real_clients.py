"""Every request captured from real clients (openai SDK, Agents SDK, Codex, AI SDK, LangChain) is
replayed against the gateway and must get a spec-valid reply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.schema.content import OutputText, SummaryText
from proxy.schema.items import Message, Reasoning
from proxy.schema.response import ResponseResource
from proxy.store import open_store
from tests.conftest import Api
from tests.gateway_server import RunningGateway
from tests.spec_validation import SHARED, parse_sse, validate_error_body, validate_resource, validate_stream

CLIENTS = SHARED / "fixtures" / "clients"
# Non-core OpenAI types these clients send and an OpenAI upstream answers with.
OPAQUE = frozenset({"custom_tool_call", "web_search_call", "tool_search_call"})


def _records() -> list[tuple[str, dict[str, Any]]]:
    records = []
    for path in sorted(CLIENTS.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines()):
            record = json.loads(line)
            if record["method"] == "WS" or "upgrade" in {k.lower() for k in record.get("headers", {})}:
                continue
            if record["method"] == "POST" and not isinstance(record.get("body"), dict):
                continue  # compact probe logs: their bodies equal the full recordings beside them
            records.append((f"{path.stem}:{number}", record))
    return records


RECORDS = _records()
# Codex's flow (custom tools, store:false, encrypted reasoning) must also work on a dialect
# without OpenAI's extended types: replay its requests through the Chat Completions dialect too.
CASES = [(name, record, "sim") for name, record in RECORDS] + [
    (name, record, "sim-chat") for name, record in RECORDS
    if name.startswith("codex") and record["method"] == "POST" and record["path"] == "/v1/responses"]


def _seed_referenced_items(running: RunningGateway, team: str, body: dict[str, Any]) -> None:
    """Store the items a captured request refers to, as the earlier turn of that client did."""
    wanted = [item["id"] for item in body.get("input") or [] if isinstance(item, dict)
              and item.get("type") == "item_reference"]
    if not wanted:
        return
    items: list[Any] = []
    for ident in wanted:
        if ident.startswith("rs_"):
            items.append(Reasoning(id=ident, summary=[SummaryText(text="thinking")], status="completed"))
        else:
            items.append(Message(id=ident, role="assistant", status="completed",
                                 content=[OutputText(text="an earlier answer")]))
    settings = running.settings

    async def save() -> None:
        store = open_store(settings.store, prefix=settings.store_prefix)
        await store.start()
        try:
            resource = ResponseResource(id=f"resp_seed_{wanted[0]}", created_at=0, model="sim",
                                        status="completed", output=items)
            await store.save("team-a", resource, [])
        finally:
            await store.close()

    asyncio.run(save())


@pytest.fixture
def created_id(api: Api) -> Iterator[str]:
    yield api.create({"model": "sim", "input": "an earlier turn"})["id"]


@pytest.mark.parametrize(("name", "record", "model"), CASES, ids=[f"{name}-{model}" for name, _, model in CASES])
def test_captured_request_gets_valid_reply(running: RunningGateway, api: Api, created_id: str, name: str,
                                           record: dict[str, Any], model: str) -> None:
    method, path = record["method"], record["path"]
    body = record.get("body")
    if path.startswith("/v1/responses/resp_"):
        path = path.replace(path.split("/")[3], created_id)
    if method == "POST" and path == "/v1/responses":
        assert isinstance(body, dict)
        body = {**body, "model": model}
        if body.get("previous_response_id"):
            body["previous_response_id"] = created_id
        _seed_referenced_items(running, "team-a", body)
        reply = api.http.post(path, json=body)
        assert reply.status_code == 200, reply.text
        if body.get("stream"):
            events, saw_done = parse_sse(reply.text)
            assert saw_done
            validate_stream(events, opaque_types=OPAQUE)
        else:
            validate_resource(reply.json(), opaque_types=OPAQUE)
        return
    reply = api.http.request(method, path, params=record.get("query") or None,
                             json=body if isinstance(body, dict) else None)
    if reply.status_code >= 400:
        # Endpoints not implemented yet must still answer with a clean envelope, never a 5xx.
        assert reply.status_code < 500, reply.text
        validate_error_body(reply.json())
        return
    data = reply.json()
    if path.endswith("/input_items"):
        assert data["object"] == "list"
    elif method == "DELETE":
        assert data["deleted"] is True
    else:
        validate_resource(data)


def test_every_client_is_covered() -> None:
    clients = {name.split(":")[0].split("-")[0] for name, _ in RECORDS}
    assert clients >= {"openai", "codex", "ai", "langchain"}
    assert Path(CLIENTS / "openai-agents.jsonl").exists()
