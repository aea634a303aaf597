"""The ``ResponseStore`` contract, run against every backend.

The Redis cases use the real server at 127.0.0.1:6379 (marker ``redis``); an unreachable server
fails them rather than skipping them. Each test gets its own key prefix and removes its keys.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from proxy.schema.content import InputText, OutputText
from proxy.schema.items import Item, ItemReference, Message, OpaqueItem, OutputItem
from proxy.schema.response import ResponseResource, ResponseStatus, Usage
from proxy.store import RedisStore, ResponseStore, SqliteStore, StoredResponse, open_store
from proxy.store import sqlite as sqlite_store
from proxy.store.base import EventLog, EventLogState, LoggedEvent, Order
from proxy.store.redis import THIRTY_DAYS

REDIS_URL = "redis://127.0.0.1:6379/0"


def new_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"interlock-test:{uuid.uuid4().hex}:"


async def drop_keys(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseStore]:
    """A started store of each backend."""
    prefix = new_prefix() if request.param == "redis" else None
    backend: ResponseStore = (
        SqliteStore(str(tmp_path / "store.db")) if prefix is None else RedisStore(REDIS_URL, prefix=prefix)
    )
    await backend.start()
    try:
        # A Redis server that is down fails the test here: the contract must not pass unchecked.
        assert await backend.ping(), f"the {request.param} store does not answer"
        yield backend
    finally:
        await backend.close()
        if prefix is not None:
            await drop_keys(prefix)


def user_message(item_id: str, text: str = "hello") -> Message:
    return Message(id=item_id, role="user", content=[InputText(text=text)], status="completed")


def assistant_message(item_id: str, text: str = "hi there") -> Message:
    return Message(id=item_id, role="assistant", content=[OutputText(text=text)], status="completed")


def web_search(item_id: str) -> OpaqueItem:
    return OpaqueItem(
        {"type": "web_search_call", "id": item_id, "status": "completed", "action": {"query": "interlock"}}
    )


def make_response(
    response_id: str, output: Sequence[Item] = (), status: ResponseStatus = "completed"
) -> ResponseResource:
    response = ResponseResource(id=response_id, created_at=1_760_000_000, model="gpt-test", status=status)
    # An OpaqueItem is placed in output with a cast, as the engine does (see items.OutputItem).
    response.output = cast(list[OutputItem], list(output))
    return response


async def test_round_trip_keeps_known_and_opaque_items(store: ResponseStore) -> None:
    inputs: list[Item] = [user_message("msg_in"), web_search("ws_in"), assistant_message("msg_prev")]
    response = make_response(
        "resp_1",
        [web_search("ws_out"), assistant_message("msg_out")],
    )
    response.usage = Usage(input_tokens=3, output_tokens=4, total_tokens=7)
    response.metadata = {"ticket": "42"}
    await store.save("team-a", response, inputs)

    loaded = await store.load("team-a", "resp_1")

    assert loaded == StoredResponse(team="team-a", response=response, input_items=inputs)
    assert isinstance(loaded.response.output[0], OpaqueItem)
    assert loaded.response.output[0].data["action"] == {"query": "interlock"}
    assert isinstance(loaded.input_items[1], OpaqueItem)
    assert await store.load("team-a", "resp_absent") is None


async def test_save_again_replaces_the_response_and_its_inputs(store: ResponseStore) -> None:
    await store.save("team-a", make_response("resp_1", status="in_progress"), [user_message("msg_1", "v1")])
    done = make_response("resp_1", [assistant_message("msg_out")], status="completed")
    await store.save("team-a", done, [user_message("msg_1", "v2")])

    loaded = await store.load("team-a", "resp_1")

    assert loaded is not None
    assert loaded.response.status == "completed"
    assert loaded.response.output == [assistant_message("msg_out")]
    assert loaded.input_items == [user_message("msg_1", "v2")]
    assert await store.list_input_items("team-a", "resp_1", limit=10, order="asc", after=None) == (
        [user_message("msg_1", "v2")],
        False,
    )
    assert await store.get_items("team-a", ["msg_1", "msg_out"]) == {
        "msg_1": user_message("msg_1", "v2"),
        "msg_out": assistant_message("msg_out"),
    }


async def test_another_team_sees_nothing(store: ResponseStore) -> None:
    await store.save("team-a", make_response("resp_1", [assistant_message("msg_out")]), [user_message("msg_in")])

    assert await store.load("team-b", "resp_1") is None
    assert await store.list_input_items("team-b", "resp_1", limit=10, order="asc", after=None) is None
    assert await store.get_items("team-b", ["msg_in", "msg_out"]) == {}
    assert await store.delete("team-b", "resp_1") is False
    # The failed delete left the owner's response whole.
    assert await store.load("team-a", "resp_1") is not None
    assert await store.get_items("team-a", ["msg_in", "msg_out"]) == {
        "msg_in": user_message("msg_in"),
        "msg_out": assistant_message("msg_out"),
    }


async def test_team_names_with_separators_do_not_alias(store: ResponseStore) -> None:
    await store.save("a", make_response("b:resp_1"), [user_message("b:msg_1")])

    assert await store.load("a:b", "resp_1") is None
    assert await store.get_items("a:b", ["msg_1"]) == {}
    await store.save("a:b", make_response("resp_1"), [user_message("msg_1", "other team")])
    loaded = await store.load("a", "b:resp_1")
    assert loaded is not None
    assert loaded.input_items == [user_message("b:msg_1")]
    assert await store.get_items("a", ["b:msg_1"]) == {"b:msg_1": user_message("b:msg_1")}


async def test_delete_removes_the_response_and_its_items(store: ResponseStore) -> None:
    await store.save("team-a", make_response("resp_1", [assistant_message("msg_out")]), [user_message("msg_in")])

    assert await store.delete("team-a", "resp_1") is True

    assert await store.load("team-a", "resp_1") is None
    assert await store.list_input_items("team-a", "resp_1", limit=10, order="asc", after=None) is None
    assert await store.get_items("team-a", ["msg_in", "msg_out"]) == {}
    assert await store.delete("team-a", "resp_1") is False


async def test_item_ids_reused_across_responses(store: ResponseStore) -> None:
    # Clients replay history with their own ids, so the same id arrives with several responses.
    await store.save("team-a", make_response("resp_1"), [user_message("msg_1", "first")])
    await store.save("team-a", make_response("resp_2"), [user_message("msg_1", "second"), user_message("msg_2")])

    assert await store.get_items("team-a", ["msg_1", "msg_2", "msg_1", "msg_absent"]) == {
        "msg_1": user_message("msg_1", "second"),
        "msg_2": user_message("msg_2"),
    }
    # resp_2 saved msg_1 last, so deleting resp_1 must leave it resolvable.
    assert await store.delete("team-a", "resp_1") is True
    assert await store.get_items("team-a", ["msg_1", "msg_2"]) == {
        "msg_1": user_message("msg_1", "second"),
        "msg_2": user_message("msg_2"),
    }
    assert await store.delete("team-a", "resp_2") is True
    assert await store.get_items("team-a", ["msg_1", "msg_2"]) == {}


async def test_an_id_repeated_within_one_save_keeps_its_output_form(store: ResponseStore) -> None:
    response = make_response("resp_1", [assistant_message("dup", "from output")])
    await store.save("team-a", response, [user_message("dup", "from input")])

    assert await store.get_items("team-a", ["dup"]) == {"dup": assistant_message("dup", "from output")}


async def test_item_references_are_listed_but_not_indexed(store: ResponseStore) -> None:
    await store.save("team-a", make_response("resp_1"), [user_message("msg_1")])
    inputs: list[Item] = [ItemReference(id="msg_1"), user_message("msg_2")]
    await store.save("team-a", make_response("resp_2"), inputs)

    assert await store.get_items("team-a", ["msg_1"]) == {"msg_1": user_message("msg_1")}
    assert await store.list_input_items("team-a", "resp_2", limit=10, order="asc", after=None) == (inputs, False)


async def test_an_item_without_id_is_refused_before_anything_is_written(store: ResponseStore) -> None:
    nameless = Message(role="user", content="no id")

    with pytest.raises(ValueError, match="string id"):
        await store.save("team-a", make_response("resp_1"), [user_message("msg_1"), nameless])

    assert await store.load("team-a", "resp_1") is None
    assert await store.get_items("team-a", ["msg_1"]) == {}


INPUTS: list[Item] = [
    user_message("i0"),
    assistant_message("i1"),
    web_search("i2"),
    user_message("i3"),
    assistant_message("i4"),
]


@pytest.mark.parametrize(
    ("order", "limit", "after", "expected_ids", "has_more"),
    [
        ("asc", 2, None, ["i0", "i1"], True),
        ("asc", 2, "i1", ["i2", "i3"], True),
        ("asc", 2, "i2", ["i3", "i4"], False),
        ("asc", 5, None, ["i0", "i1", "i2", "i3", "i4"], False),
        ("asc", 100, "i4", [], False),
        ("desc", 2, None, ["i4", "i3"], True),
        ("desc", 10, "i3", ["i2", "i1", "i0"], False),
        ("desc", 1, "i1", ["i0"], False),
        ("asc", 3, "unknown", [], False),
        ("desc", 3, "unknown", [], False),
    ],
)
async def test_list_input_items_pages(
    store: ResponseStore, order: Order, limit: int, after: str | None, expected_ids: list[str], has_more: bool
) -> None:
    await store.save("team-a", make_response("resp_1", [assistant_message("i5")]), INPUTS)

    page = await store.list_input_items("team-a", "resp_1", limit=limit, order=order, after=after)

    by_id = {item.id: item for item in INPUTS}
    assert page == ([by_id[item_id] for item_id in expected_ids], has_more)


async def test_list_input_items_of_an_absent_response_is_none(store: ResponseStore) -> None:
    assert await store.list_input_items("team-a", "resp_absent", limit=10, order="asc", after=None) is None


async def test_concurrent_saves_are_all_readable(store: ResponseStore) -> None:
    # More saves and loads at once than one pipeline of the Redis store's pipe takes (they go out
    # in several, each answered to its own caller), and more listings than its pool has
    # connections (the pool must wait, not fail).
    saved = {
        f"resp_{n}": (
            make_response(f"resp_{n}", [assistant_message(f"out_{n}", f"answer {n}")]),
            user_message(f"in_{n}"),
        )
        for n in range(1000)
    }

    await asyncio.gather(*(store.save("team-a", response, [item]) for response, item in saved.values()))

    loaded = await asyncio.gather(*(store.load("team-a", response_id) for response_id in saved))
    assert loaded == [
        StoredResponse(team="team-a", response=response, input_items=[item]) for response, item in saved.values()
    ]
    listed = await asyncio.gather(*(store.list_input_items("team-a", response_id, limit=10, order="asc", after=None)
                                    for response_id in saved))
    assert listed == [([item], False) for _, item in saved.values()]
    out_ids = [f"out_{n}" for n in range(50)]
    assert await store.get_items("team-a", out_ids) == {
        f"out_{n}": assistant_message(f"out_{n}", f"answer {n}") for n in range(50)
    }


async def test_a_conversation_of_ten_thousand_items_is_saved_indexed_and_deleted(store: ResponseStore) -> None:
    # More ids than one Lua unpack takes (about 8,000): the Redis save adds them in parts.
    history = [user_message(f"in_{n}", f"turn {n}") for n in range(10_000)]
    await store.save("team-a", make_response("resp_1", [assistant_message("out_1")]), history)

    loaded = await store.load("team-a", "resp_1")
    assert loaded is not None and loaded.input_items == history
    picked = ["in_0", "in_4999", "in_9999", "out_1"]
    assert sorted(await store.get_items("team-a", picked)) == sorted(picked)

    assert await store.delete("team-a", "resp_1")
    assert await store.get_items("team-a", picked) == {}


async def test_a_two_megabyte_item_round_trips(store: ResponseStore) -> None:
    big = user_message("msg_big", "x" * (2 * 1024 * 1024))
    await store.save("team-a", make_response("resp_1", [assistant_message("msg_out")]), [big])

    loaded = await store.load("team-a", "resp_1")

    assert loaded is not None
    assert loaded.input_items == [big]
    assert await store.get_items("team-a", ["msg_big"]) == {"msg_big": big}


def events(first: int, count: int = 1, label: str = "") -> list[LoggedEvent]:
    """``count`` consecutive log events from ``first``; ``label`` tells runs apart in their JSON."""
    return [LoggedEvent(n, "response.output_text.delta", f'{{"sequence_number":{n},"run":"{label}"}}'.encode())
            for n in range(first, first + count)]


async def logged(store: ResponseStore, team: str, *, after: int = -1) -> list[LoggedEvent]:
    """The events of ``resp_1``'s log after ``after``; the log must exist."""
    log = await store.read_events(team, "resp_1", after=after)
    assert log is not None
    return log.events


