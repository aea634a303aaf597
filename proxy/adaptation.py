"""Fit a conversation to the dialect that will serve it, and map the reply back.

Two jobs, done once here rather than in every adapter:

* **OpenAI's extended tool and item types** travel as-is to ``openai_responses`` upstreams. For
  every other dialect a ``custom`` tool (free-form input, e.g. Codex's apply_patch) becomes a
  function with one string argument ``input``, and the model's calls of it come back as
  ``custom_tool_call`` items; ``custom_tool_call``/``_output`` history becomes function calls and
  outputs; ``namespace`` tools are flattened into their functions; ``web_search`` and
  ``tool_search`` tools, and the history items they produced, are dropped (they need OpenAI's
  hosted search). Any other type reaches the adapter, which refuses it with a 400.
* **History without tools**: several dialects (Anthropic, Bedrock) refuse tool calls in the
  history of a request that declares no tools, which is what a conversation carried over from
  another provider often is. Such a request gets the called functions declared with an open
  schema and, unless the client chose otherwise, ``tool_choice: none``.
* **Reasoning state**: a provider's opaque reasoning (thinking signatures...) leaves the gateway
  sealed in ``encrypted_content`` (``proxy.sealing``), bound to the team. On the way back in, state
  sealed for the same dialect is unsealed for the upstream; state from another dialect is dropped
  (its summary text stays), and OpenAI's own ``encrypted_content`` goes only to OpenAI upstreams.
* **Compaction**: a ``compaction`` item from ``POST /v1/responses/compact`` seals its summary the
  same way (``seal_summary``); every dialect, OpenAI's included, sees it as an assistant message
  holding the summary. A compaction item the gateway did not seal (another server's) is a 400.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import UNSET

from proxy.errors import InvalidRequest
from proxy.ids import new_id
from proxy.schema import deltas as d
from proxy.schema.items import Compaction, FunctionCall, FunctionCallOutput, Item, Message, OpaqueItem, Reasoning
from proxy.schema.request import FunctionTool, SpecificFunction, Tool, ToolChoice
from proxy.sealing import Sealer

NATIVE_DIALECTS = frozenset({"openai_responses"})
"""Dialects that carry OpenAI's extended tool and item types and its encrypted reasoning."""

_DROPPED_TOOLS = frozenset({"web_search", "web_search_preview", "tool_search"})
_DROPPED_ITEMS = frozenset({"web_search_call", "tool_search_call", "tool_search_output"})
_REASONING = "reasoning"
_COMPACTION = "compaction"
SUMMARY_HEADING = "Summary of the earlier conversation:\n\n"
"""What a compaction summary starts with as the model sees it."""


class _State(msgspec.Struct, kw_only=True):
    d: str  # the dialect that produced it
    s: str  # the provider's raw state


_encode_state = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(_State).decode


@dataclass(slots=True)
class Adapted:
    items: list[Item]
    tools: list[Tool]
    tool_choice: ToolChoice | None
    custom_tools: frozenset[str] = frozenset()
    dialect: str = ""
    team: str = ""
    sealer: Sealer | None = None

    def replies(self, upstream: AsyncGenerator[d.Delta, None]) -> AsyncGenerator[d.Delta, None]:
        """The adapter's deltas with reasoning state sealed and custom tool calls restored; the
        adapter's own generator when neither applies (a layer less for every delta to cross)."""
        sealing = self.sealer is not None and self.dialect not in NATIVE_DIALECTS
        if not sealing and not self.custom_tools:
            return upstream
        return self._restored(upstream)

    async def _restored(self, upstream: AsyncGenerator[d.Delta, None]) -> AsyncGenerator[d.Delta, None]:
        calls = _CustomCalls(self.custom_tools)
        try:
            async for delta in upstream:
                if isinstance(delta, d.ReasoningState) and self.sealer and self.dialect not in NATIVE_DIALECTS:
                    payload = _encode_state(_State(d=self.dialect, s=delta.encrypted_content))
                    delta = msgspec.structs.replace(
                        delta, encrypted_content=self.sealer.seal(self.team, _REASONING, payload))
                if not self.custom_tools:
                    yield delta
                    continue
                for out in calls.feed(delta):
                    yield out
        finally:
            await upstream.aclose()


@dataclass(slots=True)
class _CustomCalls:
    """Turns function calls of tools that were ``custom`` for the client back into
    ``custom_tool_call`` items, once their arguments are complete."""

    names: frozenset[str]
    pending: dict[d.ItemKey, list[str]] = field(default_factory=dict)
    starts: dict[d.ItemKey, d.ToolCallStart] = field(default_factory=dict)

    def feed(self, delta: d.Delta) -> list[d.Delta]:
        if isinstance(delta, d.ToolCallStart) and delta.name in self.names:
            self.starts[delta.key] = delta
            self.pending[delta.key] = []
            return []
        if isinstance(delta, d.ToolCallArguments) and delta.key in self.pending:
            self.pending[delta.key].append(delta.text)
            return []
        if isinstance(delta, d.ItemDone) and delta.key in self.pending:
            return [self._finish(delta.key)]
        if isinstance(delta, d.Finish):
            return [*(self._finish(key) for key in list(self.pending)), delta]
        return [delta]

    def _finish(self, key: d.ItemKey) -> d.Delta:
        start = self.starts.pop(key)
        arguments = "".join(self.pending.pop(key))
        try:
            parsed = msgspec.json.decode(arguments) if arguments else {}
        except msgspec.DecodeError:
            parsed = None
        text = parsed.get("input") if isinstance(parsed, dict) else None
        item = {"type": "custom_tool_call", "id": new_id("ctc"), "call_id": start.call_id, "name": start.name,
                "input": text if isinstance(text, str) else arguments, "status": "completed"}
        return d.PassthroughItem(key=key, item=item)


