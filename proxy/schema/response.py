"""Reply bodies: ``ResponseResource`` and what retrieve, delete, input_items and models return."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from proxy.schema.items import Item, OutputItem
from proxy.schema.request import Verbosity, WireToolChoice


class InputTokensDetails(Struct, kw_only=True):
    cached_tokens: int = 0


class OutputTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class Usage(Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)

    def add(self, other: Usage) -> None:
        """Sum another turn's usage into this one (tool loops, retries that reached the model)."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.total_tokens += other.total_tokens
        self.input_tokens_details.cached_tokens += other.input_tokens_details.cached_tokens
        self.output_tokens_details.reasoning_tokens += other.output_tokens_details.reasoning_tokens


class IncompleteDetails(Struct, kw_only=True):
    reason: str


class ResponseError(Struct, kw_only=True):
    """``ResponseResource.error``. ``type`` is beyond the spec: the AI SDK requires it."""

    code: str
    message: str
    type: str = "server_error"


class FunctionToolEcho(Struct, tag_field="type", tag="function", kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormatEcho(Struct, tag_field="type", tag="text", kw_only=True):
    pass


class JsonObjectFormatEcho(Struct, tag_field="type", tag="json_object", kw_only=True):
    pass


class JsonSchemaFormatEcho(Struct, tag_field="type", tag="json_schema", kw_only=True):
    """The spec types the echoed ``schema`` as null; the schema itself is not echoed."""

    name: str
    description: str | None = None
    schema: None = None
    strict: bool = False


class TextEcho(Struct, kw_only=True):
    format: TextFormatEcho | JsonObjectFormatEcho | JsonSchemaFormatEcho = msgspec.field(
        default_factory=TextFormatEcho
    )
    verbosity: Verbosity | UnsetType = UNSET


class ReasoningEcho(Struct, kw_only=True):
    effort: str | None = None
    summary: str | None = None


ResponseStatus = Literal["queued", "in_progress", "completed", "failed", "incomplete", "cancelled"]


class ResponseResource(Struct, kw_only=True):
    """All 31 fields of the spec's ``ResponseResource``; nullable ones are sent as null."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: ResponseStatus = "in_progress"
    incomplete_details: IncompleteDetails | None = None
    model: str
    previous_response_id: str | None = None
    instructions: str | None = None
    output: list[OutputItem] = msgspec.field(default_factory=list)
    error: ResponseError | None = None
    tools: list[FunctionToolEcho] = msgspec.field(default_factory=list)
    tool_choice: WireToolChoice = "auto"  # an OpaqueItem is placed here with cast, see items.OutputItem
    truncation: Literal["auto", "disabled"] = "disabled"
    parallel_tool_calls: bool = True
    text: TextEcho = msgspec.field(default_factory=TextEcho)
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    temperature: float = 1.0
    reasoning: ReasoningEcho | None = None
    usage: Usage | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    store: bool = True
    background: bool = False
    service_tier: str = "default"
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class DeletedResponse(Struct, kw_only=True):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ItemList(Struct, kw_only=True):
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


class ModelObject(Struct, kw_only=True):
    """A catalogue alias as ``GET /v1/models`` shows it; ``endpoints`` lists the paths it serves."""

    id: str
    created: int
    owned_by: str
    endpoints: list[str]
    object: Literal["model"] = "model"


class ModelList(Struct, kw_only=True):
    data: list[ModelObject]
    object: Literal["list"] = "list"


class ErrorObject(Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(Struct, kw_only=True):
    """The Open Responses HTTP error envelope."""

    error: ErrorObject
