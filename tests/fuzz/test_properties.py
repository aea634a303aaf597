"""Properties of the decoding layer and of the live gateway under hostile bodies: a body is
decoded or refused with a 400 naming why, never anything else; through the gateway, no 5xx and
every error in the envelope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.decoding import ResponseRequest, decode_create_request
from proxy.errors import InvalidRequest
from proxy.schema.items import ItemReference
from proxy.schema.request import FunctionTool
from tests.fuzz.conftest import ADMIN_KEY, FUZZ_SETTINGS, document_validator
from tests.fuzz.strategies import bodies, nested_body, raw_bodies
from tests.gateway_server import TEAM_A_KEY, RunningGateway
from tests.spec_validation import validate_error_body

FUNCTION = {"type": "function", "name": "f"}


@FUZZ_SETTINGS
@given(raw=raw_bodies)
def test_decoding_reads_or_refuses_with_a_400(raw: bytes) -> None:
    try:
        request = decode_create_request(raw)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.message
        assert exc.param is None or isinstance(exc.param, str)
    else:
        assert isinstance(request, ResponseRequest) and request.size == len(raw)


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("where", ["input", "tools", "unknown", "metadata"])
def test_deep_nesting_is_a_400(depth: int, where: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_create_request(nested_body(depth, where))
    assert refused.value.code == "invalid_json" and "nested too deeply" in refused.value.message


@pytest.mark.parametrize("damage", [b"\xff", b"\xc3(", b"\xed\xa0\x80"])
def test_a_string_that_is_not_utf8_is_a_400(damage: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_create_request(b'{"model": "sim", "input": "' + damage + b'"}')
    assert refused.value.code == "invalid_json" and "UTF-8" in refused.value.message


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "sim", "input": "hi", "max_output_tokens": 1' + b"0" * 5000 + b"}", "max_output_tokens"),
    (b'{"model": "sim", "input": "hi", "temperature": 1e999}', "temperature"),
])
def test_a_number_no_type_holds_is_a_400_naming_its_field(raw: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_create_request(raw)
    assert refused.value.param == param


def test_malformed_after_a_wrong_type_is_a_400() -> None:
    """The typed decoder stops at the wrong type; the lenient one then meets the malformed rest."""
    with pytest.raises(InvalidRequest) as refused:
        decode_create_request(b'{"model": 5, "input": ')
    assert refused.value.code == "invalid_json"


def test_a_reference_whose_type_is_null_is_a_reference() -> None:
    """The spec's ``ItemReferenceParam`` allows ``"type": null``; it was refused for having no type."""
    request = decode_create_request(b'{"model": "sim", "input": [{"type": null, "id": "msg_1"}]}')
    assert request.input == [ItemReference(id="msg_1")]


@pytest.mark.parametrize("choice", [{"type": None}, {}, {"name": "f"}])
def test_a_tool_choice_without_a_type_is_a_400(choice: dict[str, Any]) -> None:
    """It was taken for a hosted-tool choice and echoed as ``{"type": null}``, against the spec."""
    with pytest.raises(InvalidRequest) as refused:
        decode_create_request(json.dumps({"model": "sim", "tools": [FUNCTION], "tool_choice": choice}).encode())
    assert refused.value.param in ("tool_choice", "tool_choice.type")


def test_a_tool_whose_type_is_null_is_a_function() -> None:
    request = decode_create_request(b'{"model": "sim", "tools": [{"type": null, "name": "f"}]}')
    assert request.tools == [FunctionTool(name="f")]


@pytest.fixture(scope="module")
def team(fuzzed: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.base_url, headers={"Authorization": f"Bearer {TEAM_A_KEY}",
                                                          "Content-Type": "application/json"}, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def admin(fuzzed: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                      timeout=30) as client:
        yield client


def _answered(reply: httpx.Response) -> Any:
    assert reply.status_code < 500, reply.text
    assert reply.headers["content-type"] == "application/json", reply.headers
    data = reply.json()
    if reply.status_code >= 400:
        validate_error_body(data)
    return data


_ENDPOINTS = ["/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact"]
_SYNCHRONOUS = {"stream": False, "background": False}
"""Streams and background jobs are schemathesis's; here every reply is one JSON body."""


@FUZZ_SETTINGS
@given(raw=raw_bodies, endpoint=st.sampled_from(_ENDPOINTS))
def test_any_bytes_through_the_gateway(team: httpx.Client, raw: bytes, endpoint: str) -> None:
    _answered(team.post(endpoint, content=raw.replace(b'"stream"', b'"_stream"').replace(b'"background"', b'"_bg"')))


@FUZZ_SETTINGS
@given(body=bodies)
def test_any_fields_create_a_valid_response_or_a_400(team: httpx.Client, body: dict[str, Any]) -> None:
    data = _answered(team.post("/v1/responses", json={**body, **_SYNCHRONOUS}))
    if "error" not in data:
        document_validator("ResponseResource").validate(data)


@FUZZ_SETTINGS
@given(body=bodies)
def test_any_request_is_explained(admin: httpx.Client, body: dict[str, Any]) -> None:
    data = _answered(admin.post("/v1/policy/explain", json={"team": "team-a", "request": body}))
    assert "error" in data or data["team"] == "team-a"