async def test_event_log_reads_the_events_after_a_sequence_number(store: ResponseStore) -> None:
    assert await store.append_events("team-a", "resp_1", 0, events(0))
    assert await store.append_events("team-a", "resp_1", 1, events(1, 3))

    full = await store.read_events("team-a", "resp_1", after=-1)

    assert full == EventLog(EventLogState(attempt=1, next_sequence=4, closed=False, cancel_requested=False),
                            events(0) + events(1, 3))
    assert await logged(store, "team-a", after=2) == events(3)
    assert await logged(store, "team-a", after=3) == []
    assert await store.event_log_state("team-a", "resp_1") == full.state
    assert await store.read_events("team-a", "resp_absent", after=-1) is None
    assert await store.event_log_state("team-a", "resp_absent") is None


async def test_event_log_refuses_gaps_repeats_and_older_attempts(store: ResponseStore) -> None:
    assert await store.append_events("team-a", "resp_1", 0, events(0))
    assert not await store.append_events("team-a", "resp_1", 1, events(2))  # a gap
    assert await store.append_events("team-a", "resp_1", 1, events(1, 2))
    assert not await store.append_events("team-a", "resp_1", 1, events(2))  # a repeat
    assert not await store.append_events("team-a", "resp_1", 0, events(3))  # an older attempt
    assert await logged(store, "team-a") == events(0) + events(1, 2)
    with pytest.raises(ValueError, match="consecutively"):
        await store.append_events("team-a", "resp_1", 1, [*events(3), *events(5)])
    with pytest.raises(ValueError, match="at least one"):
        await store.append_events("team-a", "resp_1", 1, [])


