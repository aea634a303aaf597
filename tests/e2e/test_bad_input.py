"""Bad input gets a clear error in the envelope with the right status and ``param``; never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Api
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve
from tests.spec_validation import validate_error_body

MAX_BODY = 12 * 1024 * 1024
FN = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with serve(gateway_settings(url, max_body_bytes=MAX_BODY)) as gateway:
        yield gateway


def _error(api: Api, body: Any, status: int = 400, **kw: Any) -> dict[str, Any]:
    reply = api.http.post("/v1/responses", json=body, **kw) if not isinstance(body, bytes | str) else \
        api.http.post("/v1/responses", content=body, **kw)
    assert reply.status_code == status, reply.text
    data = reply.json()
    validate_error_body(data)
    assert reply.headers["x-should-retry"] == "false"
    assert reply.headers["x-request-id"].startswith("req_")
    return data["error"]


RULES = [
    # (request fields, expected param, expected code)
    ({"max_output_tokens": 15}, "max_output_tokens", "invalid_value"),
    ({"max_tool_calls": 0}, "max_tool_calls", "invalid_value"),
    ({"top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"top_logprobs": -1}, "top_logprobs", "invalid_value"),
    ({"temperature": 2.5}, "temperature", "invalid_value"),
    ({"top_p": 1.5}, "top_p", "invalid_value"),
    ({"presence_penalty": 3}, "presence_penalty", "invalid_value"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
    ({"metadata": {"k" * 65: "v"}}, "metadata", "invalid_value"),
    ({"metadata": {"k": "v" * 513}}, "metadata", "invalid_value"),
    ({"metadata": {"k": 1}}, "metadata", "invalid_value"),
    ({"safety_identifier": "s" * 65}, "safety_identifier", "invalid_value"),
    ({"prompt_cache_key": "p" * 65}, "prompt_cache_key", "invalid_value"),
    ({"truncation": "sometimes"}, "truncation", "invalid_value"),
    ({"service_tier": "scale"}, "service_tier", "invalid_value"),
    ({"include": ["everything"]}, "include[0]", "invalid_value"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
    ({"reasoning": {"summary": "long"}}, "reasoning.summary", "invalid_value"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity", "invalid_value"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
    ({"stream": "yes"}, "stream", "invalid_value"),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name", "invalid_value"),
    ({"tools": [{"type": "function", "name": "n" * 65}]}, "tools[0].name", "invalid_value"),
    ({"tools": [FN, FN]}, "tools[1].name", "duplicate_tool_name"),
    ({"tools": [FN], "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    ({"tools": [FN], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice.name", "invalid_value"),
    ({"tools": [FN], "tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice.tools", "invalid_value"),
    ({"input": [{"type": "function_call", "call_id": "c" * 65, "name": "f", "arguments": "{}"}]},
     "input[0].call_id", "invalid_value"),
    ({"input": [{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}]},
     "input[0].call_id", "invalid_value"),
    ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0]", "invalid_value"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio", "data": "x"}]}]},
     "input[0].content[0].type", "invalid_value"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "detail": "huge"}]}]},
     "input[0].content[0].detail", "invalid_value"),
    ({"input": [{"content": "no role or type"}]}, "input[0].type", "missing_required_parameter"),
    ({"input": ["just a string"]}, "input[0]", "invalid_type"),
    ({"input": 42}, "input", "invalid_type"),
    ({"model": None}, "model", "missing_required_parameter"),
]


@pytest.mark.parametrize(("fields", "param", "code"), RULES, ids=[f"{r[1]}-{i}" for i, r in enumerate(RULES)])
def test_validation_rule(api: Api, fields: dict[str, Any], param: str, code: str) -> None:
    error = _error(api, {"model": "sim", "input": "hi", **fields})
    assert error["param"] == param, error
    assert error["code"] == code, error
    assert error["type"] == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in error["message"] or error["message"]


def test_output_item_types_in_input_are_accepted_where_valid(api: Api) -> None:
    api.create({"model": "sim", "input": [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "id": "msg_client", "status": "completed",
         "content": [{"type": "output_text", "text": "yo", "annotations": [], "logprobs": []}]},
        {"type": "reasoning", "id": "rs_x", "summary": [], "content": None, "encrypted_content": "opaque"},
        {"role": "user", "content": "again"},
    ], "include": [], "client_metadata": {"x": 1}, "conversation": None, "user": "u1"})


def test_malformed_json(api: Api) -> None:
    error = _error(api, b'{"model": "sim", "input": ', headers={"content-type": "application/json"})
    assert error["code"] == "invalid_json"


def test_body_not_an_object(api: Api) -> None:
    assert _error(api, b"[1, 2]", headers={"content-type": "application/json"})["code"] == "invalid_json"


def test_wrong_content_type(api: Api) -> None:
    error = _error(api, "model=sim&input=hi", 415, headers={"content-type": "application/x-www-form-urlencoded"})
    assert error["code"] == "unsupported_media_type"


def test_body_too_large_is_refused_before_decoding(api: Api) -> None:
    error = _error(api, b"{" + b" " * (MAX_BODY + 10) + b"}", 413, headers={"content-type": "application/json"})
    assert error["code"] == "payload_too_large"


def test_string_over_ten_mib_is_refused(api: Api) -> None:
    error = _error(api, {"model": "sim", "input": "x" * (10 * 1024 * 1024 + 1)})
    assert error["param"] == "input"


def test_unknown_model(api: Api) -> None:
    error = _error(api, {"model": "gpt-9", "input": "hi"}, 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_model_without_responses_endpoint(api: Api) -> None:
    error = _error(api, {"model": "embed-only", "input": "hi"})
    assert error["code"] == "unsupported_endpoint" and "/v1/embeddings" in error["message"]


def test_unknown_item_type_is_refused_by_chat_dialect(api: Api) -> None:
    error = _error(api, {"model": "sim-chat", "input": [{"role": "user", "content": "hi"},
                                                        {"type": "computer_call", "call_id": "c", "action": {}}]})
    assert error["param"] == "input[1]" and "computer_call" in error["message"]


def test_unknown_tool_type_is_refused_by_chat_dialect(api: Api) -> None:
    error = _error(api, {"model": "sim-chat", "input": "hi", "tools": [FN, {"type": "code_interpreter"}]})
    assert error["param"] == "tools[1]" and "code_interpreter" in error["message"]


def test_unknown_previous_response(api: Api) -> None:
    error = _error(api, {"model": "sim", "input": "hi", "previous_response_id": "resp_nope"}, 404)
    assert error["code"] == "previous_response_not_found" and error["param"] == "previous_response_id"


def test_unknown_item_reference(api: Api) -> None:
    error = _error(api, {"model": "sim", "input": [{"type": "item_reference", "id": "msg_nope"}]}, 404)
    assert error["param"] == "input[0].id"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer"])
def test_authentication_required(running: RunningGateway, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [("POST", "/v1/responses"), ("GET", "/v1/responses/resp_x"), ("DELETE", "/v1/responses/x"),
                         ("GET", "/v1/responses/x/input_items"), ("GET", "/v1/models")]:
        reply = httpx.request(method, running.base_url + path, headers=headers, json={"model": "sim", "input": "x"})
        assert reply.status_code == 401, (method, path, reply.text)
        validate_error_body(reply.json())
        assert reply.json()["error"]["type"] == "authentication_error"
        assert "wrong-key" not in reply.text


@pytest.mark.parametrize(("query", "param"), [({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
                                               ({"order": "up"}, "order")])
def test_input_items_query_validation(api: Api, query: dict[str, str], param: str) -> None:
    created = api.create({"model": "sim", "input": "hi"})
    error = api.get(f"/v1/responses/{created['id']}/input_items", params=query, expect=400)
    assert error["error"]["param"] == param


def test_unknown_route_and_method(api: Api) -> None:
    missing = api.get("/v1/nothing", expect=404)
    assert missing["error"]["type"] == "not_found_error"
    reply = api.http.put("/v1/responses")
    assert reply.status_code == 405
    validate_error_body(reply.json())


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD"])
def test_create_route_refuses_other_methods(api: Api, method: str) -> None:
    """``/v1/responses`` is a plain ASGI route serving POST and the WebSocket upgrade: any other
    method is the envelope's 405 with what is allowed, and the reply carries its request id."""
    reply = api.http.request(method, "/v1/responses")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST, OPTIONS"
    assert reply.headers["x-request-id"].startswith("req_")
    if method != "HEAD":
        error = reply.json()
        validate_error_body(error)
        assert error["error"]["code"] == "method_not_allowed"


def test_create_route_answers_options(api: Api) -> None:
    reply = api.http.options("/v1/responses")
    assert reply.status_code == 204
    assert reply.headers["allow"] == "POST, OPTIONS"
    assert reply.content == b""


def test_accept_header_does_not_choose_sse(api: Api) -> None:
    reply = api.http.post("/v1/responses", json={"model": "sim", "input": "hi", "stream": True},
                          headers={"Accept": "application/json"})
    assert reply.headers["content-type"].startswith("text/event-stream")
    reply = api.http.post("/v1/responses", json={"model": "sim", "input": "hi"},
                          headers={"Accept": "text/event-stream"})
    assert reply.headers["content-type"].startswith("application/json")


def test_keys_are_checked_per_team(running: RunningGateway) -> None:
    assert httpx.get(running.base_url + "/v1/models",
                     headers={"Authorization": f"Bearer {TEAM_A_KEY}"}).status_code == 200
