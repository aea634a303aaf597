"""Where limits, budgets, circuit state and usage live: in the process, or in a shared Redis.

Keys are grouped by hash tag so that every multi-key operation stays in one Cluster slot:
``{<prefix><team>}:...`` holds all of a team's counters, budgets and usage; ``{<prefix>%circuit}:...``
holds every deployment's circuit. Team names and other parts are escaped, so no name can spell
another's key or open a second hash tag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.settings import Settings

log = logging.getLogger("interlock.policies")

RedisClient = Redis | RedisCluster
UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterDownError, TryAgainError, OSError)
"""What "Redis is unreachable" looks like: down, timing out, failing over, or a replica."""
TIMEOUT_S = 0.5
"""Connect and reply timeout of the limits connection: an outage must not stall requests."""


def reconnect_once() -> Retry:
    """A client's retry policy: a command whose pooled connection Redis had closed (a restart, a
    failover) runs again at once on a fresh one. Without it every such connection fails one
    command, and here that reads as an outage: unmetered admissions, settlements left waiting.
    A timeout is not retried: it would double the wait ``TIMEOUT_S`` bounds."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def limits_store_url(settings: Settings) -> str:
    """``limits_store``, else the response ``store`` when it is Redis, else ``memory``."""
    if settings.limits_store:
        return settings.limits_store
    return settings.store if settings.store.startswith(("redis://", "rediss://")) else "memory"


def connect(url: str, *, timeout: float = TIMEOUT_S) -> RedisClient | None:
    """A client for ``url`` (no connection is made yet); ``None`` for ``memory``.

    ``redis://``, ``rediss://`` and ``unix://`` are one server; ``redis+sentinel://[:password@]
    host:port[,host:port]/service[/db]`` asks the Sentinels for the master of ``service``;
    ``redis+cluster://host:port`` discovers a Cluster from one of its nodes.
    """
    if url == "memory":
        return None
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"), socket_timeout=timeout,
                                     socket_connect_timeout=timeout)
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        password = unquote(parts.password) if parts.password else None
        sentinels = [(host, int(port or 26379)) for host, _, port in
                     (node.partition(":") for node in netloc.split(","))]
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise ValueError(f"{url}: name the Sentinel service: redis+sentinel://host:port/service")
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": reconnect_once()}
        sentinel = Sentinel(sentinels, sentinel_kwargs=options, **options)
        return sentinel.master_for(service, password=password, db=int(db or 0))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=reconnect_once())
    raise ValueError(f"{url}: not a limits store: use memory, redis://, rediss://, unix://, "
                     "redis+sentinel:// or redis+cluster://")


def escape(part: str) -> str:
    """``part`` safe inside a key: ``%``, ``:``, ``{`` and ``}`` percent-escaped."""
    return part.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


def team_key(prefix: str, team: str, *parts: str) -> str:
    """A key in the team's slot: ``{interlock:team-a}:team:rpm``."""
    return "{" + _tag_safe(prefix) + escape(team) + "}:" + ":".join(parts)


def circuit_key(prefix: str, upstream: str) -> str:
    """A circuit's key; every circuit shares one slot so one MGET reads them all. The bare ``%``
    keeps the tag apart from every team's (a team's ``%`` is escaped)."""
    return "{" + _tag_safe(prefix) + "%circuit}:" + escape(upstream)


def _tag_safe(prefix: str) -> str:
    """The prefix inside a hash tag: braces would end the tag early."""
    return prefix.replace("{", "%7B").replace("}", "%7D")


class Reachability:
    """Whether Redis answers. After a failure, callers skip Redis for ``retry_s`` (and apply
    their fail mode at once instead of waiting for a timeout each time); the first call after
    that tries again, so recovery needs nothing but Redis coming back."""

    def __init__(self, *, retry_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._retry_s = retry_s
        self._clock = clock
        self._down_until: float | None = None

    def available(self) -> bool:
        return self._down_until is None or self._clock() >= self._down_until

    def failed(self, what: str, exc: BaseException) -> None:
        if self._down_until is None:
            log.warning("the limits store is unreachable (%s: %s); retrying every %.1fs",
                        what, type(exc).__name__, self._retry_s)
        self._down_until = self._clock() + self._retry_s

    def succeeded(self) -> None:
        if self._down_until is not None:
            log.warning("the limits store is reachable again")
            self._down_until = None
