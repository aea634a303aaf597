"""``SqliteStore``: the embedded default, one database file on local disk.

sqlite3 blocks, so every call runs on one dedicated worker thread that creates and owns the only
connection; one thread also serialises this process's writes, which SQLite wants anyway. JSON is
encoded on the event loop, so a save stores the objects as they were when it was called, and
decoded there too; the worker only moves bytes.

Saves are on the path of nearly every reply (``store`` defaults to true), so the saves made while
the worker writes earlier ones go to it together, in one transaction, each in a savepoint of its
own so that one that fails fails alone: a thread hop and a commit per group, not per save.

Followers of an event log are woken by this process's appends at once; appends by another
process sharing the file are seen by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, TypeVarTuple

import msgspec

from proxy.schema.codec import decode_item, decode_resource, encode
from proxy.schema.items import Item
from proxy.schema.response import ResponseResource
from proxy.store.base import (
    Closing,
    EncodedItem,
    EventLog,
    EventLogState,
    LoggedEvent,
    Order,
    StoredResponse,
    check_numbering,
    encode_items,
)

_T = TypeVar("_T")
_Save = tuple[str, str, int, bytes, list[EncodedItem], list[EncodedItem]]
"""A save's team, response id, creation time, response JSON, input and output items."""
_Args = TypeVarTuple("_Args")

_POLL_S = 0.25
"""How often a follower looks for events another process appended."""

