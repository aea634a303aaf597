"""The Responses API over real HTTP, both upstream dialects, both store backends."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.spec_validation import parse_sse, validate_stream

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}

dialects = pytest.mark.parametrize("model", ["sim", "sim-chat"])


def _text(resource: dict[str, Any]) -> str:
    return "".join(part["text"] for item in resource["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


@dialects
def test_create_returns_full_resource(api: Api, model: str) -> None:
    body = api.create({"model": model, "input": "Hello gateway", "metadata": {"k": "v"}, "temperature": 0.5})
    assert body["status"] == "completed"
    assert body["model"] == model
    assert _text(body) == "Echo: Hello gateway"
    assert body["metadata"] == {"k": "v"}
    assert body["temperature"] == 0.5
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"] > 0
    assert body["output"][0]["content"][0]["annotations"] == []
    assert body["id"].startswith("resp_")


@dialects
def test_stream_and_json_give_the_same_output(api: Api, model: str) -> None:
    events = api.stream({"model": model, "input": "Same either way"})
    final = events[-1]["response"]
    whole = api.create({"model": model, "input": "Same either way"})
    strip = lambda items: [{k: v for k, v in item.items() if k != "id"} for item in items]  # noqa: E731
    assert strip(final["output"]) == strip(whole["output"])
    assert events[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Echo: Same either way" == _text(final)


@dialects
def test_function_call_round_trip_with_previous_response_id(api: Api, model: str) -> None:
    first = api.create({"model": model, "input": "Weather in Oslo?", "tools": [WEATHER_TOOL]})
    call = first["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert call["status"] == "completed"
    second = api.create({"model": model, "previous_response_id": first["id"], "tools": [WEATHER_TOOL],
                         "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]})
    assert _text(second) == "Tool said: sunny"
    assert second["previous_response_id"] == first["id"]


@dialects
def test_streamed_function_call(api: Api, model: str) -> None:
    events = api.stream({"model": model, "input": "Weather?", "tools": [WEATHER_TOOL]})
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    item = [e for e in events if e["type"] == "response.output_item.done"][-1]["item"]
    assert item["arguments"] == done["arguments"] and item["type"] == "function_call"


def test_previous_response_id_sends_history_without_instructions(api: Api, upstream_log: Any) -> None:
    first = api.create({"model": "sim", "input": "first question", "instructions": "be brief"})
    second = api.create({"model": "sim", "input": "second question", "previous_response_id": first["id"]})
    assert second["instructions"] is None
    sent = upstream_log()[-1]["body"]
    assert "instructions" not in sent
    assert "previous_response_id" not in sent
    roles = [(item.get("type"), item.get("role")) for item in sent["input"]]
    assert roles == [("message", "user"), ("message", "assistant"), ("message", "user")]
    assert sent["input"][1]["content"][0]["text"] == "Echo: first question"
    assert _text(second) == "Echo: second question"


def test_client_authorization_is_never_forwarded(api: Api, upstream_log: Any) -> None:
    api.create({"model": "sim", "input": "hi"})
    api.create({"model": "sim-chat", "input": "hi"})
    for request in upstream_log():
        assert "authorization" not in request["headers"], request["headers"]
        assert "sk-test" not in str(request)


def test_retrieve_delete_and_input_items(api: Api) -> None:
    created = api.create({"model": "sim", "input": [
        {"role": "user", "content": "one"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "two"}]},
        {"role": "user", "content": "three"},
    ]})
    fetched = api.get(f"/v1/responses/{created['id']}")
    assert fetched == created
    listing = api.get(f"/v1/responses/{created['id']}/input_items", params={"order": "asc"})
    assert listing["object"] == "list" and len(listing["data"]) == 3 and not listing["has_more"]
    assert all(item["id"] for item in listing["data"])
    first_two = api.get(f"/v1/responses/{created['id']}/input_items", params={"order": "asc", "limit": 2})
    assert first_two["has_more"] and first_two["last_id"] == listing["data"][1]["id"]
    rest = api.get(f"/v1/responses/{created['id']}/input_items",
                   params={"order": "asc", "after": first_two["last_id"]})
    assert [i["id"] for i in rest["data"]] == [listing["data"][2]["id"]]
    newest_first = api.get(f"/v1/responses/{created['id']}/input_items")
    assert [i["id"] for i in newest_first["data"]] == [i["id"] for i in reversed(listing["data"])]
    deleted = api.delete(f"/v1/responses/{created['id']}")
    assert deleted == {"id": created["id"], "object": "response.deleted", "deleted": True}
    api.get(f"/v1/responses/{created['id']}", expect=404)
    api.delete(f"/v1/responses/{created['id']}", expect=404)


def test_store_false_is_not_retrievable(api: Api) -> None:
    created = api.create({"model": "sim", "input": "secret", "store": False})
    assert created["store"] is False
    api.get(f"/v1/responses/{created['id']}", expect=404)
    api.create({"model": "sim", "input": "x", "previous_response_id": created["id"]}, expect=404)


def test_teams_cannot_see_each_other(api: Api, api_b: Api) -> None:
    created = api.create({"model": "sim", "input": "team a only"})
    rid = created["id"]
    item_id = created["output"][0]["id"]
    for path in (f"/v1/responses/{rid}", f"/v1/responses/{rid}/input_items"):
        error = api_b.get(path, expect=404)
        assert "team a only" not in str(error)
    api_b.delete(f"/v1/responses/{rid}", expect=404)
    api_b.create({"model": "sim", "input": "x", "previous_response_id": rid}, expect=404)
    api_b.create({"model": "sim", "input": [{"type": "item_reference", "id": item_id}]}, expect=404)
    assert api.get(f"/v1/responses/{rid}")["id"] == rid


def test_item_reference_resolves_from_store(api: Api, upstream_log: Any) -> None:
    created = api.create({"model": "sim", "input": "remember me"})
    message_id = created["output"][0]["id"]
    api.create({"model": "sim", "input": [{"role": "user", "content": "q"},
                                          {"type": "item_reference", "id": message_id},
                                          {"role": "user", "content": "again"}]})
    sent = upstream_log()[-1]["body"]["input"]
    assert sent[1]["type"] == "message" and sent[1]["content"][0]["text"] == "Echo: remember me"


def test_incomplete_when_max_output_tokens_is_hit(api: Api) -> None:
    body = api.create({"model": "sim", "input": " ".join(["word"] * 40), "max_output_tokens": 16})
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][-1]["status"] == "incomplete"
    events = api.stream({"model": "sim-chat", "input": " ".join(["word"] * 40), "max_output_tokens": 16})
    assert events[-1]["type"] == "response.incomplete"


def test_models_endpoints(api: Api) -> None:
    models = api.get("/v1/models")
    ids = {m["id"]: m for m in models["data"]}
    assert set(ids) == {"sim", "sim-chat", "embed-only"}
    assert ids["sim"]["endpoints"] == ["/v1/responses"]
    assert api.get("/v1/models/embed-only")["endpoints"] == ["/v1/embeddings"]
    error = api.get("/v1/models/nope", expect=404)
    assert error["error"]["code"] == "model_not_found"


def test_health(api: Api) -> None:
    assert api.http.get("/healthz").status_code == 200
    assert api.http.get("/readyz").json() == {"status": "ready"}


def test_replies_do_not_name_the_server_software(api: Api) -> None:
    reply = api.http.post("/v1/responses", json={"model": "sim", "input": "who serves this?"})
    assert reply.status_code == 200 and "date" in reply.headers
    assert "server" not in reply.headers
    assert "server" not in api.http.get("/v1/models/nope").headers


def test_background_response_is_polled_to_completion(api: Api) -> None:
    import time

    queued = api.create({"model": "sim", "input": "later please", "background": True})
    assert queued["status"] == "queued" and queued["background"] is True
    deadline = time.monotonic() + 10
    while True:
        polled = api.get(f"/v1/responses/{queued['id']}")
        if polled["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert polled["status"] == "completed"
    assert _text(polled) == "Echo: later please"
    api.create({"model": "sim", "input": "x", "background": True, "store": False}, expect=400)


PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
              "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}


def test_custom_tool_round_trip_on_a_dialect_without_custom_tools(api: Api, upstream_log: Any) -> None:
    body = {"model": "sim-chat", "input": "fix the bug", "tools": [PATCH_TOOL, {"type": "web_search"}],
            "tool_choice": {"type": "custom", "name": "apply_patch"}, "store": False}
    reply = api.http.post("/v1/responses", json=body)
    assert reply.status_code == 200, reply.text
    output = reply.json()["output"]
    assert [item["type"] for item in output] == ["custom_tool_call"]
    call = output[0]
    assert call["name"] == "apply_patch" and call["input"] == "bug" and call["id"].startswith("ctc_")
    sent = upstream_log()[-1]["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["apply_patch"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}

    events = []
    stream = api.http.post("/v1/responses", json={**body, "stream": True})
    events, _ = parse_sse(stream.text)
    validate_stream(events, opaque_types=frozenset({"custom_tool_call"}))
    assert events[-1]["response"]["output"][0]["type"] == "custom_tool_call"

    follow = api.create({"model": "sim-chat", "tools": [PATCH_TOOL], "store": False, "input": [
        {"role": "user", "content": "fix the bug"}, call,
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Patch applied"}]})
    assert _text(follow) == "Tool said: Patch applied"
    history = upstream_log()[-1]["body"]["messages"]
    assert history[1]["tool_calls"][0]["function"] == {"name": "apply_patch", "arguments": '{"input":"bug"}'}
    assert history[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "Patch applied"}
