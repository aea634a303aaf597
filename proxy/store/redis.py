"""``RedisStore``: responses shared by every gateway replica, kept in Redis.

Keys, where ``T`` is the team with ``%`` and ``:`` percent-escaped so that one team's keys can
never spell another team's (team ``a`` + id ``b:x`` against team ``a:b`` + id ``x``):

- ``{prefix}resp:T:{response_id}``, a hash: ``response`` (JSON) and ``input`` (JSON array)
- ``{prefix}ids:T:{response_id}``, a set: the item ids the response indexed, for ``delete``
- ``{prefix}item:T:{item_id}``, a hash: ``response_id`` and ``body`` (the item's JSON)

Every key gets the store's TTL, renewed on each save. A save is one MULTI/EXEC and a delete one
Lua script; both span several keys, so this needs standalone or Sentinel Redis, not Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from proxy.schema.codec import decode_item, decode_items, decode_resource, encode
from proxy.schema.items import Item
from proxy.schema.response import ResponseResource
from proxy.store.base import EncodedItem, Order, StoredResponse, encode_items

THIRTY_DAYS = 30 * 24 * 3600
_MAX_CONNECTIONS = 64
_POOL_TIMEOUT_S = 10.0

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


class RedisStore:
    """A ``ResponseStore`` in Redis; ``ttl_seconds=None`` keeps responses until deleted."""

    def __init__(self, url: str, *, prefix: str = "interlock:", ttl_seconds: int | None = THIRTY_DAYS) -> None:
        self._url = url
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._client: Redis | None = None

    async def start(self) -> None:
        # Connections open on first use; /readyz reports an unreachable server through ping.
        # Replies stay bytes (decode_responses is off), hence the casts where redis-py's types
        # also allow str.
        # A blocking pool: past max_connections a request waits for a free connection instead of
        # failing with "Too many connections" under load.
        pool = BlockingConnectionPool.from_url(self._url, max_connections=_MAX_CONNECTIONS, timeout=_POOL_TIMEOUT_S)
        self._client = Redis.from_pool(pool)  # the client owns the pool and closes it

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError, RuntimeError):
            return False

    async def save(self, team: str, response: ResponseResource, input_items: list[Item]) -> None:
        inputs = encode_items(input_items)
        indexed = [item for item in inputs + encode_items(response.output) if item.indexed]
        resp_key, ids_key = self._key("resp", team, response.id), self._key("ids", team, response.id)
        item_keys = [self._key("item", team, item.id) for item in indexed]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(resp_key, mapping={"response": encode(response), "input": _json_array(inputs)})
            if indexed:
                pipe.sadd(ids_key, *{item.id for item in indexed})
            # In input-then-output order, so an id repeated within one save keeps its last form.
            for key, item in zip(item_keys, indexed, strict=True):
                pipe.hset(key, mapping={"response_id": response.id, "body": item.body})
            if self._ttl is not None:
                for key in dict.fromkeys([resp_key, ids_key, *item_keys]):
                    pipe.expire(key, self._ttl)
            await pipe.execute()

    async def load(self, team: str, response_id: str) -> StoredResponse | None:
        fields = await self._redis.hmget(self._key("resp", team, response_id), ["response", "input"])
        body, inputs = cast(list[bytes | None], fields)
        if body is None or inputs is None:
            return None
        return StoredResponse(team=team, response=decode_resource(body), input_items=decode_items(inputs))

    async def delete(self, team: str, response_id: str) -> bool:
        keys = [self._key("resp", team, response_id), self._key("ids", team, response_id)]
        script = self._redis.register_script(_DELETE_SCRIPT)  # cheap: it only hashes the source
        deleted = await script(keys=keys, args=[response_id, self._key("item", team, "")])
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