# Every table is keyed by team first, so a response or item id another team used can be neither
# read nor overwritten, and each team's lookups stay on its own slice of the primary key.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    team TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (team, id)
);
CREATE TABLE IF NOT EXISTS input_items (
    team TEXT NOT NULL,
    response_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (team, response_id, position)
);
CREATE TABLE IF NOT EXISTS items (
    team TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (team, item_id)
);
CREATE INDEX IF NOT EXISTS items_by_response ON items (team, response_id);
CREATE TABLE IF NOT EXISTS event_logs (
    team TEXT NOT NULL,
    response_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    next_sequence INTEGER NOT NULL,
    base INTEGER NOT NULL,  -- the first sequence number after attempt 0's events
    closed INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL,
    PRIMARY KEY (team, response_id)
);
CREATE TABLE IF NOT EXISTS events (
    team TEXT NOT NULL,
    response_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    sequence_number INTEGER NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (team, response_id, attempt, sequence_number)
);
"""


class SqliteStore:
    """A ``ResponseStore`` in an SQLite file (``":memory:"`` for a private in-memory database)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._appended: dict[tuple[str, str], asyncio.Event] = {}
        """Per followed log, set (and dropped) when this process appends to it."""
        self._saves: list[tuple[_Save, asyncio.Future[None]]] = []
        """Saves not yet handed to the worker thread (``_write_saves``)."""
        self._writer: asyncio.Future[None] | None = None
        """Done once the saves being written are: a lone save's, or ``_write_saves``."""

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interlock-sqlite")
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, _connect, self._path)

    async def close(self) -> None:
        if self._executor is None:
            return
        while self._writer is not None:  # the saves already made are written first
            await asyncio.wait([self._writer])
        if self._conn is not None:
            await self._call(sqlite3.Connection.close)
        # The worker is idle now that the close ran, so this does not wait.
        self._executor.shutdown()
        self._executor = None
        self._conn = None

    async def ping(self) -> bool:
        try:
            await self._call(_ping)
        except (sqlite3.Error, RuntimeError):
            return False
        return True

    async def save(self, team: str, response: ResponseResource, input_items: list[Item]) -> None:
        inputs = encode_items(input_items)
        outputs = encode_items(response.output)
        save: _Save = (team, response.id, response.created_at, encode(response), inputs, outputs)
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            done = loop.create_future()
            self._saves.append((save, done))
            await done
            return
        # Nothing being written: this one goes at once, alone, from this task (no task to start).
        self._writer = writing = loop.create_future()
        try:
            await self._call(_save_alone, *save)
        finally:
            self._writer = loop.create_task(self._write_saves()) if self._saves else None
            writing.set_result(None)

    async def _write_saves(self) -> None:
        """Write the waiting saves, all of them at each turn of the worker, until none wait."""
        batch: list[tuple[_Save, asyncio.Future[None]]] = []
        try:
            while self._saves:
                batch, self._saves = self._saves, []
                saves = [save for save, _ in batch]
                try:
                    failures = await self._call(_save_all, saves)
                except Exception as exc:  # the group's BEGIN or COMMIT (busy, disk full)
                    failures = [exc] * len(batch)
                for (_, done), failure in zip(batch, failures, strict=True):
                    if done.done():  # its caller left
                        continue
                    if failure is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failure)
        finally:
            self._writer = None
            for _, done in batch + self._saves:  # only when cancelled: nothing will answer these
                done.cancel()
            self._saves = []

    async def load(self, team: str, response_id: str) -> StoredResponse | None:
        found = await self._call(_load, team, response_id)
        if found is None:
            return None
        body, inputs = found
        return StoredResponse(
            team=team, response=decode_resource(body), input_items=[decode_item(raw) for raw in inputs]
        )

    async def delete(self, team: str, response_id: str) -> bool:
        return await self._call(_delete, team, response_id)

    async def list_input_items(
        self, team: str, response_id: str, *, limit: int, order: Order, after: str | None
    ) -> tuple[list[Item], bool] | None:
        found = await self._call(_list_input_items, team, response_id, limit, order, after)
        if found is None:
            return None
        bodies, has_more = found
        return [decode_item(raw) for raw in bodies], has_more

    async def get_items(self, team: str, item_ids: Sequence[str]) -> dict[str, Item]:
        if not item_ids:
            return {}
        found = await self._call(_get_items, team, msgspec.json.encode(list(item_ids)).decode())
        return {item_id: decode_item(raw) for item_id, raw in found.items()}

    async def append_events(self, team: str, response_id: str, attempt: int, events: Sequence[LoggedEvent], *,
                            closing: Closing | None = None) -> bool:
        check_numbering(events)
        written = await self._call(_append_events, team, response_id, attempt, list(events), closing)
        if written:
            appended = self._appended.pop((team, response_id), None)
            if appended is not None:
                appended.set()
        return written

    async def read_events(self, team: str, response_id: str, *, after: int) -> EventLog | None:
        found = await self._call(_read_events, team, response_id, after)
        if found is None:
            return None
        state, events = found
        return EventLog(state, [LoggedEvent(*row) for row in events])

    async def event_log_state(self, team: str, response_id: str) -> EventLogState | None:
        return await self._call(_event_log_state, team, response_id)

    async def request_cancel(self, team: str, response_id: str) -> EventLogState | None:
        return await self._call(_request_cancel, team, response_id)

    async def wait_events(self, team: str, response_id: str, *, attempt: int, after: int, timeout: float) -> None:
        key = (team, response_id)
        appended = self._appended.setdefault(key, asyncio.Event())
        try:
            # Registered before looking, so an append between the caller's read and now is not missed.
            state = await self.event_log_state(team, response_id)
            if state is None or _moved(state, attempt, after):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(appended.wait(), min(timeout, _POLL_S))
        finally:
            if self._appended.get(key) is appended and not appended.is_set():
                del self._appended[key]

    async def _call(self, fn: Callable[[sqlite3.Connection, *_Args], _T], *args: *_Args) -> _T:
        """Run ``fn(connection, *args)`` on the worker thread."""
        if self._executor is None or self._conn is None:
            raise RuntimeError("SqliteStore is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn, *args)


# The functions below run on the worker thread only.


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    # Several gateway workers may share the file: WAL lets their reads run beside one writer, and
    # sqlite3's default 5 s busy timeout makes writers queue rather than fail.
    conn.execute("PRAGMA journal_mode=WAL")
    # Safe with WAL (the database cannot corrupt); a power cut may lose the last commits only.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _save_alone(conn: sqlite3.Connection, *save: *_Save) -> None:
    with conn:
        _save(conn, *save)


def _save_all(conn: sqlite3.Connection, saves: list[_Save]) -> list[Exception | None]:
    """The saves in one transaction, each in a savepoint: what each one failed with, or None."""
    failures: list[Exception | None] = []
    conn.execute("BEGIN")
    try:
        for save in saves:
            conn.execute("SAVEPOINT save")
            try:
                _save(conn, *save)
            except Exception as exc:
                conn.execute("ROLLBACK TO save")
                failures.append(exc)
            else:
                failures.append(None)
            conn.execute("RELEASE save")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return failures


def _save(
    conn: sqlite3.Connection,
    team: str,
    response_id: str,
    created_at: int,
    body: bytes,
    inputs: list[EncodedItem],
    outputs: list[EncodedItem],
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO responses (team, id, created_at, body) VALUES (?, ?, ?, ?)",
        (team, response_id, created_at, body),
    )
    conn.execute("DELETE FROM input_items WHERE team = ? AND response_id = ?", (team, response_id))
    conn.executemany(
        "INSERT INTO input_items (team, response_id, position, item_id, body) VALUES (?, ?, ?, ?, ?)",
        [(team, response_id, position, item.id, item.body) for position, item in enumerate(inputs)],
    )
    # Rows go in input-then-output order, so an id repeated within one save keeps its last form.
    conn.executemany(
        "INSERT OR REPLACE INTO items (team, item_id, response_id, body) VALUES (?, ?, ?, ?)",
        [(team, item.id, response_id, item.body) for item in inputs + outputs if item.indexed],
    )


def _load(conn: sqlite3.Connection, team: str, response_id: str) -> tuple[bytes, list[bytes]] | None:
    row = conn.execute("SELECT body FROM responses WHERE team = ? AND id = ?", (team, response_id)).fetchone()
    if row is None:
        return None
    inputs = conn.execute(
        "SELECT body FROM input_items WHERE team = ? AND response_id = ? ORDER BY position",
        (team, response_id),
    )
    return row[0], [body for (body,) in inputs]


def _delete(conn: sqlite3.Connection, team: str, response_id: str) -> bool:
    with conn:
        if conn.execute("DELETE FROM responses WHERE team = ? AND id = ?", (team, response_id)).rowcount == 0:
            return False
        conn.execute("DELETE FROM input_items WHERE team = ? AND response_id = ?", (team, response_id))
        conn.execute("DELETE FROM event_logs WHERE team = ? AND response_id = ?", (team, response_id))
        conn.execute("DELETE FROM events WHERE team = ? AND response_id = ?", (team, response_id))
        # An id a later response saved again now points at that response and is kept.
        conn.execute("DELETE FROM items WHERE team = ? AND response_id = ?", (team, response_id))
    return True


def _list_input_items(
    conn: sqlite3.Connection, team: str, response_id: str, limit: int, order: Order, after: str | None
) -> tuple[list[bytes], bool] | None:
    key: tuple[str | int, ...] = (team, response_id)
    if conn.execute("SELECT 1 FROM responses WHERE team = ? AND id = ?", key).fetchone() is None:
        return None
    # Only these fixed keywords are formatted into the SQL; every value is a parameter.
    direction, beyond = ("ASC", ">") if order == "asc" else ("DESC", "<")
    bound, params = "", key
    if after is not None:
        anchor = conn.execute(
            "SELECT position FROM input_items WHERE team = ? AND response_id = ? AND item_id = ? "
            f"ORDER BY position {direction} LIMIT 1",
            (*key, after),
        ).fetchone()
        if anchor is None:
            return [], False
        bound, params = f"AND position {beyond} ?", (*key, anchor[0])
    rows = conn.execute(
        f"SELECT body FROM input_items WHERE team = ? AND response_id = ? {bound} "
        f"ORDER BY position {direction} LIMIT ?",
        (*params, limit + 1),  # one extra row tells whether more follow
    ).fetchall()
    return [body for (body,) in rows[:limit]], len(rows) > limit


def _get_items(conn: sqlite3.Connection, team: str, ids_json: str) -> dict[str, bytes]:
    # The ids travel as one JSON array parameter, which no SQLite variable limit caps.
    rows = conn.execute(
        "SELECT item_id, body FROM items WHERE team = ? AND item_id IN (SELECT value FROM json_each(?))",
        (team, ids_json),
    )
    return dict(rows.fetchall())


def _moved(state: EventLogState, attempt: int, after: int) -> bool:
    """Whether the log holds more than a read that saw ``attempt`` and events up to ``after``."""
    return state.closed or state.attempt != attempt or state.next_sequence > after + 1


_STATE_COLUMNS = "attempt, next_sequence, base, closed, cancel_requested"


def _state_row(conn: sqlite3.Connection, team: str, response_id: str) -> tuple[int, int, int, int, int] | None:
    row = conn.execute(f"SELECT {_STATE_COLUMNS} FROM event_logs WHERE team = ? AND response_id = ?",
                       (team, response_id)).fetchone()
    return None if row is None else tuple(row)


def _state(row: tuple[int, int, int, int, int]) -> EventLogState:
    attempt, next_sequence, _base, closed, cancel_requested = row
    return EventLogState(attempt=attempt, next_sequence=next_sequence, closed=bool(closed),
                         cancel_requested=bool(cancel_requested))


def _append_events(conn: sqlite3.Connection, team: str, response_id: str, attempt: int, events: list[LoggedEvent],
                   closing: Closing | None) -> bool:
    with conn:
        # Taken before the read, so another process cannot append between this check and the write.
        conn.execute("BEGIN IMMEDIATE")
        latest, next_sequence, base, closed, cancel_requested = _state_row(conn, team, response_id) or (0, 0, 0, 0, 0)
        if closed or attempt < latest or (closing == "finished" and cancel_requested):
            return False
        first = next_sequence if attempt == latest else base
        if events[0].sequence_number != first:
            return False
        if attempt > latest:  # a new run: the superseded one's events are never read again
            conn.execute("DELETE FROM events WHERE team = ? AND response_id = ? AND attempt > 0", (team, response_id))
        conn.executemany(
            "INSERT INTO events (team, response_id, attempt, sequence_number, type, body) VALUES (?, ?, ?, ?, ?, ?)",
            [(team, response_id, attempt, *event) for event in events],
        )
        next_sequence = first + len(events)
        conn.execute(
            f"INSERT OR REPLACE INTO event_logs (team, response_id, {_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (team, response_id, attempt, next_sequence, next_sequence if attempt == 0 else base,
             closing is not None, cancel_requested),
        )
    return True


def _read_events(conn: sqlite3.Connection, team: str, response_id: str,
                 after: int) -> tuple[EventLogState, list[tuple[int, str, bytes]]] | None:
    row = _state_row(conn, team, response_id)
    if row is None:
        return None
    # Only attempt 0 and the latest attempt have rows: a new attempt deletes the one it supersedes.
    events = conn.execute(
        "SELECT sequence_number, type, body FROM events WHERE team = ? AND response_id = ? AND sequence_number > ? "
        "ORDER BY sequence_number",
        (team, response_id, after),
    ).fetchall()
    return _state(row), events


def _event_log_state(conn: sqlite3.Connection, team: str, response_id: str) -> EventLogState | None:
    row = _state_row(conn, team, response_id)
    return None if row is None else _state(row)


def _request_cancel(conn: sqlite3.Connection, team: str, response_id: str) -> EventLogState | None:
    with conn:
        conn.execute("UPDATE event_logs SET cancel_requested = 1 WHERE team = ? AND response_id = ? AND closed = 0",
                     (team, response_id))
    return _event_log_state(conn, team, response_id)
