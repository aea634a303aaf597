"""A background response's events as SSE, from its event log: the stored ones after a sequence
number, then the live ones as they are appended (by whichever replica runs the job), until the
terminal event. Following them never touches the run, so a client may leave and come back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.errors import InvalidRequest
from proxy.schema.codec import encode
from proxy.schema.events import ErrorEvent, ErrorPayload
from proxy.store import ResponseStore
from proxy.store.base import EventLog, LoggedEvent
from proxy.streaming import SSE_DONE, sse_frame

_WAIT_S = 5.0
"""Longest single wait for new events before the log is read again."""
_RESTARTED = ("The gateway replica running this response stopped, and the response is running again from "
              "the start; stream it again from the beginning.")


async def event_stream(store: ResponseStore, team: str, response_id: str, *, after: int) -> AsyncIterator[bytes]:
    """SSE frames of the events numbered above ``after``, then ``data: [DONE]``. Raises here,
    before any frame, when the response has no event log."""
    log = await store.read_events(team, response_id, after=after)
    if log is None:
        raise InvalidRequest("This response's events are not available.", param="stream", code="events_unavailable")
    return _frames(store, team, response_id, log, after)


async def _frames(store: ResponseStore, team: str, response_id: str, log: EventLog | None,
                  after: int) -> AsyncIterator[bytes]:
    sent_run: int | None = None
    """The run whose events this stream has sent: a later run's cannot continue them."""
    while log is not None:
        if sent_run is not None and log.state.attempt != sent_run:
            error = ErrorEvent(sequence_number=after + 1, error=ErrorPayload(
                type="server_error", code="response_restarted", message=_RESTARTED))
            yield sse_frame(error, encode(error))
            break
        if log.events:
            yield b"".join(_frame(event) for event in log.events)
            after = log.events[-1].sequence_number
            if log.state.attempt > 0:
                sent_run = log.state.attempt
        if log.state.closed:
            break
        await store.wait_events(team, response_id, attempt=log.state.attempt, after=after, timeout=_WAIT_S)
        log = await store.read_events(team, response_id, after=after)
    yield SSE_DONE


def _frame(event: LoggedEvent) -> bytes:
    """One SSE event whose ``event:`` line is its type, as ``proxy.streaming.sse_frame`` writes it."""
    return b"event: " + event.type.encode() + b"\ndata: " + event.body + b"\n\n"
