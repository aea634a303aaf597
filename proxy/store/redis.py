"""``RedisStore``: responses shared by every gateway replica, kept in Redis.

Keys, where ``T`` is the team with ``%`` and ``:`` percent-escaped so that one team's keys can
never spell another team's (team ``a`` + id ``b:x`` against team ``a:b`` + id ``x``):

- ``{prefix}resp:T:{response_id}``, a hash: ``response`` (JSON) and ``input`` (JSON array)
- ``{prefix}ids:T:{response_id}``, a set: the item ids the response indexed, for ``delete``
- ``{prefix}item:T:{item_id}``, a hash: ``response_id`` and ``body`` (the item's JSON)
- ``{prefix}log:{T:response_id}``, a stream: a background response's events; entry ``A-(S+1)`` is
  event ``S`` of attempt ``A`` (fields ``t``, the type, and ``e``, the JSON), so a new attempt's
  entries sort after the one it supersedes and ``XREAD`` wakes its followers
- ``{prefix}logstate:{T:response_id}``, a hash: the log's ``attempt``, ``next`` sequence number,
  ``base`` (the first after attempt 0's events), ``closed`` and ``cancel``

Every key gets the store's TTL, renewed on each save and append. A save and a delete are one Lua
script each; both span several keys, so this needs standalone or Sentinel Redis, not Cluster. The
event log's two keys share a hash tag, so its scripts are Cluster-safe.

Saves are on the path of nearly every reply (``store`` defaults to true), so they go through
``BatchedScript``: packed once, on a connection of their own, the saves of concurrent requests
pipelined together. As a MULTI/EXEC of redis-py commands a short response's save cost about
220 us of CPU, more than half of what the rest of its request cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from policies.backend import reconnect_once
from policies.redis_batch import BatchedScript
from proxy.schema.codec import decode_item, decode_items, decode_resource, encode
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

THIRTY_DAYS = 30 * 24 * 3600
_MAX_CONNECTIONS = 64
_MAX_FOLLOWERS = 512
"""Connections for followers blocked in XREAD, apart so that they cannot starve other calls."""
_POOL_TIMEOUT_S = 10.0

# KEYS: the response hash, its item-id set, then the hash of each item it indexes. ARGV: the
# response's JSON, the input items' JSON array, the TTL in seconds (0: none), the response id,
# then each indexed item's id and JSON, in the order of KEYS (a repeated id keeps its last form).
# The ids go to SADD a thousand at a time: Lua's unpack fails past a few thousand values.
_SAVE_SCRIPT = """
redis.call('HSET', KEYS[1], 'response', ARGV[1], 'input', ARGV[2])
local count = #KEYS - 2
for first = 1, count, 1000 do
    local ids = {}
    for i = first, math.min(first + 999, count) do
        ids[#ids + 1] = ARGV[3 + 2 * i]
    end
    redis.call('SADD', KEYS[2], unpack(ids))
end
for i = 1, count do
    redis.call('HSET', KEYS[2 + i], 'response_id', ARGV[4], 'body', ARGV[4 + 2 * i])
end
if ARGV[3] ~= '0' then
    for i = 1, #KEYS do
        redis.call('EXPIRE', KEYS[i], ARGV[3])
    end
end
return 1
"""

# KEYS: the response hash. What ``load`` reads, as a script so that it goes through the saves' pipe.
_LOAD_SCRIPT = "return redis.call('HMGET', KEYS[1], 'response', 'input')"

# KEYS: the response hash, its item-id set. ARGV: the response id, the team's item key prefix.
# It runs in Redis so that checking an index entry's owner and deleting it cannot race a save.
_DELETE_SCRIPT = """
if redis.call('DEL', KEYS[1]) == 0 then
    return 0
end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local key = ARGV[2] .. id
    if redis.call('HGET', key, 'response_id') == ARGV[1] then
        redis.call('DEL', key)
    end
end
redis.call('DEL', KEYS[2])
return 1
"""


# KEYS: the log stream, its state hash. ARGV: attempt, first sequence number, closing ('' when
# not closing), TTL in seconds (0: none), then type and JSON of each event.
_APPEND_SCRIPT = """
local state = redis.call('HMGET', KEYS[2], 'attempt', 'next', 'base', 'closed', 'cancel')
local latest = tonumber(state[1]) or 0
local nxt = tonumber(state[2]) or 0
local base = tonumber(state[3]) or 0
local attempt = tonumber(ARGV[1])
local first = tonumber(ARGV[2])
if state[4] or attempt < latest or (ARGV[3] == 'finished' and state[5]) then
    return 0
end
if attempt > latest then
    if latest > 0 then  -- a new run: the superseded one's events are never read again
        for _, entry in ipairs(redis.call('XRANGE', KEYS[1], latest .. '-0', latest .. '-' .. nxt)) do
            redis.call('XDEL', KEYS[1], entry[1])
        end
    end
    nxt = base
end
if first ~= nxt then
    return 0
end
local count = (#ARGV - 4) / 2
for i = 0, count - 1 do
    redis.call('XADD', KEYS[1], attempt .. '-' .. (first + i + 1), 't', ARGV[5 + 2 * i], 'e', ARGV[6 + 2 * i])
end
nxt = first + count
if attempt == 0 then
    base = nxt
end
redis.call('HSET', KEYS[2], 'attempt', attempt, 'next', nxt, 'base', base)
if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[2], 'closed', ARGV[3])
end
if ARGV[4] ~= '0' then
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
"""

# KEYS: the log stream, its state hash. ARGV: after. Returns nil without a log, else the state
# fields, attempt 0's entries after ARGV[1], and the latest attempt's.
_READ_SCRIPT = """
local state = redis.call('HMGET', KEYS[2], 'attempt', 'next', 'base', 'closed', 'cancel')
if not state[2] then
    return false
end
local attempt, nxt, base = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
local after = tonumber(ARGV[1])
local opening, run = {}, {}
if after + 1 < base then
    opening = redis.call('XRANGE', KEYS[1], '0-' .. (after + 2), '0-' .. base)
end
if attempt > 0 and after + 1 < nxt then
    run = redis.call('XRANGE', KEYS[1], attempt .. '-' .. (math.max(after, base - 1) + 2), attempt .. '-' .. nxt)
end
return {state, opening, run}
"""

# KEYS: the log's state hash. Returns nil without a log, else the state fields after.
_CANCEL_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return false
end
if not redis.call('HGET', KEYS[1], 'closed') then
    redis.call('HSET', KEYS[1], 'cancel', '1')
end
return redis.call('HMGET', KEYS[1], 'attempt', 'next', 'base', 'closed', 'cancel')
"""

_STATE_FIELDS = ["attempt", "next", "base", "closed", "cancel"]


def connection_pool(url: str, max_connections: int) -> BlockingConnectionPool:
    """A blocking pool: past ``max_connections`` a caller waits for a free connection instead of
    failing with "Too many connections" under load. A command on a connection Redis closed (a
    restart) is retried on a fresh one, rather than failing its request."""
    return BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=_POOL_TIMEOUT_S,
                                           retry=reconnect_once())


