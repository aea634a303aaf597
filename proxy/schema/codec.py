"""Encoders and decoders, built once at import.

``OpaqueItem`` and ``PassthroughEvent`` are plain classes (msgspec tagged unions cannot have a
catch-all member), encoded as the JSON object they carry.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from proxy.schema.events import PassthroughEvent
from proxy.schema.items import Item, KnownItem, OpaqueItem, OutputItem
from proxy.schema.request import ToolChoice, WireToolChoice
from proxy.schema.response import ResponseResource


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, OpaqueItem | PassthroughEvent):
        return obj.data
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
encode = _encoder.encode
"""Encode any schema object to JSON bytes."""
encode_into = _encoder.encode_into

known_item_decoder = msgspec.json.Decoder(KnownItem)
"""An item of a core type, straight from its JSON."""
raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
"""A JSON array as its elements' JSON, each to be decoded on its own."""
KNOWN_ITEM_TYPES = frozenset({"item_reference", "message", "function_call", "function_call_output",
                              "reasoning", "compaction"})


def decode_item(raw: bytes | msgspec.Raw) -> Item:
    """Decode one stored or upstream item; a type outside the core becomes an ``OpaqueItem``."""
    try:
        return cast(Item, known_item_decoder.decode(raw))
    except msgspec.ValidationError:
        data = msgspec.json.decode(raw)
        if isinstance(data, dict) and data.get("type") not in KNOWN_ITEM_TYPES:
            return OpaqueItem(data)
        raise


def decode_items(raw: bytes | msgspec.Raw) -> list[Item]:
    return [decode_item(part) for part in raw_list_decoder.decode(raw)]


class _StoredParts(ResponseResource, kw_only=True):
    """A stored resource with its output and tool choice left as JSON: either may hold types
    outside the core."""

    output: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    tool_choice: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]


_stored_parts_decoder = msgspec.json.Decoder(_StoredParts)
_tool_choice_decoder = msgspec.json.Decoder(WireToolChoice)
_RESOURCE_FIELDS = tuple(name for name in ResponseResource.__struct_fields__ if name not in ("output", "tool_choice"))


def decode_resource(raw: bytes) -> ResponseResource:
    """Decode a stored ``ResponseResource`` whose output or tool choice may be opaque: each piece
    straight into its type (``msgspec.convert`` from builtins costs many times a decode from JSON),
    builtins only for the opaque ones."""
    parts = _stored_parts_decoder.decode(raw)
    resource = ResponseResource(**{name: getattr(parts, name) for name in _RESOURCE_FIELDS})
    if parts.output:
        resource.output = cast(list[OutputItem], decode_items(parts.output))
    if parts.tool_choice:
        resource.tool_choice = cast(WireToolChoice, _decode_tool_choice(parts.tool_choice))
    return resource


def _decode_tool_choice(raw: msgspec.Raw) -> ToolChoice:
    try:
        return cast(WireToolChoice, _tool_choice_decoder.decode(raw))
    except msgspec.ValidationError:
        value = msgspec.json.decode(raw)
        if isinstance(value, dict) and value.get("type") not in ("function", "allowed_tools"):
            return OpaqueItem(value)
        raise
