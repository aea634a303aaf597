"""Shared pieces of the policy tests: a catalogue that exercises every routing fact, policy
builders, the real Redis (a test fails when it is down) under a unique prefix, and a TCP
forwarder that lets a test take "Redis" away and bring it back without touching the server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from policies.catalogue import Catalogue, CatalogueModel
from policies.resolve import ResolvedPolicy, resolve
from policies.rules import Rules
from policies.teams import PolicyStore
from proxy.auth import hash_key
from proxy.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
ENV = {"OPENAI_KEY": "sk-openai", "AZURE_KEY": "sk-azure", "GROQ_KEY": "sk-groq", "BATCH_KEY": "sk-batch"}
TEAM_KEY = "sk-policies-team-a"

CATALOGUE: dict[str, Any] = {
    "providers": {
        "openai": {"dialect": "openai_responses", "base_url": "https://openai.invalid/v1", "api_key_env": "OPENAI_KEY",
                   "region": "us-east"},
        "azure-eu": {"dialect": "openai_responses", "base_url": "https://azure.invalid/v1", "api_key_env": "AZURE_KEY",
                     "region": "eu-west"},
        "groq": {"dialect": "openai_chat", "base_url": "https://groq.invalid/v1", "api_key_env": "GROQ_KEY"},
        "batch": {"dialect": "openai_chat", "base_url": "https://batch.invalid/v1", "api_key_env": "BATCH_KEY",
                  "region": "eu-north"},
        "nokey": {"dialect": "openai_chat", "base_url": "https://nokey.invalid/v1", "api_key_env": "NOKEY_KEY"},
    },
    "models": {
        "gpt": {"deployments": [
            {"provider": "openai", "model": "gpt-4o", "tiers": ["default", "flex", "priority"],
             "native_tiers": {"flex": "flex", "priority": "priority"},
             "price": {"input": 2.5, "cached_input": 1.25, "output": 10},
             "tier_prices": {"flex": {"input": 1.25, "output": 5}, "priority": {"input": 5, "output": 20}},
             "capabilities": ["tools", "vision", "reasoning"], "context_window": 128000},
            {"provider": "azure-eu", "model": "gpt-4o", "tiers": ["default", "priority"],
             "price": {"input": 2.5, "output": 10}, "capabilities": ["tools"], "context_window": 8000},
            {"provider": "groq", "model": "llama-70b", "price": {"input": 0.6, "output": 0.8}},
            {"provider": "batch", "model": "gpt-4o", "tiers": ["flex"], "price": {"input": 1, "output": 4},
             "tier_prices": {"flex": {"input": 1, "output": 4}}},
            {"provider": "nokey", "model": "x"},
        ]},
        "pool": {"deployments": [
            {"provider": "openai", "model": "a", "order": 0, "weight": 3},
            {"provider": "azure-eu", "model": "b", "order": 0, "weight": 1},
            {"provider": "groq", "model": "c", "order": 1},
        ]},
        "other": {"deployments": [{"provider": "groq", "model": "other"}]},
    },
    "teams": {"team-a": {"keys": [{"sha256": hash_key(TEAM_KEY), "name": "main"}]}},
}


def settings_with(**overrides: Any) -> Settings:
    return msgspec.convert({**CATALOGUE, **overrides}, Settings)


def store_with(**overrides: Any) -> PolicyStore:
    return PolicyStore(settings_with(**overrides), environ=ENV.get)


@functools.cache
def catalogue_model(alias: str = "gpt") -> CatalogueModel:
    """The alias in the shared test catalogue (built once; tests replace, never mutate, it)."""
    model = Catalogue(settings_with(), environ=ENV.get).find(alias)
    assert model is not None
    return model


def policy(team: str = "team-a", key: str | None = "main", **rules: Any) -> ResolvedPolicy:
    """A policy whose team layer says ``rules`` (as they would be written in a file)."""
    return resolve(team, key, [("team", msgspec.convert(rules, Rules))])


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """The machine's Redis; unreachable means failure, not a skip."""
    client = Redis.from_url(REDIS_URL)
    await client.ping()
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    unique = f"test-policies-{uuid.uuid4().hex[:10]}:"
    yield unique
    keys = [key async for key in redis.scan_iter(match="{" + unique + "*")]
    if keys:
        await redis.delete(*keys)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Forwarder:
    """Stands in for Redis on ``port``: refuses connections until ``start()``, then forwards
    them to the real server."""

    def __init__(self) -> None:
        self.port = closed_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()
        with contextlib.suppress(ConnectionError):
            await sink.wait_closed()