async def test_a_new_attempt_supersedes_the_latest_one(store: ResponseStore) -> None:
    assert await store.append_events("team-a", "resp_1", 0, events(0))
    assert await store.append_events("team-a", "resp_1", 1, events(1, 3, "first"))
    assert await store.append_events("team-a", "resp_1", 2, events(1, 1, "second"))

    log = await store.read_events("team-a", "resp_1", after=-1)

    assert log == EventLog(EventLogState(attempt=2, next_sequence=2, closed=False, cancel_requested=False),
                           events(0) + events(1, 1, "second"))
    assert not await store.append_events("team-a", "resp_1", 1, events(4, 1, "first"))  # the superseded run
    assert await store.append_events("team-a", "resp_1", 2, events(2, 1, "second"))


async def test_closing_ends_the_log(store: ResponseStore) -> None:
    assert await store.append_events("team-a", "resp_1", 0, events(0))
    assert await store.append_events("team-a", "resp_1", 1, events(1, 2), closing="finished")

    assert not await store.append_events("team-a", "resp_1", 1, events(3))
    assert not await store.append_events("team-a", "resp_1", 2, events(1))
    closed = EventLogState(attempt=1, next_sequence=3, closed=True, cancel_requested=False)
    assert await store.request_cancel("team-a", "resp_1") == closed  # too late: nothing recorded
    assert await store.event_log_state("team-a", "resp_1") == closed


