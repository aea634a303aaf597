"""What every response store offers: the ``ResponseStore`` protocol and the record it returns.

A store keeps, per team, each stored response with the input items it was created from, and an
index from item id to item so that a later request can resolve ``item_reference`` inputs.
Everything is scoped to the team: another team's response or item reads as absent.

A background response also has an event log: its streaming events, kept as they are produced so
that ``GET /v1/responses/{id}?stream=true`` can replay them and follow the live ones from any
replica. The log is also where a cancel is recorded, so that cancelling and finishing cannot both
win.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

from msgspec import Struct

from proxy.schema.codec import encode
from proxy.schema.items import Item, ItemReference
from proxy.schema.response import ResponseResource

Order = Literal["asc", "desc"]

Closing = Literal["finished", "cancelled"]
"""How an event log is closed: ``finished`` by the response's own terminal event (refused once a
cancel was requested), ``cancelled`` by the terminal event of a cancel."""


class StoredResponse(Struct, kw_only=True):
    """A stored response as ``load`` returns it."""

    team: str
    """The team that created the response; the only team that may read it."""
    response: ResponseResource
    """The response as last saved (``output`` may hold ``OpaqueItem`` members)."""
    input_items: list[Item]
    """The request's input items in conversation order, as ``GET .../input_items`` lists them."""


class LoggedEvent(NamedTuple):
    """One streaming event of a background response, as its event log keeps it."""

    sequence_number: int
    type: str
    """The event's ``type``, for the SSE ``event:`` line."""
    body: bytes
    """The event's JSON."""


class EventLogState(Struct, kw_only=True, frozen=True):
    """Where an event log stands."""

    attempt: int
    """The latest run that appended: 0 while only the events written at creation are there."""
    next_sequence: int
    """The sequence number the next event of ``attempt`` gets."""
    closed: bool
    """A terminal event was appended; nothing more will be."""
    cancel_requested: bool
    """A cancel was requested while the log was open: the response ends ``cancelled``."""


class EventLog(NamedTuple):
    state: EventLogState
    events: list[LoggedEvent]


class ResponseStore(Protocol):
    """Persistence for ``store: true`` responses. Implementations must not block the event loop."""

    async def start(self) -> None:
        """Open connections and create tables; called once before any other method."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    async def ping(self) -> bool:
        """True when the backend answers (for ``/readyz``); never raises."""
        ...

    async def save(self, team: str, response: ResponseResource, input_items: list[Item]) -> None:
        """Insert or replace the response ``response.id`` of ``team`` with its input items.

        A response may be saved while in progress and again once complete. Every item in
        ``input_items`` and ``response.output`` must carry a string id. Each of them is indexed by
        id for ``get_items``; ids are not unique across responses (clients replay history with
        their own ids), so the latest save of an id wins. ``item_reference`` inputs are kept in
        the input list but not indexed: the index resolves references, it never points at one.
        """
        ...

    async def load(self, team: str, response_id: str) -> StoredResponse | None:
        """The stored response, or None when it is absent or belongs to another team."""
        ...

    async def delete(self, team: str, response_id: str) -> bool:
        """Remove the response, its event log and the index entries still pointing at it.

        Returns False when it is absent or belongs to another team. An item id that a later
        response saved again stays resolvable.
        """
        ...

    async def list_input_items(
        self, team: str, response_id: str, *, limit: int, order: Order, after: str | None
    ) -> tuple[list[Item], bool] | None:
        """One page of the response's input items and whether more follow.

        ``order="asc"`` is conversation order, ``"desc"`` its reverse; ``after`` is an item id
        and the page starts after its first occurrence in that order (an unknown ``after`` gives
        an empty page). None when the response is absent or belongs to another team.
        """
        ...

    async def get_items(self, team: str, item_ids: Sequence[str]) -> dict[str, Item]:
        """The team's indexed items among ``item_ids``, by id; ids not found are left out."""
        ...

    async def append_events(self, team: str, response_id: str, attempt: int, events: Sequence[LoggedEvent], *,
                            closing: Closing | None = None) -> bool:
        """Append ``events`` (numbered consecutively, at least one) to the response's event log.

        Attempt 0 writes the events a response starts with, when it is created; each run of its
        job (attempt 1, 2, ...) continues after them. A run with a higher attempt than the log's
        supersedes the latest one, whose events are no longer read. ``closing`` makes these the
        last events. Nothing is written, and the result is False, when the log is closed,
        ``attempt`` is older than the log's, the first event is not the attempt's next sequence
        number (``next_sequence`` for the log's attempt, the first after attempt 0's events for a
        new one), or ``closing`` is ``finished`` after a cancel was requested.
        """
        ...

    async def read_events(self, team: str, response_id: str, *, after: int) -> EventLog | None:
        """The log's state and its events numbered above ``after``, in order: attempt 0's, then
        those of the log's attempt. None when the response has no log or belongs to another team."""
        ...

    async def event_log_state(self, team: str, response_id: str) -> EventLogState | None:
        """The log's state alone; None as for ``read_events``."""
        ...

    async def request_cancel(self, team: str, response_id: str) -> EventLogState | None:
        """Record a cancel unless the log is closed, and return the state after; None as for
        ``read_events``."""
        ...

    async def wait_events(self, team: str, response_id: str, *, attempt: int, after: int, timeout: float) -> None:
        """Return once the log may hold more than a read that saw ``attempt`` and events up to
        ``after`` (a later event, a new attempt), or after ``timeout`` seconds at most; callers
        read again either way, so an early return costs a read, never an event."""
        ...


class EncodedItem(NamedTuple):
    """An item ready to write: its id, its JSON and whether it belongs in the item index."""

    id: str
    body: bytes
    indexed: bool
    """False for ``item_reference``: indexing one would shadow the item it points at."""


def encode_items(items: Sequence[Item]) -> list[EncodedItem]:
    """Encode ``items`` in order, before anything is written, so a missing id fails the whole save."""
    encoded = []
    for item in items:
        if not isinstance(item.id, str):
            raise ValueError(f"every stored item needs a string id; a {type(item).__name__} has none")
        encoded.append(EncodedItem(item.id, encode(item), not isinstance(item, ItemReference)))
    return encoded


def check_numbering(events: Sequence[LoggedEvent]) -> None:
    """Refuse, before anything is written, an append that is empty or not numbered consecutively."""
    if not events:
        raise ValueError("an append needs at least one event")
    first = events[0].sequence_number
    if any(event.sequence_number != first + offset for offset, event in enumerate(events)):
        raise ValueError(f"events must be numbered consecutively: {[e.sequence_number for e in events]}")
