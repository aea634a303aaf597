"""The 24 streaming event types of the spec, tagged on ``type``.

``sequence_number`` is assigned by ``proxy.streaming.ResponseBuilder`` as events are made, so a
stream is numbered from 0 without gaps whatever the upstream numbered.
"""

from __future__ import annotations

from msgspec import UNSET, Struct, UnsetType

from proxy.schema.content import (
    LogProb,
    OutputText,
    ReasoningText,
    Refusal,
    SummaryText,
    UrlCitation,
)
from proxy.schema.items import OutputItem
from proxy.schema.response import ResponseResource

StreamPart = OutputText | Refusal | ReasoningText | SummaryText


class _Event(Struct, tag_field="type", kw_only=True):
    sequence_number: int


class ResponseCreated(_Event, tag="response.created"):
    response: ResponseResource


class ResponseQueued(_Event, tag="response.queued"):
    response: ResponseResource


class ResponseInProgress(_Event, tag="response.in_progress"):
    response: ResponseResource


class ResponseCompleted(_Event, tag="response.completed"):
    response: ResponseResource


class ResponseFailed(_Event, tag="response.failed"):
    response: ResponseResource


class ResponseIncomplete(_Event, tag="response.incomplete"):
    response: ResponseResource


class OutputItemAdded(_Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(_Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class _ItemEvent(_Event):
    item_id: str
    output_index: int


class ContentPartAdded(_ItemEvent, tag="response.content_part.added"):
    content_index: int
    part: StreamPart


class ContentPartDone(_ItemEvent, tag="response.content_part.done"):
    content_index: int
    part: StreamPart


class OutputTextDelta(_ItemEvent, tag="response.output_text.delta"):
    content_index: int
    delta: str
    logprobs: list[LogProb] | UnsetType = UNSET


class OutputTextDone(_ItemEvent, tag="response.output_text.done"):
    content_index: int
    text: str
    logprobs: list[LogProb] | UnsetType = UNSET


class OutputTextAnnotationAdded(_ItemEvent, tag="response.output_text.annotation.added"):
    content_index: int
    annotation_index: int
    annotation: UrlCitation


class RefusalDelta(_ItemEvent, tag="response.refusal.delta"):
    content_index: int
    delta: str


class RefusalDone(_ItemEvent, tag="response.refusal.done"):
    content_index: int
    refusal: str


class ReasoningDelta(_ItemEvent, tag="response.reasoning.delta"):
    content_index: int
    delta: str


class ReasoningDone(_ItemEvent, tag="response.reasoning.done"):
    content_index: int
    text: str


class ReasoningSummaryPartAdded(_ItemEvent, tag="response.reasoning_summary_part.added"):
    summary_index: int
    part: SummaryText


class ReasoningSummaryPartDone(_ItemEvent, tag="response.reasoning_summary_part.done"):
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDelta(_ItemEvent, tag="response.reasoning_summary_text.delta"):
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(_ItemEvent, tag="response.reasoning_summary_text.done"):
    summary_index: int
    text: str


class FunctionCallArgumentsDelta(_ItemEvent, tag="response.function_call_arguments.delta"):
    delta: str


class FunctionCallArgumentsDone(_ItemEvent, tag="response.function_call_arguments.done"):
    arguments: str


class ErrorPayload(Struct, kw_only=True):
    type: str
    code: str | None
    message: str
    param: str | None = None


class ErrorEvent(_Event, tag="error"):
    error: ErrorPayload


class PassthroughEvent:
    """An upstream event outside the core (``response.custom_tool_call_input.delta``...) relayed
    as-is but renumbered; encoded as its JSON object."""

    __slots__ = ("data", "sequence_number", "type")

    def __init__(self, data: dict[str, object], sequence_number: int) -> None:
        self.data = data
        self.type = str(data.get("type"))
        self.sequence_number = sequence_number
        data["sequence_number"] = sequence_number


StreamEvent = (
    ResponseCreated
    | ResponseQueued
    | ResponseInProgress
    | ResponseCompleted
    | ResponseFailed
    | ResponseIncomplete
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | OutputTextAnnotationAdded
    | RefusalDelta
    | RefusalDone
    | ReasoningDelta
    | ReasoningDone
    | ReasoningSummaryPartAdded
    | ReasoningSummaryPartDone
    | ReasoningSummaryTextDelta
    | ReasoningSummaryTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | ErrorEvent
)
TERMINAL_EVENTS = (ResponseCompleted, ResponseFailed, ResponseIncomplete)
