"""The lenient decoding of create bodies (``proxy.decoding``), which real clients' bodies take:
each item, tool and tool choice is decoded straight into its type and repaired only where a
client's shape needs it, and the result is what the repaired piece would decode to."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.decoding import decode_create_request
from proxy.errors import InvalidRequest
from proxy.schema.items import FunctionCall, ItemReference, Message, OpaqueItem
from proxy.schema.request import FunctionTool, SpecificFunction

OPAQUE_OUTPUT = {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"}


def _decoded(**fields: Any) -> Any:
    # An item of a type outside the core keeps every body on the lenient path.
    body = {"model": "m", **fields}
    body["input"] = [*body.get("input", []), OPAQUE_OUTPUT]
    request = decode_create_request(json.dumps(body).encode())
    assert request.input[-1] == OpaqueItem(OPAQUE_OUTPUT)
    return request


@pytest.mark.parametrize(("item", "expected"), [
    ({"role": "user", "content": "hi"}, Message(role="user", content="hi")),
    ({"content": "hi", "role": "assistant"}, Message(role="assistant", content="hi")),
    ({"type": "message", "role": "user", "content": "hi"}, Message(role="user", content="hi")),
    ({"role": "user", "type": "message", "content": "hi", "id": "msg_1"},
     Message(role="user", content="hi", id="msg_1")),
    ({"type": None, "role": "user", "content": "hi"}, Message(role="user", content="hi")),
    ({"id": "msg_1"}, ItemReference(id="msg_1")),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
     FunctionCall(call_id="c", name="f", arguments="{}")),
    ({"role": "user", "type": "web_search_call", "id": "ws"}, OpaqueItem({"role": "user", "type": "web_search_call",
                                                                         "id": "ws"})),
])
def test_each_item_decodes_to_what_its_repaired_form_is(item: dict[str, Any], expected: Any) -> None:
    assert _decoded(input=[item]).input[0] == expected


@pytest.mark.parametrize(("item", "param", "code"), [
    ({"content": "no role or type"}, "input[0].type", "missing_required_parameter"),
    ({"role": "user", "type": "", "content": "hi"}, "input[0].type", "invalid_type"),
    ({"role": "chef", "content": "hi"}, "input[0].role", "invalid_value"),
    ({"type": "message", "role": "user", "content": 5}, "input[0].content", "invalid_value"),
    ("just a string", "input[0]", "invalid_type"),
])
def test_an_item_no_repair_fixes_is_refused_naming_it(item: Any, param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _decoded(input=[item])
    assert (refused.value.param, refused.value.code) == (param, code)


def test_tools_and_the_tool_choice_decode_as_their_repaired_forms() -> None:
    request = _decoded(tools=[{"name": "f", "parameters": {"type": "object"}},
                              {"type": "function", "name": "g"},
                              {"type": "custom", "name": "apply_patch"}],
                       tool_choice={"type": "function", "name": "f"})
    assert request.tools[:2] == [FunctionTool(name="f", parameters={"type": "object"}), FunctionTool(name="g")]
    assert request.tools[2] == OpaqueItem({"type": "custom", "name": "apply_patch"})
    assert request.tool_choice == SpecificFunction(name="f")
    assert _decoded(tool_choice="required").tool_choice == "required"
    assert _decoded(tool_choice=None).tool_choice is None
    assert _decoded(tool_choice={"type": "web_search"}).tool_choice == OpaqueItem({"type": "web_search"})