async def test_a_requested_cancel_lets_only_the_cancel_close_the_log(store: ResponseStore) -> None:
    assert await store.append_events("team-a", "resp_1", 0, events(0))
    assert await store.append_events("team-a", "resp_1", 1, events(1))

    state = await store.request_cancel("team-a", "resp_1")

    assert state == EventLogState(attempt=1, next_sequence=2, closed=False, cancel_requested=True)
    assert await store.append_events("team-a", "resp_1", 1, events(2))  # the run goes on until it notices
    assert not await store.append_events("team-a", "resp_1", 1, events(3), closing="finished")
    assert await store.append_events("team-a", "resp_1", 1, events(3), closing="cancelled")
    assert await store.event_log_state("team-a", "resp_1") == EventLogState(
        attempt=1, next_sequence=4, closed=True, cancel_requested=True)
    assert await store.request_cancel("team-a", "resp_absent") is None


async def test_event_log_belongs_to_the_team_and_goes_with_the_response(store: ResponseStore) -> None:
    await store.save("team-a", make_response("resp_1", status="queued"), [user_message("msg_1")])
    assert await store.append_events("team-a", "resp_1", 0, events(0))

    assert await store.read_events("team-b", "resp_1", after=-1) is None
    assert await store.request_cancel("team-b", "resp_1") is None
    assert await store.append_events("team-b", "resp_1", 0, events(0, 1, "b"))  # team-b's own log
    assert await logged(store, "team-a") == events(0)

    assert await store.delete("team-a", "resp_1")
    assert await store.read_events("team-a", "resp_1", after=-1) is None


