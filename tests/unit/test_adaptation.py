"""Fitting conversations to dialects: custom tools, dropped hosted tools, sealed reasoning state."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from proxy.adaptation import adapt
from proxy.errors import InvalidRequest
from proxy.schema import deltas as d
from proxy.schema.content import SummaryText
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message, OpaqueItem, Reasoning
from proxy.schema.request import FunctionTool, SpecificFunction, Tool
from proxy.sealing import Sealer

SEALER = Sealer(b"k" * 32)
PATCH_TOOL = OpaqueItem({"type": "custom", "name": "apply_patch", "description": "Apply a patch.",
                         "format": {"type": "grammar", "syntax": "lark", "definition": "start: 'x'"}})
TOOLS: list[Tool] = [
    FunctionTool(name="exec_command", parameters={"type": "object"}),
    PATCH_TOOL,
    OpaqueItem({"type": "web_search", "external_web_access": False}),
    OpaqueItem({"type": "tool_search", "execution": "client"}),
    OpaqueItem({"type": "namespace", "name": "multi_agent_v1",
                "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}]}),
]


def test_sealer_round_trip_and_refusals() -> None:
    token = SEALER.seal("team-a", "reasoning", b"state")
    assert Sealer.is_sealed(token) and b"state" not in token.encode()
    assert SEALER.unseal("team-a", "reasoning", token, param="p") == b"state"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for team, value, sealer in [("team-b", token, SEALER), ("team-a", forged, SEALER),
                                ("team-a", token, Sealer(b"z" * 32))]:
        with pytest.raises(InvalidRequest) as caught:
            sealer.unseal(team, "reasoning", value, param="input[3].encrypted_content")
        assert caught.value.param == "input[3].encrypted_content"
        assert caught.value.code == "invalid_encrypted_content"


def test_native_dialect_keeps_everything() -> None:
    items: list[Item] = [OpaqueItem({"type": "custom_tool_call", "call_id": "c", "name": "apply_patch", "input": "x"})]
    adapted = adapt(items, TOOLS, None, dialect="openai_responses", team="t", sealer=SEALER)
    assert adapted.items == items and adapted.tools == TOOLS and not adapted.custom_tools


def test_other_dialects_get_functions_for_custom_tools() -> None:
    items: list[Item] = [
        Message(role="user", content="patch it"),
        OpaqueItem({"type": "web_search_call", "id": "ws_1", "status": "completed"}),
        OpaqueItem({"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin"}),
        OpaqueItem({"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"}),
    ]
    adapted = adapt(items, TOOLS, OpaqueItem({"type": "custom", "name": "apply_patch"}), dialect="openai_chat",
                    team="t", sealer=SEALER)
    names = [tool.name for tool in adapted.tools if isinstance(tool, FunctionTool)]
    assert names == ["exec_command", "apply_patch", "spawn"]
    patch = adapted.tools[1]
    assert isinstance(patch, FunctionTool) and "start: 'x'" in str(patch.description)
    assert patch.parameters == {"type": "object", "properties": {"input": {"type": "string", "description":
                                "The raw input."}}, "required": ["input"], "additionalProperties": False}
    assert adapted.tool_choice == SpecificFunction(name="apply_patch")
    assert adapted.items[1:] == [FunctionCall(call_id="c1", name="apply_patch", arguments='{"input":"*** Begin"}'),
                                 FunctionCallOutput(call_id="c1", output="Done")]
    assert adapted.custom_tools == {"apply_patch"}


async def _collect(stream: AsyncGenerator[d.Delta, None]) -> list[d.Delta]:
    return [delta async for delta in stream]


async def _upstream(deltas: list[d.Delta]) -> AsyncGenerator[d.Delta, None]:
    for delta in deltas:
        yield delta


async def test_calls_of_custom_tools_come_back_as_custom_tool_calls() -> None:
    adapted = adapt([], TOOLS, None, dialect="openai_chat", team="t", sealer=SEALER)
    out = await _collect(adapted.replies(_upstream([
        d.ToolCallStart(key=0, call_id="call_1", name="apply_patch"),
        d.ToolCallArguments(key=0, text='{"input": "*** Begin'),
        d.ToolCallArguments(key=0, text='\\n*** End"}'),
        d.ToolCallStart(key=1, call_id="call_2", name="exec_command"),
        d.ToolCallArguments(key=1, text="{}"),
        d.Finish(reason="tool_calls"),
    ])))
    passthrough = [delta for delta in out if isinstance(delta, d.PassthroughItem)]
    assert len(passthrough) == 1
    item = passthrough[0].item
    assert (item["type"], item["call_id"], item["name"], item["input"]) == (
        "custom_tool_call", "call_1", "apply_patch", "*** Begin\n*** End")
    assert [type(x).__name__ for x in out] == ["ToolCallStart", "ToolCallArguments", "PassthroughItem", "Finish"]


async def test_reasoning_state_is_sealed_and_comes_back_only_to_its_dialect() -> None:
    adapted = adapt([], [], None, dialect="anthropic", team="team-a", sealer=SEALER)
    out = await _collect(adapted.replies(_upstream([d.ReasoningState(key=0, encrypted_content="sig-123")])))
    sealed = out[0]
    assert isinstance(sealed, d.ReasoningState) and Sealer.is_sealed(sealed.encrypted_content)
    assert "sig-123" not in sealed.encrypted_content
    item = Reasoning(id="rs_1", summary=[SummaryText(text="hmm")], encrypted_content=sealed.encrypted_content)

    same = adapt([item], [], None, dialect="anthropic", team="team-a", sealer=SEALER).items[0]
    assert isinstance(same, Reasoning) and same.encrypted_content == "sig-123"
    other = adapt([item], [], None, dialect="gemini", team="team-a", sealer=SEALER).items[0]
    assert isinstance(other, Reasoning) and other.encrypted_content is not None
    assert not isinstance(other.encrypted_content, str) and other.summary == item.summary
    assert adapt([item], [], None, dialect="openai_responses", team="team-a", sealer=SEALER).items == []
    with pytest.raises(InvalidRequest):
        adapt([item], [], None, dialect="anthropic", team="team-b", sealer=SEALER)


def test_openai_encrypted_reasoning_goes_only_to_openai() -> None:
    item = Reasoning(id="rs_openai", summary=[], encrypted_content="gAAAAB-openai")
    assert adapt([item], [], None, dialect="openai_responses", team="t", sealer=SEALER).items == [item]
    stripped = adapt([item], [], None, dialect="openai_chat", team="t", sealer=SEALER).items[0]
    assert isinstance(stripped, Reasoning) and not isinstance(stripped.encrypted_content, str)
