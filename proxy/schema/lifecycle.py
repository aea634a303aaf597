"""Bodies of the endpoints around a response's life: compaction, token counting, and the
WebSocket transport's frames (spec 2026-04-24 and OpenAI's raw paths)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from proxy.schema.content import LongText
from proxy.schema.items import KnownItem, OutputItem
from proxy.schema.request import CreateResponseBody, ShortId
from proxy.schema.response import Usage


class CompactRequestBody(Struct, kw_only=True):
    """``POST /v1/responses/compact`` (``CompactResponseMethodPublicBody``): ``model`` is required."""

    model: str
    input: LongText | list[KnownItem] | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    instructions: str | UnsetType | None = UNSET
    prompt_cache_key: ShortId | UnsetType | None = UNSET


class CompactResource(Struct, kw_only=True):
    id: str
    created_at: int
    output: list[OutputItem]
    usage: Usage
    object: Literal["response.compaction"] = "response.compaction"


class TokenCounts(Struct, kw_only=True):
    """``POST /v1/responses/input_tokens`` reply."""

    input_tokens: int
    object: Literal["response.input_tokens"] = "response.input_tokens"


class WebSocketResponseCreate(CreateResponseBody, tag_field="type", tag="response.create", kw_only=True):
    """A client frame on the WebSocket transport: a create body plus ``type``. ``generate: false``
    (warm-up without sampling) is beyond the schema; Codex sends it, and ``stream`` too."""

    generate: bool | UnsetType = UNSET


class WebSocketFrameHead(Struct, kw_only=True):
    """What the WebSocket transport reads of a ``WebSocketResponseCreate`` frame before the rest
    is decoded leniently as a create body (``proxy.decoding``): its type, ``generate``, and the
    ``previous_response_id`` that a failed turn evicts even when the rest of the frame is invalid.
    ``type`` is a plain field, not a tag, so that a frame without one is refused."""

    type: Literal["response.create"]
    generate: bool | UnsetType = UNSET
    previous_response_id: str | UnsetType | None = UNSET


class WebSocketErrorDetail(Struct, kw_only=True):
    code: str
    message: str
    type: str | UnsetType = UNSET
    param: str | UnsetType | None = UNSET


class WebSocketError(Struct, tag_field="type", tag="error", kw_only=True):
    status: Annotated[int, Meta(ge=100, le=599)]
    error: WebSocketErrorDetail