async def test_wait_events_wakes_on_an_append_and_otherwise_times_out(store: ResponseStore) -> None:
    assert await store.append_events("team-a", "resp_1", 0, events(0))
    loop = asyncio.get_running_loop()

    started = loop.time()
    await store.wait_events("team-a", "resp_1", attempt=0, after=0, timeout=0.3)
    assert loop.time() - started < 2

    # Each step: what a follower saw last, then an append it must wake for: the next event, the
    # first of a run, and the first of a run superseding that one.
    for seen_attempt, seen_last, attempt, first in ((0, 0, 0, 1), (0, 1, 1, 2), (1, 2, 2, 2)):
        waiter = asyncio.create_task(store.wait_events("team-a", "resp_1", attempt=seen_attempt, after=seen_last,
                                                       timeout=10))
        await asyncio.sleep(0.05)
        started = loop.time()
        assert await store.append_events("team-a", "resp_1", attempt, events(first))
        await asyncio.wait_for(waiter, 2)
        assert loop.time() - started < 1


@pytest.mark.redis
async def test_redis_keys_carry_the_prefix_and_the_ttl() -> None:
    redis_prefix = new_prefix()
    stores = [
        RedisStore(REDIS_URL, prefix=f"{redis_prefix}ttl:"),
        RedisStore(REDIS_URL, prefix=f"{redis_prefix}forever:", ttl_seconds=None),
    ]
    client = Redis.from_url(REDIS_URL)
    try:
        for store in stores:
            await store.start()
            await store.save(
                "team-a", make_response("resp_1", [assistant_message("msg_out")]), [user_message("msg_in")]
            )
        ttl_keys = sorted([key async for key in client.scan_iter(match=f"{redis_prefix}ttl:*")])
        forever_keys = [key async for key in client.scan_iter(match=f"{redis_prefix}forever:*")]

        assert [key.decode().removeprefix(f"{redis_prefix}ttl:") for key in ttl_keys] == [
            "ids:team-a:resp_1",
            "item:team-a:msg_in",
            "item:team-a:msg_out",
            "resp:team-a:resp_1",
        ]
        for key in ttl_keys:
            assert THIRTY_DAYS - 60 < await client.ttl(key) <= THIRTY_DAYS
        assert len(forever_keys) == 4
        for key in forever_keys:
            assert await client.ttl(key) == -1  # no expiry
    finally:
        for store in stores:
            await store.close()
        await client.aclose()
        await drop_keys(redis_prefix)


@pytest.mark.redis
async def test_redis_event_log_keys_share_a_hash_slot_and_carry_the_ttl() -> None:
    prefix = new_prefix()
    store = RedisStore(REDIS_URL, prefix=prefix)
    client = Redis.from_url(REDIS_URL)
    await store.start()
    try:
        assert await store.append_events("team:a", "resp_1", 0, events(0))
        keys = sorted([key.decode() async for key in client.scan_iter(match=f"{prefix}*")])

        assert [key.removeprefix(prefix) for key in keys] == ["log:{team%3Aa:resp_1}", "logstate:{team%3Aa:resp_1}"]
        assert len({key_slot(key.encode()) for key in keys}) == 1  # one slot: the scripts run on Cluster
        for key in keys:
            assert THIRTY_DAYS - 60 < await client.ttl(key) <= THIRTY_DAYS
    finally:
        await store.close()
        await client.aclose()
        await drop_keys(prefix)


