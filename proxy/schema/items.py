"""Conversation items: what a request's ``input`` carries and what a response's ``output`` holds.

The request and reply forms of an item share one Struct. Fields a request may leave out default
to ``UNSET`` (absent on the wire); the engine fills ``id`` and ``status`` before an item is
emitted or stored, so replies always carry them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from proxy.schema.content import (
    InputFile,
    InputImage,
    InputText,
    InputVideo,
    LongText,
    OutputText,
    ReasoningText,
    Refusal,
    SummaryText,
    Text,
)

CallId = Annotated[str, Meta(min_length=1, max_length=64)]
FunctionName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
Role = Literal["user", "assistant", "system", "developer"]

MessagePart = (
    InputText | InputImage | InputFile | InputVideo | OutputText | Text | SummaryText | ReasoningText | Refusal
)
ToolOutputPart = InputText | InputImage | InputFile | InputVideo
SummaryPart = SummaryText | InputText | OutputText | Text | ReasoningText


class _Item(Struct, tag_field="type", kw_only=True):
    pass


class ItemReference(_Item, tag="item_reference"):
    """Points at an item stored by an earlier response of the same team."""

    id: str


class Message(_Item, tag="message"):
    role: Role
    content: LongText | list[MessagePart]
    id: str | UnsetType | None = UNSET
    status: str | UnsetType | None = UNSET
    phase: Literal["commentary", "final_answer"] | UnsetType | None = UNSET


class FunctionCall(_Item, tag="function_call"):
    call_id: CallId
    name: FunctionName
    arguments: str
    id: str | UnsetType | None = UNSET
    status: ItemStatus | UnsetType | None = UNSET


class FunctionCallOutput(_Item, tag="function_call_output"):
    call_id: CallId
    output: LongText | list[ToolOutputPart]
    id: str | UnsetType | None = UNSET
    status: ItemStatus | UnsetType | None = UNSET


class Reasoning(_Item, tag="reasoning"):
    summary: list[SummaryPart] = msgspec.field(default_factory=list)
    id: str | UnsetType | None = UNSET
    content: list[SummaryPart] | UnsetType | None = UNSET
    encrypted_content: str | UnsetType | None = UNSET
    status: ItemStatus | UnsetType | None = UNSET


class Compaction(_Item, tag="compaction"):
    encrypted_content: LongText
    id: str | UnsetType | None = UNSET
    created_by: str | UnsetType = UNSET


class OpaqueItem:
    """An item type outside the Open Responses core (``custom_tool_call``, ``web_search_call``...).

    It travels unchanged to upstreams that speak the OpenAI Responses dialect; other dialects
    refuse it with a 400 naming the type. Encoded as the original JSON object.
    """

    __slots__ = ("data", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.type: str = str(data.get("type"))

    @property
    def id(self) -> str | None:
        value = self.data.get("id")
        return value if isinstance(value, str) else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpaqueItem) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]


KnownItem = ItemReference | Message | FunctionCall | FunctionCallOutput | Reasoning | Compaction
"""The tagged union msgspec decodes input items into."""

Item = KnownItem | OpaqueItem
"""Any item the gateway holds in a conversation."""

OutputItem = Message | FunctionCall | FunctionCallOutput | Reasoning | Compaction
"""Items that may appear in ``ResponseResource.output``. msgspec cannot decode a union with a
custom class, so an ``OpaqueItem`` in an output list is placed there with ``typing.cast`` and
``proxy.schema.codec`` restores it when decoding."""
