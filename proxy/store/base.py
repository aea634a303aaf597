"""What every response store offers: the ``ResponseStore`` protocol and the record it returns.

A store keeps, per team, each stored response with the input items it was created from, and an
index from item id to item so that a later request can resolve ``item_reference`` inputs.
Everything is scoped to the team: another team's response or item reads as absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

from msgspec import Struct

from proxy.schema.codec import encode
from proxy.schema.items import Item, ItemReference
from proxy.schema.response import ResponseResource

Order = Literal["asc", "desc"]


class StoredResponse(Struct, kw_only=True):
    """A stored response as ``load`` returns it."""

    team: str
    """The team that created the response; the only team that may read it."""
    response: ResponseResource
    """The response as last saved (``output`` may hold ``OpaqueItem`` members)."""
    input_items: list[Item]
    """The request's input items in conversation order, as ``GET .../input_items`` lists them."""


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
        """Remove the response and the index entries still pointing at it.

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
