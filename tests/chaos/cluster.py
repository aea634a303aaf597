"""The processes of a chaos or soak run, all on loopback: a Redis of its own (stopped and
restarted mid-run: the shared Redis at 6379 is never touched), the upstream simulator, and gateway
replicas (``tests.chaos.launcher``) sharing both. Every child leads its own process group and is
stopped when the cluster closes, however the run ends (``tests.bench.procs.Processes``)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.bench.procs import Proc, Processes, wait_http, wait_tcp
from tests.chaos.launcher import RUNTIME_PATH
from tests.chaos.probes import connections_from, descriptors, tree_rss_mb
from tests.chaos.scenarios import gateway_sections
from tests.gateway_process import REPO_ROOT, free_port, unique_redis_prefix, write_gateway_config

_DRAIN_LIMIT_S = 45.0
"""uvicorn's graceful shutdown is 30 s (``interlock serve``); past this a SIGTERM'd replica hangs."""
_LOOKS = 3
_LOOK_GAP_S = 0.1


def other_fds(reading: Mapping[str, Any]) -> int:
    """A replica's descriptors besides pooled connections: sockets of requests, files, pipes."""
    return int(reading["fds"] - reading["upstream_connections"] - reading["redis_connections"])


class RedisServer:
    """A ``redis-server`` of the run's own on a free loopback port, without persistence except
    what ``stop`` saves for the next ``start``."""

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self._procs = procs
        self._workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: Proc | None = None

    def start(self) -> None:
        self._proc = self._procs.start("redis", [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self._workdir), "--dbfilename", "redis.rdb"])
        wait_tcp(self._proc, self.port)

    def stop(self) -> None:
        """``SHUTDOWN SAVE``: Redis goes away and comes back with its data, as a managed Redis
        restarted for maintenance does."""
        assert self._proc is not None
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "save"], check=False, timeout=10,
                       capture_output=True)
        self._proc.popen.wait(10)
        self._procs.stop(self._proc)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class Replica:
    """One gateway replica. Its port outlives restarts, as a Service endpoint does; a load
    balancer sends it requests only while it is ``in_rotation``."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: Proc | None = None
        self.in_rotation = False
        self.starts = 0
        self.kills: list[float] = []
        """``time.monotonic()`` of each SIGKILL, to tell a request cut by one from a lost one."""

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def killed_during(self, start: float, end: float) -> bool:
        return any(start <= moment <= end for moment in self.kills)


class Cluster:
    """``with Cluster(workdir) as cluster:`` everything started and ready; stopped on exit."""

    def __init__(self, workdir: Path, *, replicas: int = 2, max_in_flight: int | None = None) -> None:
        self.workdir = workdir
        self._procs = Processes(workdir / "logs", workdir / "children.pids")
        self.redis = RedisServer(self._procs, workdir)
        self.simulator_port = free_port()
        self.refused_port = free_port()
        """Nothing ever listens here: the upstream of the connection-refused fault."""
        self.prefix = unique_redis_prefix()
        self.replicas = [Replica(f"gateway-{index}", free_port()) for index in range(replicas)]
        self.config_path = workdir / "gateway.yaml"
        self._max_in_flight = max_in_flight
        self._env = {"INTERLOCK_SEAL_KEY": base64.b64encode(os.urandom(32)).decode(), "PYTHONUNBUFFERED": "1"}

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    def __enter__(self) -> Cluster:
        try:
            self.redis.start()
            simulator = self._procs.start("simulator", [sys.executable, "-m", "proxy.cli", "simulate", "--port",
                                                        str(self.simulator_port), "--backlog", "1024"], cwd=REPO_ROOT)
            wait_tcp(simulator, self.simulator_port)
            sections = gateway_sections(self.simulator_url, f"http://127.0.0.1:{self.refused_port}",
                                        max_in_flight=self._max_in_flight)
            write_gateway_config(self.config_path, store=self.redis.url, store_prefix=self.prefix, **sections)
            for replica in self.replicas:
                self.start_replica(replica)
        except BaseException:
            self._procs.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._procs.close()

    # -- replicas --------------------------------------------------------------------------------
    def start_replica(self, replica: Replica) -> None:
        replica.starts += 1
        replica.proc = self._procs.start(f"{replica.name}.{replica.starts}", [
            sys.executable, "-m", "tests.chaos.launcher", "serve", "--config", str(self.config_path),
            "--host", "127.0.0.1", "--port", str(replica.port), "--log-level", "warning"],
            env=self._env, cwd=REPO_ROOT)
        wait_http(replica.proc, replica.url + "/readyz", timeout=60)
        replica.in_rotation = True

    def kill(self, replica: Replica) -> None:
        """SIGKILL, as the kernel's OOM killer or a node failure ends a pod: no clean-up at all."""
        assert replica.proc is not None
        replica.kills.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.pid, signal.SIGKILL)
        replica.proc.popen.wait(10)
        self._procs.stop(replica.proc)

    def terminate(self, replica: Replica, *, unroute_s: float = 0.5) -> tuple[int | None, float]:
        """Out of rotation, then SIGTERM once the load balancer has stopped sending it requests
        (the chart's preStop); blocks until it exits. Its exit status and drain time in seconds."""
        assert replica.proc is not None
        replica.in_rotation = False
        time.sleep(unroute_s)
        started = time.monotonic()
        replica.proc.popen.send_signal(signal.SIGTERM)
        try:
            status: int | None = replica.proc.popen.wait(_DRAIN_LIMIT_S)
        except subprocess.TimeoutExpired:
            status = None
        drained = time.monotonic() - started
        self._procs.stop(replica.proc)
        return status, drained

    def live(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.alive()]

    # -- readings --------------------------------------------------------------------------------
    def reading(self, replica: Replica) -> dict[str, Any]:
        """What a leak would grow in one replica: asyncio tasks, open descriptors, resident memory,
        connections to the simulator (in use or idle in the keep-alive pool) and to Redis (its
        pools keep as many as were ever used at once, up to their bounds)."""
        tasks = httpx.get(replica.url + RUNTIME_PATH, timeout=10).json()["tasks"]
        ports = {"upstream_connections": self.simulator_port, "redis_connections": self.redis.port}
        looks = []
        for _ in range(_LOOKS):
            looks.append(descriptors(replica.pid, ports))
            time.sleep(_LOOK_GAP_S)
        # A descriptor open for a moment (a reload check reading the config file, a socket being
        # closed) is not one the replica keeps: the look with the fewest others is its state.
        kept = min(looks, key=other_fds)
        return {"tasks": tasks, "rss_mb": tree_rss_mb(replica.pid), **kept}

    def simulator_connections(self) -> int:
        return connections_from(self.simulator_port)

    def log_tail(self, replica: Replica, lines: int = 40) -> str:
        return replica.proc.log_tail(lines) if replica.proc is not None else ""
