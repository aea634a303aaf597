"""Minted ids: OpenAI-like, 128 random bits each, never repeated (the entropy pool refills), and
a forked child does not repeat its parent's."""

from __future__ import annotations

import os
import re

from proxy.ids import new_id


def test_ids_are_prefixed_hex_and_never_repeat_across_refills() -> None:
    ids = [new_id("msg") for _ in range(5000)]  # about 20 pool refills
    assert all(re.fullmatch(r"msg_[0-9a-f]{32}", ident) for ident in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_mints_ids_of_its_own() -> None:
    new_id("x")  # the pool is in use when the process forks
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: write its next ids and leave at once
        os.write(write, " ".join(new_id("x") for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    childs = os.read(read, 4096).decode().split()
    os.close(read)
    assert status == 0 and len(childs) == 3
    parents = [new_id("x") for _ in range(3)]
    assert not set(childs) & set(parents)
