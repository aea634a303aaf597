"""The ``truncation`` rule: fit a conversation to a deployment's context window before any
upstream call, or refuse it with ``context_length_exceeded``.

When the estimated input (``proxy.token_count``) is within the window, or the window is unknown,
the conversation goes as it is. Over the window, ``truncation: "disabled"`` (the default) is a
400; ``"auto"`` drops the oldest items until the rest fits, by these rules:

* items are dropped in **units**: a function call together with its outputs (matched by
  ``call_id``, for OpenAI's other ``*_call`` items too), and reasoning together with the item
  that follows it, so no call loses its output and no reasoning is cut from what it led to;
* system and developer messages are never dropped: they are instructions, not history;
* the unit of the newest item is never dropped: it is what the request asks about;
* if the rest still does not fit, the request is refused as with ``"disabled"``.

The rule is pure: the caller passes the window and, if it likes, its own counting function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from msgspec import UnsetType

from proxy.errors import ContextTooLong
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message, OpaqueItem, Reasoning
from proxy.schema.request import Truncation
from proxy.token_count import item_tokens


def fit_conversation(items: Sequence[Item], *, truncation: Truncation | UnsetType | None, context_window: int | None,
                     fixed_tokens: int = 0, count: Callable[[Item], int] = item_tokens) -> list[Item]:
    """The items to send: all of them when they fit ``context_window`` (or it is ``None``), else
    what ``truncation: "auto"`` keeps; raises ``ContextTooLong`` (400, ``param: "input"``) when
    truncation is not ``"auto"`` or cannot make the conversation fit.

    ``fixed_tokens``: what is sent whatever is dropped (instructions, tool definitions, output
    reserved by the caller); ``count``: the tokens of one item (default the gateway's estimate)."""
    if context_window is None:
        return list(items)
    sizes = [count(item) for item in items]
    total = fixed_tokens + sum(sizes)
    if total <= context_window:
        return list(items)
    if truncation != "auto":
        raise ContextTooLong(f"The input is about {total} tokens, more than this model's context window of "
                             f"{context_window}; shorten it or set 'truncation' to 'auto'.", param="input")
    units = _units(items)
    newest = max(units, key=max, default=None)
    dropped: set[int] = set()
    for unit in units:
        if total <= context_window:
            break
        if unit is newest:
            continue
        dropped.update(unit)
        total -= sum(sizes[index] for index in unit)
    if total > context_window:
        raise ContextTooLong(f"The input does not fit this model's context window of {context_window} tokens even "
                             f"with older items dropped (about {total} tokens remain).", param="input")
    return [item for index, item in enumerate(items) if index not in dropped]


def _units(items: Sequence[Item]) -> list[list[int]]:
    """Droppable groups of item positions, oldest first (by their first item); pinned
    system and developer messages belong to none."""
    units: list[list[int]] = []
    calls: dict[str, list[int]] = {}  # call_id -> the unit of its call, for the outputs that follow
    leading: list[int] = []  # reasoning waiting for the item it belongs to
    for index, item in enumerate(items):
        if isinstance(item, Message) and item.role in ("system", "developer"):
            continue
        if isinstance(item, Reasoning):
            leading.append(index)
            continue
        call_id, is_output = _call_of(item)
        if is_output and call_id in calls:
            calls[call_id].append(index)
            continue
        unit = [*leading, index]
        leading = []
        units.append(unit)
        if call_id is not None and not is_output:
            calls[call_id] = unit
    if leading:
        units.append(leading)
    return units


def _call_of(item: Item) -> tuple[str | None, bool]:
    """``(call_id, is_output)`` for calls and their outputs; ``(None, False)`` for anything else."""
    if isinstance(item, FunctionCall):
        return item.call_id, False
    if isinstance(item, FunctionCallOutput):
        return item.call_id, True
    if isinstance(item, OpaqueItem) and isinstance(item.data.get("call_id"), str):
        return item.data["call_id"], item.type.endswith("_output")
    return None, False
