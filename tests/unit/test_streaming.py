"""ResponseBuilder: deltas in, spec-valid events and the final resource out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy import streaming
from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.schema import deltas as d
from proxy.schema.codec import encode
from proxy.schema.content import UrlCitation
from proxy.schema.response import InputTokensDetails, OutputTokensDetails, ResponseResource, Usage
from proxy.streaming import SSE_DONE, Event, ResponseBuilder, sse_body, sse_frame
from tests.spec_validation import parse_sse, validate_resource, validate_stream


def _run(deltas: list[d.Delta], *, turns: list[list[d.Delta]] | None = None,
         fail: Exception | None = None) -> tuple[list[dict[str, Any]], ResponseBuilder]:
    builder = ResponseBuilder(ResponseResource(id="resp_1", created_at=1, model="m"))
    events = list(builder.start())
    for turn_number, turn in enumerate([deltas, *(turns or [])]):
        if turn_number:
            events += builder.next_turn()
        for delta in turn:
            events += builder.feed(delta)
    events += builder.fail(fail) if isinstance(fail, UpstreamError) else builder.complete()
    return [json.loads(encode(event)) for event in events], builder


def _usage(inp: int, out: int, cached: int = 0, reasoning: int = 0) -> d.UsageDelta:
    return d.UsageDelta(usage=Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out,
                                    input_tokens_details=InputTokensDetails(cached_tokens=cached),
                                    output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning)))


def test_reasoning_text_refusal_and_tool_call_in_order() -> None:
    events, builder = _run([
        d.ReasoningDelta(key="r", text="think ", summary_index=0),
        d.ReasoningDelta(key="r", text="hard", summary_index=0),
        d.ReasoningDelta(key="r", text="second", summary_index=1),
        d.ReasoningDelta(key="r", text="raw thought"),
        d.ReasoningState(key="r", encrypted_content="sealed"),
        d.TextDelta(key="m", text="Hello "),
        d.TextDelta(key="m", text="world"),
        d.RefusalDelta(key="m", text="but no"),
        d.ToolCallStart(key=0, call_id="call_1", name="f"),
        d.ToolCallArguments(key=0, text='{"a":'),
        d.ToolCallArguments(key=0, text="1}"),
        _usage(10, 5, cached=2, reasoning=3),
        d.Finish(reason="tool_calls"),
    ])
    validate_stream(events)
    final = events[-1]["response"]
    validate_resource(final)
    reasoning, message, call = final["output"]
    assert [s["text"] for s in reasoning["summary"]] == ["think hard", "second"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "raw thought"}]
    assert reasoning["encrypted_content"] == "sealed"
    assert message["content"] == [{"type": "output_text", "text": "Hello world", "annotations": []},
                                  {"type": "refusal", "refusal": "but no"}]
    assert call["arguments"] == '{"a":1}' and call["status"] == "completed"
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert builder.resource.status == "completed"


def test_annotations_are_attached_and_announced() -> None:
    citation = UrlCitation(url="https://example.org", start_index=0, end_index=4, title="Ex")
    events, _ = _run([d.TextDelta(key=0, text="cite"), d.AnnotationDelta(key=0, annotation=citation)])
    validate_stream(events)
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added[0]["annotation"]["url"] == "https://example.org"
    assert events[-1]["response"]["output"][0]["content"][0]["annotations"][0]["title"] == "Ex"


def test_truncated_turn_is_incomplete_and_its_last_item_too() -> None:
    events, _ = _run([d.TextDelta(key=0, text="cut sh"), d.Finish(reason="max_output_tokens")])
    validate_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][-1]["status"] == "incomplete"


def test_turns_sum_usage_and_keep_numbering() -> None:
    events, builder = _run([d.ToolCallStart(key=0, call_id="c", name="f"), _usage(10, 2)],
                           turns=[[d.TextDelta(key=0, text="done"), _usage(15, 3)]])
    validate_stream(events)
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["function_call", "message"]
    assert events[-1]["response"]["usage"]["input_tokens"] == 25
    assert events[-1]["response"]["usage"]["total_tokens"] == 30
    assert builder.sequence_number == len(events)


def test_failure_ends_with_error_then_failed() -> None:
    events, builder = _run([d.TextDelta(key=0, text="partial")], fail=UpstreamTimeout("upstream stalled"))
    validate_stream(events)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["error"] == {"type": "timeout", "code": "upstream_timeout", "message": "upstream stalled",
                                   "param": None}
    assert events[-1]["response"]["error"]["code"] == "upstream_timeout"
    assert builder.resource.status == "failed"


def test_passthrough_items_and_events_are_renumbered() -> None:
    item = {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_9", "name": "apply_patch", "input": ""}
    events, _ = _run([
        d.TextDelta(key=0, text="patching"),
        d.PassthroughItem(key=7, item={**item, "status": "in_progress"}, done=False),
        d.PassthroughEvent(key=7, event={"type": "response.custom_tool_call_input.delta", "output_index": 7,
                                         "item_id": "ctc_1", "delta": "*** Begin"}),
        d.PassthroughItem(key=7, item={**item, "input": "*** Begin", "status": "completed"}),
    ])
    validate_stream(events, opaque_types=frozenset({"custom_tool_call"}))
    relayed = next(e for e in events if e["type"] == "response.custom_tool_call_input.delta")
    assert relayed["output_index"] == 1
    assert events[-1]["response"]["output"][1]["input"] == "*** Begin"


def test_inconsistent_upstream_is_an_error() -> None:
    builder = ResponseBuilder(ResponseResource(id="resp_1", created_at=1, model="m"))
    builder.start()
    builder.feed(d.ToolCallStart(key=0, call_id="c", name="f"))
    builder.feed(d.TextDelta(key=1, text="next item closes the call"))
    with pytest.raises(UpstreamError):
        builder.feed(d.ToolCallArguments(key=0, text="{}"))
    with pytest.raises(UpstreamError):
        builder.feed(d.AnnotationDelta(key=5, annotation=UrlCitation(url="u", start_index=0, end_index=0, title="")))


def test_sse_frame_event_line_matches_type() -> None:
    _, builder = _run([d.TextDelta(key=0, text="x")])
    frame = sse_frame(builder.start()[0], b'{"type":"response.created"}')
    events, saw_done = parse_sse(frame.decode())
    assert events == [{"type": "response.created"}] and not saw_done


def test_a_key_reused_for_another_kind_or_after_its_item_closed_is_an_error() -> None:
    builder = ResponseBuilder(ResponseResource(id="resp_1", created_at=1, model="m"))
    builder.start()
    builder.feed(d.ToolCallStart(key=0, call_id="c", name="f"))
    assert builder.feed(d.ToolCallStart(key=0, call_id="c", name="f")) == [], "a repeated start continues the call"
    with pytest.raises(UpstreamError, match="reused as message"):
        builder.feed(d.TextDelta(key=0, text="x"))
    builder.feed(d.TextDelta(key=1, text="x"))
    builder.feed(d.ItemDone(key=1))
    with pytest.raises(UpstreamError, match="reused as message"):
        builder.feed(d.TextDelta(key=1, text="after done"))


def test_ids_are_minted_once_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    minted: list[str] = []

    def counting(prefix: str) -> str:
        minted.append(prefix)
        return f"{prefix}_{len(minted)}"

    monkeypatch.setattr("proxy.streaming.new_id", counting)
    events, _ = _run([d.ReasoningDelta(key="r", text="a"), d.ReasoningDelta(key="r", text="b"),
                      *(d.TextDelta(key=0, text=f"{n} ") for n in range(5))])
    assert minted == ["rs", "msg"]
    validate_stream(events)


def _batches(count: int) -> list[list[Event]]:
    builder = ResponseBuilder(ResponseResource(id="resp_1", created_at=1, model="m"))
    out = [builder.start(), *(builder.feed(d.TextDelta(key=0, text=f"{n} ")) for n in range(count))]
    return [*out, builder.complete()]


def _framed(batches: list[list[Event]]) -> bytes:
    return b"".join(sse_frame(event, encode(event)) for batch in batches for event in batch)


async def test_sse_body_writes_the_first_batch_then_what_is_ready_at_once() -> None:
    batches = _batches(4)
    gate = asyncio.Event()

    async def source() -> AsyncIterator[list[Event]]:
        for batch in batches[:4]:  # ready together, as events parsed from one upstream read
            yield batch
        await gate.wait()
        for batch in batches[4:]:
            yield batch

    body = sse_body(source())
    chunks = [await anext(body), await anext(body)]
    gate.set()
    chunks += [chunk async for chunk in body]
    assert chunks == [_framed(batches[:1]), _framed(batches[1:4]), _framed(batches[4:]) + SSE_DONE]
    events, saw_done = parse_sse(b"".join(chunks).decode())
    assert saw_done
    validate_stream(events)


@pytest.mark.parametrize("count", [1, 500])
async def test_closing_sse_body_closes_the_batches(count: int) -> None:
    # 1: the batches wait for the upstream; 500: they wait for room, ahead of the client.
    closed = asyncio.Event()

    async def source() -> AsyncIterator[list[Event]]:
        try:
            for batch in _batches(count):
                yield batch
            await asyncio.Event().wait()
        finally:
            closed.set()

    body = sse_body(source())
    assert (await anext(body)).startswith(b"event: response.created\n")
    await body.aclose()
    assert closed.is_set()


async def test_sse_body_draws_at_most_its_limit_of_batches_ahead_of_the_client() -> None:
    batches = _batches(500)
    drawn = 0

    async def source() -> AsyncIterator[list[Event]]:
        nonlocal drawn
        for batch in batches:
            drawn += 1
            yield batch

    body = sse_body(source())
    chunks = [await anext(body)]  # the client takes response.created, then stops reading
    for _ in range(20):
        await asyncio.sleep(0)
    assert 1 + streaming._BATCHES_AHEAD <= drawn <= 2 + streaming._BATCHES_AHEAD
    chunks += [chunk async for chunk in body]
    assert drawn == len(batches)
    assert b"".join(chunks) == _framed(batches) + SSE_DONE


async def test_an_error_drawing_batches_is_raised_after_what_came_before() -> None:
    batches = _batches(1)

    async def source() -> AsyncIterator[list[Event]]:
        yield batches[0]
        raise RuntimeError("engine bug")

    body = sse_body(source())
    chunks: list[bytes] = []
    with pytest.raises(RuntimeError, match="engine bug"):
        async for chunk in body:
            chunks.append(chunk)
    assert chunks == [_framed(batches[:1])]
