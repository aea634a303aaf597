"""``providers.http.SSEDecoder``: SSE framing however the bytes are cut into chunks; and
``sse_reads``, which gives the events of each read of a real reply.

Streams are built from a model of their events (field lines, comments, line ends), so what the
decoder must return is known without a second parser; hypothesis varies the events, the line
ends and where the chunks are cut.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.http import SSEDecoder, SSEEvent, sse_reads

LINE_ENDS = (b"\n", b"\r\n", b"\r")


@dataclass(frozen=True)
class Line:
    field: str  # data | event | id | retry | comment
    value: str
    compact: bool = False
    """``data:value`` rather than ``data: value`` (only for values not starting with a space)."""

    def render(self) -> bytes:
        if self.field == "comment":
            return b":" + self.value.encode()
        separator = ":" if self.compact and not self.value.startswith(" ") else ": "
        return (self.field + separator + self.value).encode()


def expected(events: list[list[Line]]) -> list[SSEEvent]:
    """What the decoder yields for these events: those with data, their last name, data lines
    joined by LF."""
    out: list[SSEEvent] = []
    for lines in events:
        data = [line.value.encode() for line in lines if line.field == "data"]
        names = [line.value for line in lines if line.field == "event"]
        if data:
            out.append((names[-1] if names else None, b"\n".join(data)))
    return out


def render(events: list[list[Line]], ends: list[bytes]) -> bytes:
    """The stream: each line and each event's closing blank line ended by the next of ``ends``
    (cycled). A blank line right after a CR gets CRLF instead of LF, which would read as the
    CR's own CRLF (as it would for any SSE parser)."""
    out = bytearray()
    count = 0

    def end(text: bytes) -> bytes:
        nonlocal count
        count += 1
        chosen = ends[(count - 1) % len(ends)]
        if not text and chosen == b"\n" and out.endswith(b"\r"):
            chosen = b"\r\n"
        return text + chosen

    for lines in events:
        for line in lines:
            out += end(line.render())
        out += end(b"")
    return bytes(out)


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.finish()


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({min(point, len(data)) for point in points}), len(data)]
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


# Values hold anything but line ends: colons, leading and trailing spaces, non-ASCII text.
_values = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz._-"), min_size=1, max_size=10)
_lines = st.one_of(
    st.builds(Line, field=st.just("data"), value=_values, compact=st.booleans()),
    st.builds(Line, field=st.just("event"), value=_names, compact=st.booleans()),
    st.builds(Line, field=st.sampled_from(["id", "retry", "comment"]), value=_values),
)
_events = st.lists(st.lists(_lines, max_size=5), max_size=6)


@settings(max_examples=400, deadline=None)
@given(events=_events, ends=st.lists(st.sampled_from(LINE_ENDS), min_size=1, max_size=4),
       points=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_events_any_line_ends_any_chunking(events: list[list[Line]], ends: list[bytes],
                                               points: list[int]) -> None:
    stream = render(events, ends)
    assert decode(cut(stream, points)) == expected(events)


KITCHEN_SINK = [
    [Line("comment", " keep-alive")],
    [Line("event", "response.created"), Line("data", '{"a": 1}')],
    [Line("data", "first line"), Line("data", ""), Line("data", " spaced: with colon"), Line("id", "7")],
    [Line("event", "ignored"), Line("event", "delta"), Line("data", "é ✓", compact=True)],
    [Line("event", "no-data"), Line("retry", "100")],
    [Line("data", "[DONE]")],
]


def test_every_split_point_with_each_line_end() -> None:
    for ends in ([b"\n"], [b"\r\n"], [b"\r"], [b"\r\n", b"\n", b"\r"]):
        stream = render(KITCHEN_SINK, ends)
        want = expected(KITCHEN_SINK)
        assert len(want) == 4
        assert decode([stream]) == want
        assert decode([bytes([byte]) for byte in stream]) == want
        for point in range(len(stream) + 1):
            assert decode([stream[:point], stream[point:]]) == want, (ends, point)


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # A CR ending one chunk and the LF starting the next end one line, not a line and a blank one.
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [(None, b"a\nb")]
    # CR CR is a line end and a blank line: the event ends there.
    assert decode([b"data: a\r", b"\rdata: b\r\r"]) == [(None, b"a"), (None, b"b")]


def test_a_cr_ending_a_chunk_waits_for_the_next_byte() -> None:
    decoder = SSEDecoder()
    assert list(decoder.feed(b"data: a\r\n\r")) == [], "the blank line may be a CRLF still arriving"
    assert list(decoder.feed(b"\n")) == [(None, b"a")]
    assert list(decoder.feed(b"data: b\r\r")) == []
    assert list(decoder.feed(b"data: c\r\r")) == [(None, b"b")]
    assert decoder.finish() == [(None, b"c")]


def test_last_event_without_blank_line_is_kept() -> None:
    assert decode([b"event: done\ndata: {}"]) == [("done", b"{}")]
    assert decode([b"data: x\n\n: trailing comment\n"]) == [(None, b"x")]


def test_many_small_events_in_one_chunk_take_linear_time() -> None:
    count = 50_000
    stream = b"".join(b'event: response.output_text.delta\ndata: {"delta": "%d"}\n\n' % i for i in range(count))
    started = time.process_time()
    events = decode([stream])
    # Linear work is a few tens of milliseconds; rescanning the buffer per event takes minutes.
    assert time.process_time() - started < 2.0
    assert len(events) == count
    assert events[-1] == ("response.output_text.delta", b'{"delta": "%d"}' % (count - 1))


def test_very_large_event_in_small_chunks_takes_linear_time() -> None:
    payload = b"x" * (8 << 20)
    stream = b"data: " + payload + b"\r\n\r\n"
    chunks = [stream[start:start + 1024] for start in range(0, len(stream), 1024)]
    started = time.process_time()
    events = decode(chunks)
    # Joined once: well under a second; growing one buffer per chunk copies gigabytes.
    assert time.process_time() - started < 2.0
    assert events == [(None, payload)]


async def _served(chunks: list[bytes], cut: asyncio.Event) -> tuple[web.AppRunner, str]:
    """A loopback server whose reply is ``chunks``, each flushed alone after a pause; ``cut`` is
    set when the client closed the connection before the last."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for chunk in chunks:
                await asyncio.sleep(0.1)
                await response.write(chunk)
        except ConnectionResetError:
            cut.set()
        return response

    app = web.Application()
    app.router.add_get("/", reply)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


async def test_sse_reads_gives_each_reads_events_then_the_unterminated_last() -> None:
    chunks = [b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\ndata: 3\n\ndata: 4", b"5\n\ndata: 6"]
    runner, url = await _served(chunks, asyncio.Event())
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            reads = [list(events) async for events in sse_reads(response, "test")]
    finally:
        await runner.cleanup()
    assert reads == [[("a", b"1"), (None, b"2"), ("b", b"3")], [(None, b"45")], [(None, b"6")]]


async def test_closing_sse_reads_early_closes_the_upstream_connection() -> None:
    cut = asyncio.Event()
    runner, url = await _served([b"data: 1\n\n"] + [b"data: more\n\n"] * 50, cut)
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.get(url)
            reads = sse_reads(response, "test")
            assert list(await anext(reads)) == [(None, b"1")]
            await reads.aclose()
            assert response.closed
            await asyncio.wait_for(cut.wait(), 2.0)  # the server's next write finds the connection gone
    finally:
        await runner.cleanup()
