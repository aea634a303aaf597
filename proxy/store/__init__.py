"""The response store behind ``store: true``, ``previous_response_id`` and ``item_reference``.

``open_store`` picks the backend from a URL:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's spelling: the
  path is what follows the third slash) or ``sqlite://:memory:``: ``SqliteStore``, embedded
- ``redis://...`` or ``rediss://...`` (passed to redis-py as is): ``RedisStore``, shared by replicas
"""

from __future__ import annotations

from proxy.store.base import ResponseStore, StoredResponse
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore

__all__ = ["RedisStore", "ResponseStore", "SqliteStore", "StoredResponse", "open_store"]


def open_store(url: str, *, prefix: str = "interlock:") -> ResponseStore:
    """The store ``url`` names, not yet started; ValueError for any other scheme or no path.
    ``prefix`` namespaces Redis keys so several gateways (or test runs) can share one server."""
    if url == "sqlite://:memory:":
        return SqliteStore(":memory:")
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("redis://", "rediss://")):
        return RedisStore(url, prefix=prefix)
    raise ValueError(
        f"unsupported response store URL {url!r}: expected sqlite:///<path>, sqlite://:memory:, "
        "redis://... or rediss://..."
    )