async def test_sqlite_creates_parent_directories_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "store.db"
    first = SqliteStore(str(path))
    await first.start()
    await first.save("team-a", make_response("resp_1"), [user_message("msg_1")])
    await first.close()

    second = SqliteStore(str(path))
    await second.start()
    try:
        loaded = await second.load("team-a", "resp_1")
    finally:
        await second.close()

    assert loaded is not None
    assert loaded.input_items == [user_message("msg_1")]


async def test_sqlite_saves_made_together_commit_together_and_fail_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[int] = []
    save_all, save_one = sqlite_store._save_all, sqlite_store._save

    def counted(conn: sqlite3.Connection, saves: list[sqlite_store._Save]) -> list[Exception | None]:
        groups.append(len(saves))
        return save_all(conn, saves)

    def failing_one(conn: sqlite3.Connection, team: str, response_id: str, *rest: Any) -> None:
        save_one(conn, team, response_id, *rest)  # written, then undone by its savepoint
        if response_id == "resp_13":
            raise sqlite3.IntegrityError("a save that fails")

    monkeypatch.setattr(sqlite_store, "_save_all", counted)
    monkeypatch.setattr(sqlite_store, "_save", failing_one)
    store = SqliteStore(str(tmp_path / "store.db"))
    await store.start()
    try:
        outcomes = await asyncio.gather(*(
            store.save("team-a", make_response(f"resp_{n}", [assistant_message(f"out_{n}")]), [user_message(f"in_{n}")])
            for n in range(100)), return_exceptions=True)
        loaded = await asyncio.gather(*(store.load("team-a", f"resp_{n}") for n in range(100)))
    finally:
        await store.close()

    assert [n for n, outcome in enumerate(outcomes) if outcome is not None] == [13]
    assert isinstance(outcomes[13], sqlite3.IntegrityError)
    assert [n for n, found in enumerate(loaded) if found is None] == [13]
    # The first goes at once, alone; the 99 made while it was written go to the worker as one
    # group, one transaction, not 99.
    assert groups == [99]


async def test_sqlite_close_writes_the_saves_already_made(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    store = SqliteStore(path)
    await store.start()
    saves = [asyncio.ensure_future(store.save("team-a", make_response(f"resp_{n}"), [user_message(f"in_{n}")]))
             for n in range(50)]
    await asyncio.sleep(0)  # all fifty made, the first one being written
    await store.close()
    assert all(save.done() and save.exception() is None for save in saves)

    reopened = SqliteStore(path)
    await reopened.start()
    try:
        assert all([await reopened.load("team-a", f"resp_{n}") for n in range(50)])
    finally:
        await reopened.close()


async def test_sqlite_ping_is_false_once_closed(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "store.db"))
    assert await store.ping() is False
    await store.start()
    assert await store.ping() is True
    await store.close()
    assert await store.ping() is False


async def test_open_store_absolute_sqlite_path(tmp_path: Path) -> None:
    path = tmp_path / "data" / "interlock.db"
    store = open_store(f"sqlite:///{path}")  # tmp_path is absolute, so this has four slashes

    assert isinstance(store, SqliteStore)
    await store.start()
    await store.close()
    assert path.is_file()


async def test_open_store_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///var/interlock.db")

    await store.start()
    await store.close()
    assert (tmp_path / "var" / "interlock.db").is_file()


async def test_open_store_in_memory_sqlite() -> None:
    store = open_store("sqlite://:memory:")
    assert isinstance(store, SqliteStore)
    await store.start()
    try:
        await store.save("team-a", make_response("resp_1"), [user_message("msg_1")])
        loaded = await store.load("team-a", "resp_1")
    finally:
        await store.close()
    assert loaded is not None
    assert loaded.input_items == [user_message("msg_1")]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/2"])
def test_open_store_redis(url: str) -> None:
    assert isinstance(open_store(url), RedisStore)


@pytest.mark.parametrize("url", ["", "sqlite://", "sqlite:///", "postgres://db/interlock", "memory://"])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported response store URL"):
        open_store(url)
