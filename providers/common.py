"""What the adapters share beyond HTTP: the wording of the 400s for what a dialect cannot carry,
the text of content parts, assistant turns, request fields the caller set, and the reading of
token counts, finish reasons and OpenAI-shaped tool calls in replies.

Everything here is dialect-neutral; each adapter passes its own ``Refusals`` (its dialect's name)
and its own tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from proxy.errors import InvalidRequest, UnsupportedFeature, UpstreamError
from proxy.ids import new_id
from proxy.schema.content import InputText, OutputText, ReasoningText, Refusal, SummaryText, Text
from proxy.schema.deltas import FinishReason, ItemKey, ToolCallStart
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message, OpaqueItem, Reasoning
from proxy.schema.request import CreateResponseBody, FunctionTool, TextFormat, Tool
from proxy.schema.response import InputTokensDetails, OutputTokensDetails, Usage

TEXT_PARTS = (InputText, OutputText, Text)
"""Content parts that are plain text, wherever they stand."""


# -- refusals ----------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    """The wire ``type`` of an item, tool or content part: an opaque one's own, a Struct's tag."""
    if isinstance(value, OpaqueItem):
        return value.type
    config = getattr(value, "__struct_config__", None)
    return str(config.tag) if config is not None else type(value).__name__


@dataclass(frozen=True, slots=True)
class Refusals:
    """The ``UnsupportedFeature`` errors (400, naming the field) of one dialect, worded alike in
    every adapter."""

    dialect: str
    """The dialect as the messages name it (``Cohere``, ``Chat Completions``)."""
    def part(self, part: Any, where: str, param: str) -> UnsupportedFeature:
        """A content part the dialect cannot carry in ``where`` (``user messages``)."""
        return UnsupportedFeature(f"{_type_name(part)} content parts are not supported in {where} by "
                                  f"{self.dialect}", param=param)

    def item(self, item: Any, index: int) -> UnsupportedFeature:
        """An input item the dialect cannot carry, at ``input[index]``."""
        return UnsupportedFeature(f"input items of type {_type_name(item)!r} are not supported by this model's "
                                  f"provider ({self.dialect})", param=f"input[{index}]")

    def tool(self, tool: Any, index: int) -> UnsupportedFeature:
        """A tool other than a function, at ``tools[index]``."""
        return UnsupportedFeature(f"tools of type {_type_name(tool)!r} are not supported by this model's provider "
                                  f"({self.dialect})", param=f"tools[{index}]")

    def tool_choice(self, choice: Any) -> UnsupportedFeature:
        """A ``tool_choice`` outside the core."""
        return UnsupportedFeature(f"tool_choice of type {_type_name(choice)!r} is not supported by this model's "
                                  f"provider ({self.dialect})", param="tool_choice")

    def functions(self, tools: list[Tool]) -> list[FunctionTool]:
        """``tools``, every one a function tool; the first that is not is refused."""
        functions: list[FunctionTool] = []
        for index, tool in enumerate(tools):
            if not isinstance(tool, FunctionTool):
                raise self.tool(tool, index)
            functions.append(tool)
        return functions


# -- content -----------------------------------------------------------------------------------
def part_texts(parts: list[Any], param: str, where: str, refuse: Refusals, *, refusals: bool = False) -> list[str]:
    """The text of each part in ``parts`` (and a refusal's, with ``refusals``); any other part is
    refused as not supported in ``where``, at ``param[n]`` (``param`` names the list)."""
    texts: list[str] = []
    for n, part in enumerate(parts):
        if isinstance(part, TEXT_PARTS):
            texts.append(part.text)
        elif refusals and isinstance(part, Refusal):
            texts.append(part.refusal)
        else:
            raise refuse.part(part, where, f"{param}[{n}]")
    return texts


def reasoning_text(item: Reasoning) -> str:
    """A reasoning item as one text: its raw content if it has any, else its summary."""
    content = item.content if isinstance(item.content, list) else []
    parts = [part.text for part in content if isinstance(part, ReasoningText | SummaryText | Text)]
    if not parts:
        parts = [part.text for part in item.summary if isinstance(part, SummaryText | ReasoningText | Text)]
    return "\n\n".join(part for part in parts if part)


def json_object(text: str, message: str, param: str) -> dict[str, Any]:
    """``text`` decoded as a JSON object; anything else is an ``InvalidRequest(message)`` on
    ``param`` (function-call arguments for dialects that take them as an object)."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(message, param=param)
    return value


def call_arguments(arguments: str, param: str, wanted_by: str) -> dict[str, Any]:
    """A ``function_call``'s JSON ``arguments`` as the object a dialect takes (blank: ``{}``);
    anything else is refused on ``param``, as not ``wanted_by`` (``for Gemini``)."""
    return json_object(arguments if arguments.strip() else "{}",
                       f"function_call arguments must be a JSON object {wanted_by}", param)


@dataclass(slots=True)
class AssistantTurn:
    """Consecutive reasoning, assistant messages and function calls, which some dialects hold in
    one assistant message."""

    thinking: list[str] = field(default_factory=list)
    """The text of each reasoning item (``reasoning_text``) that has any."""
    texts: list[str] = field(default_factory=list)
    """The text of each assistant message."""
    calls: list[tuple[int, FunctionCall]] = field(default_factory=list)
    """The function calls, with their positions in the input."""


def assistant_turns(items: list[Item],
                    refuse: Refusals) -> Iterator[AssistantTurn | tuple[int, Message | FunctionCallOutput]]:
    """The other messages and the function-call outputs of ``items``, with their positions, and
    between them each assistant turn gathered into one ``AssistantTurn``: text after calls, or
    reasoning after text or calls, starts the next turn. An assistant message with parts other
    than text and refusals is refused, and so is any other item."""
    turn: AssistantTurn | None = None
    for index, item in enumerate(items):
        if isinstance(item, Reasoning | FunctionCall) or (isinstance(item, Message) and item.role == "assistant"):
            if turn is not None and ((turn.calls and not isinstance(item, FunctionCall))
                                     or (turn.texts and isinstance(item, Reasoning))):
                yield turn
                turn = None
            turn = turn or AssistantTurn()
            if isinstance(item, FunctionCall):
                turn.calls.append((index, item))
            elif isinstance(item, Reasoning):
                text = reasoning_text(item)
                if text:
                    turn.thinking.append(text)
            elif isinstance(item.content, str):
                turn.texts.append(item.content)
            else:
                turn.texts.append("".join(part_texts(item.content, f"input[{index}].content", "assistant messages",
                                                     refuse, refusals=True)))
            continue
        if turn is not None:
            yield turn
            turn = None
        if not isinstance(item, Message | FunctionCallOutput):
            raise refuse.item(item, index)
        yield index, item
    if turn is not None:
        yield turn


# -- request fields ----------------------------------------------------------------------------
def given(value: Any) -> bool:
    """Whether the caller set a request field: it is neither unset nor ``null``."""
    return value is not UNSET and value is not None


def put(body: dict[str, Any], name: str, value: Any) -> None:
    """``body[name] = value`` when the caller set ``value``."""
    if given(value):
        body[name] = value


def set_fields(source: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Those of the ``names`` fields of ``source`` that the caller set, in that order."""
    return {name: getattr(source, name) for name in names if given(getattr(source, name))}


def chat_function(tool: FunctionTool, fields: tuple[str, ...]) -> dict[str, Any]:
    """A function tool in the Chat Completions shape (Cohere and Ollama take it too): its name
    and those of ``fields`` the caller set."""
    return {"type": "function", "function": {"name": tool.name, **set_fields(tool, fields)}}


def output_format(params: CreateResponseBody) -> TextFormat | UnsetType | None:
    """``text.format``, when the caller set ``text``."""
    text = params.text
    return text.format if text is not UNSET and text is not None else None


def reasoning_effort(params: CreateResponseBody) -> str | None:
    """``reasoning.effort``, when the caller set one."""
    reasoning = params.reasoning
    effort = reasoning.effort if reasoning is not UNSET and reasoning is not None else None
    return effort if isinstance(effort, str) else None


# -- replies -----------------------------------------------------------------------------------
def count(value: Any) -> int:
    """A token count from upstream JSON: the integer, or 0 (absent, ``null``, not an integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def token_usage(input_tokens: int, output_tokens: int, *, cached: int = 0, reasoning: int = 0,
                total: int = 0) -> Usage:
    """Responses usage; ``total`` when the upstream reported one, else input plus output."""
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                 total_tokens=total or input_tokens + output_tokens,
                 input_tokens_details=InputTokensDetails(cached_tokens=cached),
                 output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning))


def finish_from(table: Mapping[str, FinishReason], value: Any) -> FinishReason:
    """An upstream finish reason as the gateway's, by ``table``; unknown values (or none) count as
    a normal stop."""
    return table.get(value, "stop") if isinstance(value, str) else "stop"


def tool_call_start(key: ItemKey, tool_call: Mapping[str, Any],
                    source: str = "upstream") -> tuple[ToolCallStart, Mapping[str, Any]]:
    """The start of an OpenAI-shaped tool call (``{"id", "function": {"name", "arguments"}}``,
    Cohere's and Ollama's too) and its ``function``. A call without a name is an upstream error
    (``source`` says whose); one without an id gets a minted one."""
    function = tool_call.get("function")
    function = function if isinstance(function, Mapping) else {}
    call_id, name = tool_call.get("id"), function.get("name")
    if not isinstance(name, str) or not name:
        raise UpstreamError(f"{source} returned a tool call without a name")
    return ToolCallStart(key=key, call_id=call_id if isinstance(call_id, str) and call_id else new_id("call"),
                         name=name), function
