"""Limits store URLs for every Redis topology (clients are made without connecting)."""

from __future__ import annotations

import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from policies.backend import TIMEOUT_S, connect, limits_store_url
from proxy.settings import Settings


def test_memory_has_no_client() -> None:
    assert connect("memory") is None


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/2", "rediss://cache.invalid:6380/0", "unix:///tmp/r.sock"])
async def test_a_single_server(url: str) -> None:
    client = connect(url)
    assert isinstance(client, Redis)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == TIMEOUT_S
    assert client.connection_pool.connection_kwargs["socket_connect_timeout"] == TIMEOUT_S
    await client.aclose()


async def test_sentinel() -> None:
    client = connect("redis+sentinel://:s3cret@sentinel-a.invalid:26379,sentinel-b.invalid/interlock/3")
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "interlock"
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "s3cret"
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26379]
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == ["sentinel-a.invalid",
                                                                                "sentinel-b.invalid"]
    await client.aclose()


async def test_cluster() -> None:
    client = connect("redis+cluster://node-1.invalid:7000")
    assert isinstance(client, RedisCluster)
    await client.aclose()


@pytest.mark.parametrize(("url", "message"), [
    ("redis+sentinel://sentinel.invalid:26379", "name the Sentinel service"),
    ("http://cache.invalid", "not a limits store"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connect(url)


@pytest.mark.parametrize(("config", "expected"), [
    ({}, "memory"),
    ({"store": "redis://r.invalid:6379/1"}, "redis://r.invalid:6379/1"),
    ({"store": "rediss://r.invalid:6379/1", "limits_store": "memory"}, "memory"),
    ({"limits_store": "redis+cluster://c.invalid:7000"}, "redis+cluster://c.invalid:7000"),
])
def test_limits_store_defaults_to_a_redis_response_store(config: dict[str, str], expected: str) -> None:
    assert limits_store_url(msgspec.convert(config, Settings)) == expected
