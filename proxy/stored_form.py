"""An input item as the store keeps it, and as ``input_items`` and compaction list it.

Requests may carry what the spec's output schemas (``ItemField``) refuse: a message's free-form
``status``, ``null`` in optional fields, a message's content as a plain string. The stored form
is valid against those schemas and keeps everything else the client sent:

* an id on every item (the client's own when it sent one);
* a status where the schema requires one: the client's when it is one of the schema's values,
  otherwise ``completed`` (the item is input: it is complete);
* a message's string content as one text part (as OpenAI lists it);
* ``null`` optional fields of the item and of its content parts left out rather than listed.

The model sees the items as sent in the turn that brought them, and the stored form in later
turns (``previous_response_id``, item references).
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar, get_args

import msgspec
from msgspec import UNSET

from proxy.ids import new_id
from proxy.schema.content import InputText, OutputText
from proxy.schema.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    Item,
    ItemStatus,
    Message,
    MessagePart,
    OpaqueItem,
    Reasoning,
)

_ID_PREFIX: dict[type, str] = {
    Message: "msg",
    FunctionCall: "fc",
    FunctionCallOutput: "fco",
    Reasoning: "rs",
    Compaction: "cmp",
}
_STATUSES = frozenset(get_args(ItemStatus))

_Struct = TypeVar("_Struct", bound=msgspec.Struct)


def stored_form(item: Item) -> Item:
    """``item`` as the store keeps it (see the module docstring)."""
    if isinstance(item, OpaqueItem):
        return item if item.id is not None else OpaqueItem({**item.data, "id": new_id("item")})
    changes = _nulls_left_out(item)
    if not isinstance(getattr(item, "id", None), str):
        changes["id"] = new_id(_ID_PREFIX.get(type(item), "item"))
    if isinstance(item, Message | FunctionCall | FunctionCallOutput) and item.status not in _STATUSES:
        changes["status"] = "completed"
    if isinstance(item, Message):
        changes["content"] = _message_parts(item)
    if isinstance(item, FunctionCallOutput) and isinstance(item.output, list):
        changes["output"] = [_without_nulls(part) for part in item.output]
    return msgspec.structs.replace(item, **changes) if changes else item


def _message_parts(message: Message) -> list[MessagePart]:
    if isinstance(message.content, str):
        text = message.content
        return [OutputText(text=text) if message.role == "assistant" else InputText(text=text)]
    return [_without_nulls(part) for part in message.content]


def _without_nulls(part: _Struct) -> _Struct:
    changes = _nulls_left_out(part)
    return msgspec.structs.replace(part, **changes) if changes else part


def _nulls_left_out(value: msgspec.Struct) -> dict[str, object]:
    """``UNSET`` (absent on the wire) for each optional field of ``value`` that is ``None``."""
    return {name: UNSET for name in _optional_fields(type(value)) if getattr(value, name) is None}


@cache
def _optional_fields(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields a request may leave out: those whose default is ``UNSET``. (A field that may be
    ``null`` in replies, such as ``input_image.image_url``, has another default and stays.)"""
    return tuple(field.name for field in msgspec.structs.fields(kind) if field.default is UNSET)
