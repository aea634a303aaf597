"""Turn adapter deltas into Open Responses events and the final ``ResponseResource``.

``ResponseBuilder`` is the single normalisation path: a streaming request serialises the events
it returns, a non-streaming request discards them and replies with ``builder.resource``. Items
open in output order; a new item closes the one before it, as OpenAI's own streams do, so every
item gets its ``output_item.done`` before the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from proxy.errors import GatewayError, UpstreamError
from proxy.ids import new_id
from proxy.schema import deltas as d
from proxy.schema import events as ev
from proxy.schema.codec import encode
from proxy.schema.content import OutputText, ReasoningText, Refusal, SummaryText
from proxy.schema.items import FunctionCall, Message, OpaqueItem, OutputItem, Reasoning
from proxy.schema.response import IncompleteDetails, ResponseError, ResponseResource, Usage

Event = ev.StreamEvent | ev.PassthroughEvent

_INCOMPLETE_REASONS = {"max_output_tokens", "content_filter", "max_tool_calls", "deadline"}


@dataclass(slots=True)
class _OpenItem:
    index: int
    item: Any
    kind: str  # message | function_call | reasoning | passthrough
    part_kind: str | None = None  # output_text | refusal | reasoning_text | summary
    part_index: int = -1
    pieces: list[str] = field(default_factory=list)
    closed: bool = False


class ResponseBuilder:
    """Builds one response across one or more model turns (the tool loop adds turns)."""

    def __init__(self, resource: ResponseResource) -> None:
        self.resource = resource
        self._seq = 0
        self._items: dict[d.ItemKey, _OpenItem] = {}
        self._current: _OpenItem | None = None
        self._finish: str = "stop"
        self._usage_done = Usage()
        self._turn_usage: Usage | None = None
        self.served_tier: str | None = None
        self.upstream_model: str | None = None
        self.started = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> list[Event]:
        """``response.created`` then ``response.in_progress``."""
        self.started = True
        snapshot = msgspec.structs.replace(self.resource, output=[])
        return [self._ev(ev.ResponseCreated, response=snapshot),
                self._ev(ev.ResponseInProgress, response=snapshot)]

    def next_turn(self) -> list[Event]:
        """Close the turn's items and fold its usage in; the next turn's keys start afresh."""
        out = self._close_current()
        self._items.clear()
        if self._turn_usage is not None:
            self._usage_done.add(self._turn_usage)
            self._turn_usage = None
        self._finish = "stop"
        return out

    def feed(self, delta: d.Delta) -> list[Event]:
        handler = _HANDLERS.get(type(delta))
        if handler is None:  # a new Delta type without a handler is a programming error
            raise TypeError(f"no handler for {type(delta).__name__}")
        return handler(self, delta)

    def complete(self) -> list[Event]:
        """Close what is open and emit ``response.completed`` or ``response.incomplete``."""
        incomplete = self._finish in _INCOMPLETE_REASONS
        out = self._close_current(status="incomplete" if incomplete else "completed")
        resource = self.resource
        resource.usage = self._total_usage()
        resource.completed_at = int(time.time())
        if self.served_tier:
            resource.service_tier = self.served_tier
        if incomplete:
            resource.status = "incomplete"
            resource.incomplete_details = IncompleteDetails(reason=self._finish)
            out.append(self._ev(ev.ResponseIncomplete, response=resource))
        else:
            resource.status = "completed"
            out.append(self._ev(ev.ResponseCompleted, response=resource))
        return out

    def fail(self, error: GatewayError) -> list[Event]:
        """An ``error`` event followed by ``response.failed``: how a stream ends after a failure."""
        resource = self.resource
        resource.status = "failed"
        resource.usage = self._total_usage()
        resource.error = ResponseError(code=error.code or error.type, message=error.message, type=error.type)
        return [
            self._ev(ev.ErrorEvent, error=ev.ErrorPayload(type=error.type, code=error.code, message=error.message,
                                                          param=error.param)),
            self._ev(ev.ResponseFailed, response=resource),
        ]

    def add_item(self, item: OutputItem) -> list[Event]:
        """A complete item the gateway made itself (a server-side tool's output)."""
        out = self._close_current()
        output = self.resource.output
        index = len(output)
        output.append(item)
        out.append(self._ev(ev.OutputItemAdded, output_index=index,
                            item=msgspec.structs.replace(item, status="in_progress")))
        out.append(self._ev(ev.OutputItemDone, output_index=index, item=item))
        return out

    @property
    def incomplete(self) -> bool:
        return self._finish in _INCOMPLETE_REASONS

    @property
    def sequence_number(self) -> int:
        return self._seq

    # -- helpers -------------------------------------------------------------------------------
    def _ev(self, cls: type[Any], **fields: Any) -> Any:
        event = cls(sequence_number=self._seq, **fields)
        self._seq += 1
        return event

    def _total_usage(self) -> Usage:
        total = msgspec.structs.replace(
            self._usage_done,
            input_tokens_details=msgspec.structs.replace(self._usage_done.input_tokens_details),
            output_tokens_details=msgspec.structs.replace(self._usage_done.output_tokens_details),
        )
        if self._turn_usage is not None:
            total.add(self._turn_usage)
        return total

    def _opened(self, key: d.ItemKey, kind: str) -> _OpenItem | None:
        """The ``kind`` item open under ``key``; None while ``key`` is new. Checked before a new
        item is built: most deltas continue an item."""
        existing = self._items.get(key)
        if existing is not None and (existing.kind != kind or existing.closed):
            raise UpstreamError(f"upstream stream is inconsistent: item {key!r} reused as {kind}")
        return existing

    def _open(self, key: d.ItemKey, kind: str, item: Any, added: Any) -> tuple[_OpenItem, list[Event]]:
        """Open a new item under ``key``, which ``_opened`` found new."""
        out = self._close_current()
        output = self.resource.output
        opened = _OpenItem(index=len(output), item=item, kind=kind)
        output.append(cast(OutputItem, item))
        self._items[key] = opened
        self._current = opened
        out.append(self._ev(ev.OutputItemAdded, output_index=opened.index, item=added))
        return opened, out

    def _existing(self, key: d.ItemKey, kind: str) -> _OpenItem:
        opened = self._items.get(key)
        if opened is None or opened.kind != kind or opened.closed:
            raise UpstreamError(f"upstream stream is inconsistent: no open {kind} item {key!r}")
        return opened

    def _close_current(self, status: str = "completed") -> list[Event]:
        current = self._current
        if current is None or current.closed:
            return []
        self._current = None
        return self._close_item(current, status)

    def _close_item(self, opened: _OpenItem, status: str) -> list[Event]:
        out = self._close_part(opened)
        opened.closed = True
        item = opened.item
        if opened.kind == "function_call":
            if not item.arguments:
                item.arguments = "{}"
            out.append(self._ev(ev.FunctionCallArgumentsDone, item_id=item.id, output_index=opened.index,
                                arguments=item.arguments))
        if opened.kind != "passthrough":
            item.status = status
        out.append(self._ev(ev.OutputItemDone, output_index=opened.index, item=item))
        return out

    def _close_part(self, opened: _OpenItem) -> list[Event]:
        kind = opened.part_kind
        if kind is None:
            return []
        opened.part_kind = None
        item, index, text = opened.item, opened.part_index, "".join(opened.pieces)
        opened.pieces = []
        common = {"item_id": item.id, "output_index": opened.index}
        if kind == "output_text":
            part = item.content[index]
            part.text = text
            return [self._ev(ev.OutputTextDone, content_index=index, text=text, **common),
                    self._ev(ev.ContentPartDone, content_index=index, part=part, **common)]
        if kind == "refusal":
            part = item.content[index]
            part.refusal = text
            return [self._ev(ev.RefusalDone, content_index=index, refusal=text, **common),
                    self._ev(ev.ContentPartDone, content_index=index, part=part, **common)]
        if kind == "reasoning_text":
            part = item.content[index]
            part.text = text
            return [self._ev(ev.ReasoningDone, content_index=index, text=text, **common),
                    self._ev(ev.ContentPartDone, content_index=index, part=part, **common)]
        part = item.summary[index]
        part.text = text
        return [self._ev(ev.ReasoningSummaryTextDone, summary_index=index, text=text, **common),
                self._ev(ev.ReasoningSummaryPartDone, summary_index=index, part=part, **common)]

    def _message(self, key: d.ItemKey, item_id: Any, phase: Any = msgspec.UNSET) -> tuple[_OpenItem, list[Event]]:
        opened = self._opened(key, "message")
        if opened is not None:
            return opened, []
        ident = item_id if isinstance(item_id, str) else new_id("msg")
        live = Message(id=ident, role="assistant", status="in_progress", content=[], phase=phase)
        added = Message(id=ident, role="assistant", status="in_progress", content=[], phase=phase)
        return self._open(key, "message", live, added)

    def _message_part(self, opened: _OpenItem, kind: str) -> list[Event]:
        if opened.part_kind == kind:
            return []
        out = self._close_part(opened)
        item = opened.item
        part: Any = OutputText(text="") if kind == "output_text" else Refusal(refusal="")
        item.content.append(part)
        opened.part_kind, opened.part_index = kind, len(item.content) - 1
        snapshot = OutputText(text="") if kind == "output_text" else Refusal(refusal="")
        out.append(self._ev(ev.ContentPartAdded, item_id=item.id, output_index=opened.index,
                            content_index=opened.part_index, part=snapshot))
        return out

    # -- delta handlers ------------------------------------------------------------------------
    def _on_text(self, delta: d.TextDelta) -> list[Event]:
        opened, out = self._message(delta.key, delta.item_id, delta.phase)
        out += self._message_part(opened, "output_text")
        opened.pieces.append(delta.text)
        out.append(self._ev(ev.OutputTextDelta, item_id=opened.item.id, output_index=opened.index,
                            content_index=opened.part_index, delta=delta.text))
        return out

    def _on_refusal(self, delta: d.RefusalDelta) -> list[Event]:
        opened, out = self._message(delta.key, delta.item_id)
        out += self._message_part(opened, "refusal")
        opened.pieces.append(delta.text)
        out.append(self._ev(ev.RefusalDelta, item_id=opened.item.id, output_index=opened.index,
                            content_index=opened.part_index, delta=delta.text))
        return out

    def _on_annotation(self, delta: d.AnnotationDelta) -> list[Event]:
        opened = self._existing(delta.key, "message")
        if opened.part_kind != "output_text":
            raise UpstreamError("upstream sent an annotation outside an output_text part")
        annotations = opened.item.content[opened.part_index].annotations
        annotations.append(delta.annotation)
        return [self._ev(ev.OutputTextAnnotationAdded, item_id=opened.item.id, output_index=opened.index,
                         content_index=opened.part_index, annotation_index=len(annotations) - 1,
                         annotation=delta.annotation)]

    def _reasoning(self, key: d.ItemKey, item_id: Any) -> tuple[_OpenItem, list[Event]]:
        opened = self._opened(key, "reasoning")
        if opened is not None:
            return opened, []
        ident = item_id if isinstance(item_id, str) else new_id("rs")
        return self._open(key, "reasoning", Reasoning(id=ident, summary=[]), Reasoning(id=ident, summary=[]))

    def _on_reasoning(self, delta: d.ReasoningDelta) -> list[Event]:
        opened, out = self._reasoning(delta.key, delta.item_id)
        item = opened.item
        common = {"item_id": item.id, "output_index": opened.index}
        if delta.summary_index is None:
            if opened.part_kind != "reasoning_text":
                out += self._close_part(opened)
                if not isinstance(item.content, list):
                    item.content = []
                item.content.append(ReasoningText(text=""))
                opened.part_kind, opened.part_index = "reasoning_text", len(item.content) - 1
                out.append(self._ev(ev.ContentPartAdded, content_index=opened.part_index,
                                    part=ReasoningText(text=""), **common))
            opened.pieces.append(delta.text)
            out.append(self._ev(ev.ReasoningDelta, content_index=opened.part_index, delta=delta.text, **common))
            return out
        if opened.part_kind != "summary" or opened.part_index != delta.summary_index:
            out += self._close_part(opened)
            item.summary.append(SummaryText(text=""))
            opened.part_kind, opened.part_index = "summary", len(item.summary) - 1
            out.append(self._ev(ev.ReasoningSummaryPartAdded, summary_index=opened.part_index,
                                part=SummaryText(text=""), **common))
        opened.pieces.append(delta.text)
        out.append(self._ev(ev.ReasoningSummaryTextDelta, summary_index=opened.part_index, delta=delta.text,
                            **common))
        return out

    def _on_reasoning_start(self, delta: d.ReasoningStart) -> list[Event]:
        return self._reasoning(delta.key, delta.item_id)[1]

    def _on_reasoning_state(self, delta: d.ReasoningState) -> list[Event]:
        opened, out = self._reasoning(delta.key, delta.item_id)
        opened.item.encrypted_content = delta.encrypted_content
        return out

    def _on_tool_call_start(self, delta: d.ToolCallStart) -> list[Event]:
        if self._opened(delta.key, "function_call") is not None:
            return []
        ident = delta.item_id if isinstance(delta.item_id, str) else new_id("fc")
        live = FunctionCall(id=ident, call_id=delta.call_id, name=delta.name, arguments="", status="in_progress")
        added = FunctionCall(id=ident, call_id=delta.call_id, name=delta.name, arguments="", status="in_progress")
        return self._open(delta.key, "function_call", live, added)[1]

    def _on_tool_call_arguments(self, delta: d.ToolCallArguments) -> list[Event]:
        opened = self._existing(delta.key, "function_call")
        opened.item.arguments += delta.text
        return [self._ev(ev.FunctionCallArgumentsDelta, item_id=opened.item.id, output_index=opened.index,
                         delta=delta.text)]

    def _on_passthrough_item(self, delta: d.PassthroughItem) -> list[Event]:
        opened = self._items.get(delta.key)
        if opened is None:
            opened, out = self._open(delta.key, "passthrough", OpaqueItem(dict(delta.item)), OpaqueItem(delta.item))
        else:
            out = []
            opened.item = OpaqueItem(dict(delta.item))
            self.resource.output[opened.index] = cast(OutputItem, opened.item)
        if delta.done and not opened.closed:
            if self._current is opened:
                self._current = None
            out += self._close_item(opened, "completed")
        return out

    def _on_passthrough_event(self, delta: d.PassthroughEvent) -> list[Event]:
        data = dict(delta.event)
        if delta.key is not None:
            opened = self._items.get(delta.key)
            if opened is not None:
                data["output_index"] = opened.index
        event = ev.PassthroughEvent(data, self._seq)
        self._seq += 1
        return [event]

    def _on_item_done(self, delta: d.ItemDone) -> list[Event]:
        opened = self._items.get(delta.key)
        if opened is None or opened.closed:
            return []
        if self._current is opened:
            self._current = None
        return self._close_item(opened, delta.status)

    def _on_usage(self, delta: d.UsageDelta) -> list[Event]:
        self._turn_usage = delta.usage
        return []

    def _on_info(self, delta: d.ResponseInfo) -> list[Event]:
        if isinstance(delta.service_tier, str):
            self.served_tier = delta.service_tier
        if isinstance(delta.model, str):
            self.upstream_model = delta.model
        return []

    def _on_finish(self, delta: d.Finish) -> list[Event]:
        self._finish = delta.reason
        return []

    @property
    def finish_reason(self) -> str:
        return self._finish


_HANDLERS: dict[type, Any] = {
    d.TextDelta: ResponseBuilder._on_text,
    d.RefusalDelta: ResponseBuilder._on_refusal,
    d.AnnotationDelta: ResponseBuilder._on_annotation,
    d.ReasoningDelta: ResponseBuilder._on_reasoning,
    d.ReasoningStart: ResponseBuilder._on_reasoning_start,
    d.ReasoningState: ResponseBuilder._on_reasoning_state,
    d.ToolCallStart: ResponseBuilder._on_tool_call_start,
    d.ToolCallArguments: ResponseBuilder._on_tool_call_arguments,
    d.PassthroughItem: ResponseBuilder._on_passthrough_item,
    d.PassthroughEvent: ResponseBuilder._on_passthrough_event,
    d.ItemDone: ResponseBuilder._on_item_done,
    d.UsageDelta: ResponseBuilder._on_usage,
    d.ResponseInfo: ResponseBuilder._on_info,
    d.Finish: ResponseBuilder._on_finish,
}

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
SSE_DONE = b"data: [DONE]\n\n"


_FRAME_HEADS: dict[type, bytes] = {
    cls: b"event: " + str(cls.__struct_config__.tag).encode() + b"\ndata: " for cls in ev.StreamEvent.__args__
}
"""What precedes the JSON in each event type's frame, built once."""


def event_type(event: Event) -> str:
    if isinstance(event, ev.PassthroughEvent):
        return event.type
    return str(event.__struct_config__.tag)


def sse_frame(event: Event, payload: bytes) -> bytes:
    """One SSE event whose ``event:`` line equals the JSON ``type``."""
    head = _FRAME_HEADS.get(type(event))
    if head is None:
        head = b"event: " + event_type(event).encode() + b"\ndata: "
    return head + payload + b"\n\n"


_BATCHES_AHEAD = 64
"""Encoded batches the events may run ahead of the client; a slower client holds the upstream."""


class _Ready:
    """Encoded batches on their way from the drawing task to the body, in order, the last one
    ``SSE_DONE`` or an error. What an ``asyncio.Queue`` would do here, without its coroutine and
    bookkeeping on every put: a long reply puts one batch per upstream event."""

    __slots__ = ("_arrived", "_items", "_room")

    def __init__(self) -> None:
        self._items: deque[bytes | BaseException] = deque()
        self._arrived: asyncio.Future[None] | None = None
        """The body's wait for a batch."""
        self._room: asyncio.Future[None] | None = None
        """The drawing task's wait for the body to catch up."""

    def put(self, item: bytes | BaseException) -> bool:
        """Whether the body is now ``_BATCHES_AHEAD`` batches behind (then wait for ``room``)."""
        self._items.append(item)
        arrived, self._arrived = self._arrived, None
        if arrived is not None and not arrived.done():
            arrived.set_result(None)
        return len(self._items) >= _BATCHES_AHEAD

    async def room(self) -> None:
        """Once the body has taken what is here."""
        self._room = asyncio.get_running_loop().create_future()
        await self._room

    async def take(self) -> list[bytes | BaseException]:
        """Every batch here, once there is one."""
        while not self._items:
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        items = list(self._items)
        self._items.clear()
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)
        return items


