"""What a provider adapter yields: the gateway's internal, dialect-neutral stream of deltas.

Adapters translate a native reply (streamed or whole) into these; ``proxy.streaming`` turns them
into Open Responses events and the final ``ResponseResource``. A non-streaming native reply is
yielded as the same deltas, so streaming and non-streaming share one normalisation path.

``key`` names an output item within one model turn as the adapter sees it (a Chat choice's text,
a tool-call index, an Anthropic block index...). Deltas with the same key extend the same item;
a delta of another kind with the same key is a bug in the adapter.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

from proxy.schema.content import UrlCitation
from proxy.schema.response import Usage

ItemKey = str | int


class _Delta(Struct, tag_field="kind", kw_only=True):
    pass


class TextDelta(_Delta, tag="text"):
    """Assistant message text; opens the message and an ``output_text`` part when new."""

    key: ItemKey
    text: str
    item_id: str | UnsetType = UNSET
    phase: str | UnsetType = UNSET


class AnnotationDelta(_Delta, tag="annotation"):
    key: ItemKey
    annotation: UrlCitation


class RefusalDelta(_Delta, tag="refusal"):
    key: ItemKey
    text: str
    item_id: str | UnsetType = UNSET


class ReasoningDelta(_Delta, tag="reasoning"):
    """Reasoning text: a summary part when ``summary_index`` is set, else raw reasoning content."""

    key: ItemKey
    text: str
    summary_index: int | None = None
    item_id: str | UnsetType = UNSET


class ReasoningStart(_Delta, tag="reasoning_start"):
    """Opens a reasoning item that may carry no text at all (an upstream's empty reasoning)."""

    key: ItemKey
    item_id: str | UnsetType = UNSET


class ReasoningState(_Delta, tag="reasoning_state"):
    """Opaque reasoning state to round-trip (OpenAI encrypted content, a thinking signature)."""

    key: ItemKey
    encrypted_content: str
    item_id: str | UnsetType = UNSET


class ToolCallStart(_Delta, tag="tool_call_start"):
    key: ItemKey
    call_id: str
    name: str
    item_id: str | UnsetType = UNSET


class ToolCallArguments(_Delta, tag="tool_call_arguments"):
    key: ItemKey
    text: str


class PassthroughItem(_Delta, tag="passthrough_item"):
    """A complete item outside the core (``custom_tool_call``...) from an OpenAI upstream."""

    key: ItemKey
    item: dict[str, Any]
    done: bool = True


class PassthroughEvent(_Delta, tag="passthrough_event"):
    """An upstream event outside the core, relayed in order when streaming; ``key`` names the
    item it belongs to so its ``output_index`` is rewritten to the gateway's numbering."""

    event: dict[str, Any]
    key: ItemKey | None = None


class ItemDone(_Delta, tag="item_done"):
    """The item ended (``incomplete`` when the upstream cut it). Items still open when the turn
    ends are closed then, as ``incomplete`` if the turn was cut."""

    key: ItemKey
    status: Literal["completed", "incomplete"] = "completed"


class UsageDelta(_Delta, tag="usage"):
    """Usage for the turn so far; a later one replaces an earlier one."""

    usage: Usage


class ResponseInfo(_Delta, tag="info"):
    """What the upstream says about the reply: its model name and the tier it served."""

    model: str | UnsetType = UNSET
    service_tier: str | UnsetType = UNSET


FinishReason = Literal["stop", "tool_calls", "max_output_tokens", "content_filter", "max_tool_calls", "deadline"]


class Finish(_Delta, tag="finish"):
    """The turn ended. Anything but ``stop``/``tool_calls`` makes the response incomplete."""

    reason: FinishReason = "stop"


Delta = (
    TextDelta
    | AnnotationDelta
    | RefusalDelta
    | ReasoningDelta
    | ReasoningStart
    | ReasoningState
    | ToolCallStart
    | ToolCallArguments
    | PassthroughItem
    | PassthroughEvent
    | ItemDone
    | UsageDelta
    | ResponseInfo
    | Finish
)
