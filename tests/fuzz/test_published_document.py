"""``GET /openapi.json``: served to anyone, valid OpenAPI 3.1, naming every route the app serves,
and saying what the gateway accepts where it departs from the spec (docs/deviations.md)."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
import schemathesis
from litestar.routes import ASGIRoute, HTTPRoute, WebSocketRoute

from proxy.openapi import build_document
from proxy.openapi.document import SPEC_PATH
from tests.fuzz.conftest import document_validator
from tests.gateway_server import TEAM_A_KEY, RunningGateway
from tests.spec_validation import SPEC_PATH as SHARED_SPEC_PATH
from tests.spec_validation import validate_error_body

_NOT_DOCUMENTED = {"OPTIONS", "HEAD"}
"""Methods Litestar answers on every route by itself."""


def test_served_to_anyone_as_built(fuzzed: RunningGateway) -> None:
    reply = httpx.get(fuzzed.base_url + "/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == json.loads(json.dumps(build_document()))


def test_valid_openapi_3_1() -> None:
    document = build_document()
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()


def test_names_every_route_the_app_serves(fuzzed: RunningGateway) -> None:
    served = {(method, route.path_format) for route in fuzzed.app.routes if isinstance(route, HTTPRoute)
              for method in route.methods - _NOT_DOCUMENTED}
    # A plain ASGI route (``/v1/responses``) names what it serves in its handler's ``opt``.
    asgi_routes = [route for route in fuzzed.app.routes if isinstance(route, ASGIRoute)]
    served |= {(method, route.path_format) for route in asgi_routes
               for method in route.route_handler.opt["http_methods"]}
    paths = build_document()["paths"]
    documented = {(method.upper(), path) for path, item in paths.items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert documented == served
    websockets = {route.path_format for route in fuzzed.app.routes if isinstance(route, WebSocketRoute)}
    websockets |= {route.path_format for route in asgi_routes if route.route_handler.opt["websocket"]}
    assert websockets == {path for path, item in paths.items() if "x-openresponses-websocket" in item}


def test_every_reference_resolves() -> None:
    document = build_document()

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in refs(value)]
        return []

    for ref in set(refs(document)):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref


def test_vendored_spec_is_the_shared_one() -> None:
    assert json.loads(SPEC_PATH.read_text()) == json.loads(SHARED_SPEC_PATH.read_text())


# (fields beside "input": "hi", what the document and the gateway both say): each row of
# docs/deviations.md that touches a request body, and a spec-valid body the gateway refuses.
DEPARTURES = [
    ({"input": [{"role": "user", "content": "typeless message"}]}, True),
    ({"input": [{"type": "custom_tool_call_output", "call_id": "c", "output": "x"}]}, True),
    ({"tools": [{"name": "typeless_function"}]}, True),
    ({"tools": [{"type": "custom", "name": "apply_patch"}]}, True),
    ({"tools": [{"type": "custom", "name": "apply_patch"}], "tool_choice": {"type": "custom", "name": "apply_patch"}},
     True),
    ({"reasoning": {"effort": "minimal"}}, True),
    ({"include": ["web_search_call.results"]}, True),
    ({"text": {"format": {"type": "json_object"}}}, True),
    ({"temperature": 2.5}, False),
    ({"metadata": {"k" * 65: "v"}}, False),
    ({"model": None}, False),
    ({"text": {"format": {}}}, False),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": None, "detail": None}]}]}, False),
    ({"include": ["everything"]}, False),
]


@pytest.mark.parametrize(("fields", "accepted"), DEPARTURES, ids=[str(i) for i in range(len(DEPARTURES))])
def test_document_says_what_the_gateway_accepts(fuzzed: RunningGateway, fields: dict[str, Any],
                                                accepted: bool) -> None:
    body = {"model": "sim", "input": "hi", **fields}
    assert document_validator("CreateResponseBody").is_valid(body) is accepted
    reply = httpx.post(fuzzed.base_url + "/v1/responses", json=body, headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
                       timeout=30)
    if accepted:
        assert reply.status_code == 200, reply.text
        # Against the document, not the bare spec: the reply echoes departures (``minimal``).
        document_validator("ResponseResource").validate(reply.json())
    else:
        assert reply.status_code == 400, reply.text
        validate_error_body(reply.json())


# (input items as a client sends them, each as ``input_items`` must list it): shapes the gateway
# accepts that the output schemas do not (a free-form status, nulls, string content), beside what
# must survive the listing unchanged (client ids, valid statuses, phase, file ids).
_GIVEN_ID = ANY
LISTED_INPUTS = {
    "free-form status, null and empty file fields": (
        [{"role": "user", "status": "as the client likes",
          "content": [{"type": "input_file", "filename": None, "file_data": "", "file_url": ""}]}],
        [{"type": "message", "id": _GIVEN_ID, "status": "completed", "role": "user",
          "content": [{"type": "input_file", "file_data": "", "file_url": ""}]}]),
    "the client's id and status stay, a null phase goes": (
        [{"type": "message", "id": "msg_client-1", "role": "assistant", "status": "incomplete", "phase": None,
          "content": "half an answer"},
         {"role": "system", "status": "", "content": "be brief"}],
        [{"type": "message", "id": "msg_client-1", "status": "incomplete", "role": "assistant",
          "content": [{"type": "output_text", "text": "half an answer", "annotations": []}]},
         {"type": "message", "id": _GIVEN_ID, "status": "completed", "role": "system",
          "content": [{"type": "input_text", "text": "be brief"}]}]),
    "null id and status, a phase and logprobs replayed": (
        [{"role": "assistant", "id": None, "status": None, "phase": "final_answer",
          "content": [{"type": "output_text", "text": "done", "annotations": [], "logprobs": []}]}],
        [{"type": "message", "id": _GIVEN_ID, "status": "completed", "role": "assistant", "phase": "final_answer",
          "content": [{"type": "output_text", "text": "done", "annotations": [], "logprobs": []}]}]),
    "image without detail, file by id with null fields": (
        [{"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            {"type": "input_file", "file_id": "file-1", "filename": None, "file_data": None, "file_url": None}]}],
        [{"type": "message", "id": _GIVEN_ID, "status": "completed", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
            {"type": "input_file", "file_id": "file-1"}]}]),
    "a tool round replayed without ids or statuses": (
        [{"type": "function_call", "id": None, "status": None, "call_id": "call_1", "name": "lookup",
          "arguments": "{}"},
         {"type": "function_call_output", "call_id": "call_1", "status": None, "output": [
             {"type": "input_text", "text": "found"},
             {"type": "input_file", "filename": "a.txt", "file_data": "data:text/plain;base64,aGk=",
              "file_url": None}]}],
        [{"type": "function_call", "id": _GIVEN_ID, "status": "completed", "call_id": "call_1", "name": "lookup",
          "arguments": "{}"},
         {"type": "function_call_output", "id": _GIVEN_ID, "status": "completed", "call_id": "call_1", "output": [
             {"type": "input_text", "text": "found"},
             {"type": "input_file", "filename": "a.txt", "file_data": "data:text/plain;base64,aGk="}]}]),
    "reasoning replayed as Codex does, with null content": (
        [{"type": "reasoning", "id": "rs_client", "summary": [{"type": "summary_text", "text": "thought"}],
          "content": None, "encrypted_content": None, "status": None}],
        [{"type": "reasoning", "id": "rs_client", "summary": [{"type": "summary_text", "text": "thought"}]}]),
    "an item type outside the core, without id": (
        [{"type": "custom_tool_call_output", "call_id": "c", "output": "x"}],
        [{"type": "custom_tool_call_output", "id": _GIVEN_ID, "call_id": "c", "output": "x"}]),
    "a tool's video output (docs/deviations.md)": (
        [{"type": "function_call_output", "call_id": "call_v", "output": [
            {"type": "input_video", "video_url": "data:video/mp4;base64,AAAA"}]}],
        [{"type": "function_call_output", "id": _GIVEN_ID, "status": "completed", "call_id": "call_v",
          "output": [{"type": "input_video", "video_url": "data:video/mp4;base64,AAAA"}]}]),
}


@pytest.mark.parametrize(("sent", "listed"), LISTED_INPUTS.values(), ids=LISTED_INPUTS.keys())
def test_listed_input_items_match_the_spec(fuzzed: RunningGateway, sent: list[dict[str, Any]],
                                           listed: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {TEAM_A_KEY}"}
    reply = httpx.post(fuzzed.base_url + "/v1/responses", headers=headers, json={"model": "sim", "input": sent},
                       timeout=30)
    assert reply.status_code == 200, reply.text
    page = httpx.get(f"{fuzzed.base_url}/v1/responses/{reply.json()['id']}/input_items", headers=headers,
                     params={"order": "asc"}).json()
    document_validator("ItemList").validate(page)
    assert page["data"] == listed


@pytest.mark.parametrize(("sent", "listed"), LISTED_INPUTS.values(), ids=LISTED_INPUTS.keys())
def test_compaction_keeps_user_messages_as_listed(fuzzed: RunningGateway, sent: list[dict[str, Any]],
                                                  listed: list[dict[str, Any]]) -> None:
    reply = httpx.post(fuzzed.base_url + "/v1/responses/compact", headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
                       json={"model": "sim", "input": sent}, timeout=30)
    assert reply.status_code == 200, reply.text
    compacted = reply.json()
    document_validator("CompactResource").validate(compacted)
    *kept, sealed = compacted["output"]
    assert kept == [item for item in listed if item["type"] == "message" and item["role"] == "user"]
    assert sealed["type"] == "compaction"
