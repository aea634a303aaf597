"""Identifiers the gateway mints, prefixed like OpenAI's so clients recognise them."""

from __future__ import annotations

import os

_POOL_BYTES = 4096
_ID_BYTES = 16


class _Entropy:
    """``os.urandom`` read a page at a time: a request mints an id per input item, and a system
    call per id showed in the profile. A forked child draws a page of its own."""

    def __init__(self) -> None:
        self.refill()

    def refill(self) -> None:
        self.pool = os.urandom(_POOL_BYTES)
        self.used = 0

    def take(self) -> bytes:
        if self.used == _POOL_BYTES:
            self.refill()
        start = self.used
        self.used = start + _ID_BYTES
        return self.pool[start:start + _ID_BYTES]


_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY.refill)


def new_id(prefix: str) -> str:
    return f"{prefix}_{_ENTROPY.take().hex()}"
