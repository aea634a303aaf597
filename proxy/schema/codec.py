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

_known_item_decoder = msgspec.json.Decoder(KnownItem)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
KNOWN_ITEM_TYPES = frozenset({"item_reference", "message", "function_call", "function_call_output",
                              "reasoning", "compaction"})


def decode_item(raw: bytes) -> Item:
    """Decode one stored or upstream item; a type outside the core becomes an ``OpaqueItem``."""
    try:
        return cast(Item, _known_item_decoder.decode(raw))
    except msgspec.ValidationError:
        data = msgspec.json.decode(raw)
        if isinstance(data, dict) and data.get("type") not in KNOWN_ITEM_TYPES:
            return OpaqueItem(data)
        raise


def decode_items(raw: bytes) -> list[Item]:
    return [decode_item(bytes(part)) for part in _raw_list_decoder.decode(raw)]


def decode_item_object(data: dict[str, Any]) -> Item:
    """Like ``decode_item`` for an already parsed JSON object."""
    if data.get("type") not in KNOWN_ITEM_TYPES:
        return OpaqueItem(data)
    return cast(Item, msgspec.convert(data, KnownItem))


def decode_tool_choice(value: Any) -> ToolChoice:
    if isinstance(value, dict) and value.get("type") not in ("function", "allowed_tools"):
        return OpaqueItem(value)
    return cast(WireToolChoice, msgspec.convert(value, WireToolChoice))


def decode_resource(raw: bytes) -> ResponseResource:
    """Decode a stored ``ResponseResource`` whose output or tool choice may be opaque."""
    fields = msgspec.json.decode(raw)
    output = [decode_item_object(item) for item in fields.pop("output", [])]
    tool_choice = decode_tool_choice(fields.pop("tool_choice", "auto"))
    resource = msgspec.convert(fields, ResponseResource)
    resource.output = cast(list[OutputItem], output)
    resource.tool_choice = cast(WireToolChoice, tool_choice)
    return resource
