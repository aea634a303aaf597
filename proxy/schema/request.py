"""The body of ``POST /v1/responses`` and the pieces it is made of.

Unknown top-level fields (``client_metadata``, ``conversation``, ``user``...) are ignored, as real
clients send them. Constraints from the spec are declared with ``Meta`` so msgspec reports the
offending path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from proxy.schema.content import LongText
from proxy.schema.items import FunctionName, KnownItem, OpaqueItem

ToolChoiceMode = Literal["none", "auto", "required"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
ReasoningSummary = Literal["concise", "detailed", "auto"]
ServiceTier = Literal["auto", "default", "flex", "priority"]
Truncation = Literal["auto", "disabled"]
Verbosity = Literal["low", "medium", "high"]
IncludeValue = Literal[
    # Open Responses values
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    # OpenAI values, forwarded to OpenAI upstreams and ignored elsewhere
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "code_interpreter_call.outputs",
]

MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)]
ShortId = Annotated[str, Meta(max_length=64)]


class FunctionTool(Struct, tag_field="type", tag="function", kw_only=True):
    name: FunctionName
    description: str | UnsetType | None = UNSET
    parameters: dict[str, Any] | UnsetType | None = UNSET
    strict: bool | UnsetType | None = UNSET


Tool = FunctionTool | OpaqueItem
"""A request tool: a function, or a tool type passed through to OpenAI upstreams."""


class SpecificFunction(Struct, tag_field="type", tag="function", kw_only=True):
    name: str


class AllowedTools(Struct, tag_field="type", tag="allowed_tools", kw_only=True):
    tools: Annotated[list[SpecificFunction], Meta(min_length=1, max_length=128)]
    mode: ToolChoiceMode = "auto"


WireToolChoice = ToolChoiceMode | SpecificFunction | AllowedTools
ToolChoice = WireToolChoice | OpaqueItem
"""A tool choice, or an OpenAI hosted-tool choice passed through to OpenAI upstreams."""


class TextFormatText(Struct, tag_field="type", tag="text", kw_only=True):
    pass


class TextFormatJsonObject(Struct, tag_field="type", tag="json_object", kw_only=True):
    pass


class TextFormatJsonSchema(Struct, tag_field="type", tag="json_schema", kw_only=True):
    name: str = "response"
    description: str | UnsetType | None = UNSET
    schema: dict[str, Any] | UnsetType | None = UNSET
    strict: bool | UnsetType | None = UNSET


TextFormat = TextFormatText | TextFormatJsonObject | TextFormatJsonSchema


class TextParam(Struct, kw_only=True):
    format: TextFormat | UnsetType | None = UNSET
    verbosity: Verbosity | UnsetType | None = UNSET


class ReasoningParam(Struct, kw_only=True):
    effort: ReasoningEffort | UnsetType | None = UNSET
    summary: ReasoningSummary | UnsetType | None = UNSET


class StreamOptions(Struct, kw_only=True):
    include_obfuscation: bool | UnsetType = UNSET


class CreateResponseBody(Struct, kw_only=True):
    """``CreateResponseBody`` of the spec. ``UNSET`` means the client did not send the field.

    ``input``, ``tools`` and ``tool_choice`` hold only the core types; items and tools outside
    the core are collected by ``proxy.decoding`` into ``ResponseRequest`` beside this body.
    """

    model: str | UnsetType | None = UNSET
    input: LongText | list[KnownItem] | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    include: list[IncludeValue] | UnsetType | None = UNSET
    tools: list[FunctionTool] | UnsetType | None = UNSET
    tool_choice: WireToolChoice | UnsetType | None = UNSET
    metadata: Metadata | UnsetType | None = UNSET
    text: TextParam | UnsetType | None = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType | None = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType | None = UNSET
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | UnsetType | None = UNSET
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    background: bool | UnsetType | None = UNSET
    max_output_tokens: Annotated[int, Meta(ge=16)] | UnsetType | None = UNSET
    max_tool_calls: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    reasoning: ReasoningParam | UnsetType | None = UNSET
    safety_identifier: ShortId | UnsetType | None = UNSET
    prompt_cache_key: ShortId | UnsetType | None = UNSET
    truncation: Truncation | UnsetType | None = UNSET
    instructions: LongText | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    service_tier: ServiceTier | UnsetType | None = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType | None = UNSET
