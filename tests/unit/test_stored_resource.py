"""``proxy.schema.codec.decode_resource``: a stored response decodes to the resource that was
encoded, with output items and a tool choice of types outside the core kept as they were."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from proxy.schema.codec import decode_resource, encode
from proxy.schema.items import FunctionCall, Message, OpaqueItem, OutputItem
from proxy.schema.request import AllowedTools, SpecificFunction, WireToolChoice
from proxy.schema.response import FunctionToolEcho, ResponseResource, Usage

WEB_SEARCH = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"query": "interlock"}}


def _resource(**fields: Any) -> ResponseResource:
    return ResponseResource(id="resp_1", created_at=1, model="m", status="completed", **fields)


@pytest.mark.parametrize("tool_choice", [
    "auto", "required", SpecificFunction(name="f"),
    AllowedTools(mode="auto", tools=[SpecificFunction(name="f")]),
    OpaqueItem({"type": "web_search"}),
])
def test_a_stored_resource_decodes_to_what_was_stored(tool_choice: Any) -> None:
    output = [OpaqueItem(WEB_SEARCH), Message(role="assistant", content="hi", id="msg_1", status="completed"),
              FunctionCall(call_id="c", name="f", arguments="{}", id="fc_1")]
    stored = _resource(output=cast(list[OutputItem], output), tools=[FunctionToolEcho(name="f")],
                       tool_choice=cast(WireToolChoice, tool_choice), usage=Usage(input_tokens=3, output_tokens=2,
                                                                                  total_tokens=5))
    loaded = decode_resource(encode(stored))
    assert loaded == stored
    assert encode(loaded) == encode(stored)


def test_a_stored_resource_without_output_or_tool_choice_takes_the_defaults() -> None:
    raw = encode(_resource())
    trimmed = {name: value for name, value in msgspec.json.decode(raw).items() if name not in ("output", "tool_choice")}
    loaded = decode_resource(msgspec.json.encode(trimmed))
    assert (loaded.output, loaded.tool_choice) == ([], "auto")


def test_a_stored_item_of_a_core_type_that_does_not_decode_is_an_error() -> None:
    raw = msgspec.json.decode(encode(_resource()))
    raw["output"] = [{"type": "message", "role": "nobody", "content": "x"}]
    with pytest.raises(msgspec.ValidationError):
        decode_resource(msgspec.json.encode(raw))