def adapt(items: list[Item], tools: list[Tool], tool_choice: ToolChoice | None, *, dialect: str, team: str,
          sealer: Sealer) -> Adapted:
    """The conversation, tools and tool choice as ``dialect`` can take them."""
    adapted_items: list[Item] = []
    for index, item in enumerate(items):
        if isinstance(item, Reasoning):
            reasoning = _reasoning_for(item, index, dialect, team, sealer)
            if reasoning is None:
                continue
            item = reasoning
        elif isinstance(item, Compaction):
            item = _expand_compaction(item, index, team, sealer)
        adapted_items.append(item)
    if dialect in NATIVE_DIALECTS:
        return Adapted(items=adapted_items, tools=tools, tool_choice=tool_choice, dialect=dialect, team=team,
                       sealer=sealer)
    custom: set[str] = set()
    new_tools: list[Tool] = []
    for tool in tools:
        if not isinstance(tool, OpaqueItem):
            new_tools.append(tool)
        elif tool.type == "custom" and isinstance(tool.data.get("name"), str):
            custom.add(tool.data["name"])
            new_tools.append(_custom_as_function(tool.data))
        elif tool.type == "namespace":
            new_tools.extend(_flatten_namespace(tool))
        elif tool.type not in _DROPPED_TOOLS:
            new_tools.append(tool)
    choice = tool_choice
    if isinstance(choice, OpaqueItem) and choice.type == "custom" and isinstance(choice.data.get("name"), str):
        choice = SpecificFunction(name=choice.data["name"])
    new_items: list[Item] = []
    for item in adapted_items:
        if isinstance(item, OpaqueItem):
            if item.type == "custom_tool_call":
                new_items.append(FunctionCall(call_id=str(item.data.get("call_id")), name=str(item.data.get("name")),
                                              arguments=_encode_state({"input": item.data.get("input", "")}).decode()))
                continue
            if item.type == "custom_tool_call_output":
                output = item.data.get("output", "")
                new_items.append(FunctionCallOutput(call_id=str(item.data.get("call_id")),
                                                    output=output if isinstance(output, str) else str(output)))
                continue
            if item.type in _DROPPED_ITEMS:
                continue
        new_items.append(item)
    if not new_tools:
        called = list(dict.fromkeys(item.name for item in new_items if isinstance(item, FunctionCall)))
        if called:
            new_tools = [FunctionTool(name=name, description="Used earlier in this conversation.",
                                      parameters={"type": "object"}) for name in called]
            choice = "none" if choice is None else choice
    return Adapted(items=new_items, tools=new_tools, tool_choice=choice, custom_tools=frozenset(custom),
                   dialect=dialect, team=team, sealer=sealer)


def seal_summary(sealer: Sealer, team: str, summary: str) -> str:
    """A compaction item's ``encrypted_content``: ``summary`` sealed for ``team``."""
    return sealer.seal(team, _COMPACTION, summary.encode())


def _expand_compaction(item: Compaction, index: int, team: str, sealer: Sealer) -> Message:
    param = f"input[{index}].encrypted_content"
    if not Sealer.is_sealed(item.encrypted_content):
        raise InvalidRequest("This compaction item was made by another server: the gateway expands only the "
                             "compaction items its own POST /v1/responses/compact issued.", param=param,
                             code="invalid_encrypted_content")
    summary = sealer.unseal(team, _COMPACTION, item.encrypted_content, param=param)
    return Message(role="assistant", content=SUMMARY_HEADING + summary.decode())


def _custom_as_function(data: dict[str, Any]) -> FunctionTool:
    description = data.get("description") if isinstance(data.get("description"), str) else ""
    raw_format = data.get("format")
    fmt: dict[str, Any] = raw_format if isinstance(raw_format, dict) else {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        description = (f"{description}\n\nThe input must follow this {fmt.get('syntax', '')} grammar:\n"
                       f"{fmt['definition']}").strip()
    return FunctionTool(
        name=data["name"],
        description=description or UNSET,
        parameters={"type": "object", "properties": {"input": {"type": "string", "description": "The raw input."}},
                    "required": ["input"], "additionalProperties": False},
    )


def _flatten_namespace(tool: OpaqueItem) -> list[Tool]:
    flattened: list[Tool] = []
    for inner in tool.data.get("tools") or []:
        if isinstance(inner, dict) and inner.get("type", "function") == "function" and isinstance(inner.get("name"),
                                                                                                    str):
            flattened.append(FunctionTool(
                name=inner["name"],
                description=inner.get("description") if isinstance(inner.get("description"), str) else UNSET,
                parameters=inner.get("parameters") if isinstance(inner.get("parameters"), dict) else UNSET,
            ))
    return flattened


def _reasoning_for(item: Reasoning, index: int, dialect: str, team: str, sealer: Sealer) -> Reasoning | None:
    """The reasoning item for ``dialect``; None when it must not be sent at all (another
    provider's reasoning would be an unknown item to OpenAI)."""
    token = item.encrypted_content
    if not isinstance(token, str):
        return item
    if not Sealer.is_sealed(token):
        # Another server's state (OpenAI's): only an OpenAI upstream can use it.
        return item if dialect in NATIVE_DIALECTS else msgspec.structs.replace(item, encrypted_content=UNSET)
    payload = sealer.unseal(team, _REASONING, token, param=f"input[{index}].encrypted_content")
    try:
        state = _decode_state(payload)
    except msgspec.DecodeError:
        state = _State(d="", s="")
    if state.d == dialect:
        return msgspec.structs.replace(item, encrypted_content=state.s)
    if dialect in NATIVE_DIALECTS:
        return None
    return msgspec.structs.replace(item, encrypted_content=UNSET)