async def sse_body(batches: AsyncIterator[list[Event]]) -> AsyncGenerator[bytes, None]:
    """The SSE body of ``batches`` (``Engine.events``), then ``[DONE]``: the same bytes as each
    batch framed in turn, but after the first batch, whatever is ready when a write ends goes
    out as one write. One upstream read often carries dozens of events, and every write is a
    system call.

    The batches are drawn in a task of their own; closing this body (the client went away)
    cancels it and closes ``batches``. An error drawing them is raised here, after what came
    before it."""
    ready = _Ready()

    async def draw() -> None:
        try:
            first = True
            async for batch in batches:
                if ready.put(b"".join([sse_frame(event, encode(event)) for event in batch])):
                    await ready.room()
                if first:  # response.created goes out at once, not with what follows it
                    first = False
                    await asyncio.sleep(0)
            ready.put(SSE_DONE)
        except Exception as exc:
            ready.put(exc)
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:  # cancelled between batches: release the upstream now
                await aclose()

    drawing = asyncio.create_task(draw())
    try:
        while True:
            chunks: list[bytes] = []
            for item in await ready.take():
                if isinstance(item, BaseException):
                    if chunks:
                        yield b"".join(chunks)
                    raise item
                chunks.append(item)
                if item is SSE_DONE:
                    yield b"".join(chunks)
                    return
            yield b"".join(chunks)
    finally:
        drawing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drawing