class RedisStore:
    """A ``ResponseStore`` in Redis; ``ttl_seconds=None`` keeps responses until deleted."""

    def __init__(self, url: str, *, prefix: str = "interlock:", ttl_seconds: int | None = THIRTY_DAYS) -> None:
        self._url = url
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._client: Redis | None = None
        self._followers: Redis | None = None
        self._save: BatchedScript | None = None
        self._load: BatchedScript | None = None

    async def start(self) -> None:
        # Connections open on first use; /readyz reports an unreachable server through ping.
        # Replies stay bytes (decode_responses is off), hence the casts where redis-py's types
        # also allow str.
        self._client = Redis.from_pool(connection_pool(self._url, _MAX_CONNECTIONS))  # it closes its pool
        self._followers = Redis.from_pool(connection_pool(self._url, _MAX_FOLLOWERS))
        self._save = BatchedScript(self._client, _SAVE_SCRIPT)
        self._load = self._save.pipe.make(_LOAD_SCRIPT)

    async def close(self) -> None:
        if self._save is not None:
            await self._save.close()  # the pipe of both scripts
            self._save = self._load = None
        for client in (self._client, self._followers):
            if client is not None:
                await client.aclose()
        self._client = self._followers = None

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError, RuntimeError):
            return False

    async def save(self, team: str, response: ResponseResource, input_items: list[Item]) -> None:
        if self._save is None:
            raise RuntimeError("RedisStore is not started")
        inputs = encode_items(input_items)
        # In input-then-output order, so an id repeated within one save keeps its last form.
        indexed = [item for item in inputs + encode_items(response.output) if item.indexed]
        keys = [self._key("resp", team, response.id), self._key("ids", team, response.id),
                *(self._key("item", team, item.id) for item in indexed)]
        args: list[str | int | bytes] = [encode(response), _json_array(inputs), self._ttl or 0, response.id]
        for item in indexed:
            args += [item.id, item.body]
        await self._save(keys, args)

    async def load(self, team: str, response_id: str) -> StoredResponse | None:
        if self._load is None:
            raise RuntimeError("RedisStore is not started")
        fields = await self._load([self._key("resp", team, response_id)], [])
        body, inputs = cast(list[bytes | None], fields)
        if body is None or inputs is None:
            return None
        return StoredResponse(team=team, response=decode_resource(body), input_items=decode_items(inputs))

    async def delete(self, team: str, response_id: str) -> bool:
        keys = [self._key("resp", team, response_id), self._key("ids", team, response_id)]
        script = self._redis.register_script(_DELETE_SCRIPT)  # cheap: it only hashes the source
        deleted = await script(keys=keys, args=[response_id, self._key("item", team, "")])
        if deleted:
            await self._redis.delete(*self._log_keys(team, response_id))
        return bool(deleted)

    async def list_input_items(
        self, team: str, response_id: str, *, limit: int, order: Order, after: str | None
    ) -> tuple[list[Item], bool] | None:
        inputs = await self._redis.hget(self._key("resp", team, response_id), "input")
        if inputs is None:
            return None
        return _page(decode_items(cast(bytes, inputs)), limit, order, after)

    async def get_items(self, team: str, item_ids: Sequence[str]) -> dict[str, Item]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for item_id in ids:
                pipe.hget(self._key("item", team, item_id), "body")
            bodies = await pipe.execute()
        found = zip(ids, bodies, strict=True)
        return {item_id: decode_item(body) for item_id, body in found if body is not None}

    async def append_events(self, team: str, response_id: str, attempt: int, events: Sequence[LoggedEvent], *,
                            closing: Closing | None = None) -> bool:
        check_numbering(events)
        args: list[str | int | bytes] = [attempt, events[0].sequence_number, closing or "", self._ttl or 0]
        for event in events:
            args += [event.type, event.body]
        script = self._redis.register_script(_APPEND_SCRIPT)  # cheap: it only hashes the source
        return bool(await script(keys=self._log_keys(team, response_id), args=args))

    async def read_events(self, team: str, response_id: str, *, after: int) -> EventLog | None:
        script = self._redis.register_script(_READ_SCRIPT)
        found = await script(keys=self._log_keys(team, response_id), args=[after])
        if found is None:
            return None
        state, opening, run = found
        return EventLog(_state(state), [_logged(entry) for entry in [*opening, *run]])

    async def event_log_state(self, team: str, response_id: str) -> EventLogState | None:
        state = cast(list[bytes | None], await self._redis.hmget(self._log_keys(team, response_id)[1], _STATE_FIELDS))
        return None if state[1] is None else _state(state)

    async def request_cancel(self, team: str, response_id: str) -> EventLogState | None:
        script = self._redis.register_script(_CANCEL_SCRIPT)
        state = await script(keys=self._log_keys(team, response_id)[1:])
        return None if state is None else _state(state)

    async def wait_events(self, team: str, response_id: str, *, attempt: int, after: int, timeout: float) -> None:
        if self._followers is None:
            raise RuntimeError("RedisStore is not started")
        # Entry ids order attempts before sequence numbers: anything later than the last event read,
        # a new attempt's first included, wakes this.
        log_key = self._log_keys(team, response_id)[0]
        await self._followers.xread({log_key: f"{attempt}-{after + 1}"}, count=1, block=max(int(timeout * 1000), 1))

    def _log_keys(self, team: str, response_id: str) -> list[str]:
        """The stream and state hash of a response's event log, in one hash slot (the ``{...}`` tag)."""
        escaped = team.replace("%", "%25").replace(":", "%3A")
        return [f"{self._prefix}{kind}:{{{escaped}:{response_id}}}" for kind in ("log", "logstate")]

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError("RedisStore is not started")
        return self._client

    def _key(self, kind: str, team: str, name: str) -> str:
        escaped = team.replace("%", "%25").replace(":", "%3A")
        return f"{self._prefix}{kind}:{escaped}:{name}"


def _json_array(items: list[EncodedItem]) -> bytes:
    """The items as one JSON array, from their already encoded bodies."""
    return b"[" + b",".join(item.body for item in items) + b"]"


def _page(items: list[Item], limit: int, order: Order, after: str | None) -> tuple[list[Item], bool]:
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        start = next((index + 1 for index, item in enumerate(ordered) if item.id == after), -1)
        if start < 0:
            return [], False
    return ordered[start : start + limit], len(ordered) > start + limit


def _state(fields: list[bytes | None]) -> EventLogState:
    """An ``EventLogState`` from the state hash's ``_STATE_FIELDS``."""
    attempt, next_sequence, _base, closed, cancel = fields
    return EventLogState(attempt=int(attempt or 0), next_sequence=int(next_sequence or 0), closed=closed is not None,
                         cancel_requested=cancel is not None)


def _logged(entry: list[bytes | list[bytes]]) -> LoggedEvent:
    """A log stream entry ``[id, [b"t", type, b"e", json]]`` as a ``LoggedEvent``."""
    entry_id, fields = cast(bytes, entry[0]), cast(list[bytes], entry[1])
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    return LoggedEvent(int(entry_id.partition(b"-")[2]) - 1, values[b"t"].decode(), values[b"e"])
