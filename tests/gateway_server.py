"""Run the real gateway on a loopback socket in a background thread, for end-to-end tests."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import uvicorn
from litestar import Litestar

from proxy.app import create_app
from proxy.auth import hash_key
from proxy.gateway import Gateway
from proxy.header_guard import server_options
from proxy.settings import Settings

TEAM_A_KEY = "sk-test-team-a"
TEAM_B_KEY = "sk-test-team-b"


def gateway_settings(store_url: str, *, store_prefix: str = "interlock:", **overrides: object) -> Settings:
    """Two teams, the embedded simulator behind both dialects, and a model without /v1/responses."""
    config = {
        "store": store_url,
        "store_prefix": store_prefix,
        "retry": {"attempts": 2, "backoff_base": 0.01, "backoff_max": 0.05},
        "providers": {
            "sim": {"dialect": "openai_responses", "base_url": "embedded"},
            "sim-chat": {"dialect": "openai_chat", "base_url": "embedded"},
        },
        "models": {
            "sim": {"deployments": [{"provider": "sim", "model": "sim-1"}]},
            "sim-chat": {"deployments": [{"provider": "sim-chat", "model": "sim-1"}]},
            "embed-only": {"endpoints": ["/v1/embeddings"], "deployments": [{"provider": "sim", "model": "e"}]},
        },
        "teams": {
            "team-a": {"keys": [{"sha256": hash_key(TEAM_A_KEY), "name": "a"}]},
            "team-b": {"keys": [{"sha256": hash_key(TEAM_B_KEY), "name": "b"}]},
        },
    }
    config.update(overrides)
    return msgspec.convert(config, Settings)


class RunningGateway:
    def __init__(self, app: Litestar, port: int, settings: Settings) -> None:
        self.app = app
        self.port = port
        self.settings = settings
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def gateway(self) -> Gateway:
        """The live parts, for tests that look inside (the simulator URL, the store)."""
        return self.app.state.gateway  # type: ignore[no-any-return]


@contextmanager
def serve(settings: Settings) -> Iterator[RunningGateway]:
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # No log configuration of uvicorn's own: its loggers go through the root logger, as under
    # ``interlock serve``, where pytest and the leak scan (tests/security/leak_scan.py) see them.
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5,
                            **server_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    running = RunningGateway(app, port, settings)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def serve_backend(backend: str, directory: Path,
                  build: Callable[[str, str], Settings] | None = None) -> Iterator[RunningGateway]:
    """The gateway of ``build(store_url, key_prefix)`` (default: ``gateway_settings``) on the
    ``backend`` store, ``sqlite`` in ``directory`` or ``redis``; its Redis keys are removed after."""
    url, prefix = store_urls(directory)[backend]
    try:
        with serve(build(url, prefix) if build else gateway_settings(url, store_prefix=prefix)) as gateway:
            yield gateway
    finally:
        if backend == "redis":
            delete_redis_prefix(prefix)


def store_urls(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Backend name -> (store URL, key prefix); Redis keys get a prefix unique to the test."""
    return {
        "sqlite": (f"sqlite:///{tmp_path / 'store.db'}", "interlock:"),
        "redis": ("redis://127.0.0.1:6379/0", f"interlock-test-{uuid.uuid4().hex[:12]}:"),
    }


def delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        # Limits, usage and circuits live under hash-tagged keys: ``{<prefix>...}``.
        keys = [key for match in (prefix + "*", "{" + prefix + "*")
                for key in client.scan_iter(match=match, count=1000)]
        if keys:
            client.delete(*keys)
    finally:
        client.close()
