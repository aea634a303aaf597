"""Real gateway processes, for tests that need several replicas or a replica that dies.

``spawn_gateway`` runs ``interlock serve`` (``python -m proxy.cli serve``) as a subprocess on a
loopback port and waits for ``/readyz``; ``write_gateway_config`` writes a YAML file for it with
the test teams and the embedded simulator (``tests.gateway_server.gateway_settings``), so
processes given the same file and Redis prefix are replicas of one gateway.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import yaml

from tests.gateway_server import gateway_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"


class GatewayProcess:
    """A running ``interlock serve``; its output goes to ``log_path``."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator stops a replica; waits for the exit and returns its code.
        A replica still running after ``timeout`` fails the test with what it was doing (its
        stacks, which it logs on SIGUSR1) and the end of its log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            raise AssertionError(f"the gateway did not exit within {timeout} s of SIGTERM; its log ends:\n"
                                 f"{self.log()[-20000:]}") from None

    def kill(self) -> None:
        """SIGKILL: the replica dies at once, without cleaning anything up."""
        self.process.kill()
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def spawn_gateway(config_path: Path, *, env: dict[str, str] | None = None, port: int | None = None,
                  ready_timeout: float = 60) -> Iterator[GatewayProcess]:
    """``interlock serve --config config_path`` on ``port`` (a free one by default), ready when
    entered; terminated (then killed) on exit unless the test ended it itself."""
    port = port or free_port()
    log_path = config_path.parent / f"gateway-{port}.log"
    command = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config_path), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    gateway = GatewayProcess(process, port, log_path)
    try:
        _wait_ready(gateway, ready_timeout)
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                gateway.kill()


def _wait_ready(gateway: GatewayProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if gateway.process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {gateway.process.returncode}:\n{gateway.log()[-3000:]}")
        try:
            if httpx.get(gateway.base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway was not ready within {timeout} s:\n{gateway.log()[-3000:]}")
        time.sleep(0.1)


def unique_redis_prefix() -> str:
    """A Redis key prefix for one test's replicas; remove its keys with ``delete_redis_prefix``."""
    return f"interlock-test-{uuid.uuid4().hex[:12]}:"


def write_gateway_config(path: Path, *, store: str = REDIS_URL, store_prefix: str = "interlock:",
                         **overrides: Any) -> Path:
    """A gateway YAML at ``path``: the two test teams (``TEAM_A_KEY``, ``TEAM_B_KEY``), the
    embedded simulator behind ``sim`` and ``sim-chat``, ``store`` (Redis by default), and any
    top-level section in ``overrides`` (``providers``, ``models``, ``jobs``...)."""
    settings = gateway_settings(store, store_prefix=store_prefix, **overrides)
    path.write_text(yaml.safe_dump(msgspec.to_builtins(settings), sort_keys=False))
    return path
