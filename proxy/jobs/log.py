"""What a background response's event log holds, and how a response ends when its run cannot
end it itself (cancelled, or failed because its runs ran out or its replica stopped).

The log starts with ``response.created`` (status ``queued``), written when the response is
queued (attempt 0). Each run then writes ``response.in_progress`` as its first event, numbered as
the engine's ``ResponseBuilder.start`` numbers it, and the engine's events after it.

A cancelled response ends with ``response.failed`` whose response has status ``cancelled`` and
no output, without an ``error`` event before it: what OpenAI sends.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from proxy.errors import GatewayError
from proxy.schema.codec import encode
from proxy.schema.events import ResponseCreated, ResponseFailed, ResponseInProgress
from proxy.schema.response import ResponseResource
from proxy.store import ResponseStore
from proxy.store.base import Closing, LoggedEvent
from proxy.streaming import Event, ResponseBuilder, event_type

OPENING_EVENTS = 1
"""Events written when the response is queued; a run's events are numbered after them."""
_TRIES = 5
"""Attempts at closing a log that others append to meanwhile (each loses only to an append)."""


def logged(events: Sequence[Event]) -> list[LoggedEvent]:
    return [LoggedEvent(event.sequence_number, event_type(event), encode(event)) for event in events]


def opening(resource: ResponseResource) -> list[LoggedEvent]:
    """``response.created`` for the queued response."""
    return logged([ResponseCreated(sequence_number=0, response=msgspec.structs.replace(resource, output=[]))])


def started(resource: ResponseResource) -> list[LoggedEvent]:
    """A run's first event, ``response.in_progress``."""
    snapshot = msgspec.structs.replace(resource, output=[])
    return logged([ResponseInProgress(sequence_number=OPENING_EVENTS, response=snapshot)])


def failure(resource: ResponseResource, error: GatewayError, first: int) -> list[LoggedEvent]:
    """``error`` then ``response.failed`` from ``first`` on; ``resource`` becomes ``failed``."""
    events = ResponseBuilder(resource).fail(error)
    for offset, event in enumerate(events):  # a fresh builder numbers from 0
        event.sequence_number = first + offset
    return logged(events)


async def conclude(store: ResponseStore, team: str, response_id: str, *, error: GatewayError | None,
                   unless_started: bool = False) -> bool:
    """End the response as it stands in the store: ``failed`` with ``error``, or ``cancelled``
    when ``error`` is None or a cancel was requested. ``unless_started``: only while no run has
    started. Returns whether this call ended it (False: it had ended, or a run started)."""
    for _ in range(_TRIES):
        state = await store.event_log_state(team, response_id)
        stored = await store.load(team, response_id)
        if state is None or stored is None or state.closed or (unless_started and state.attempt > 0):
            return False
        resource = stored.response
        closing: Closing = "finished"
        if error is not None and not state.cancel_requested:
            events = failure(resource, error, state.next_sequence)
        else:
            closing, resource.status, resource.output = "cancelled", "cancelled", []
            events = logged([ResponseFailed(sequence_number=state.next_sequence, response=resource)])
        # Stored first, so that whoever sees the log closed finds the final response stored.
        await store.save(team, resource, stored.input_items)
        if await store.append_events(team, response_id, state.attempt, events, closing=closing):
            return True
    return False
