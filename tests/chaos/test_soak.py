"""The soak, short (CI; ``make soak`` runs it for 20 minutes): resident memory, descriptors and
tasks flat after warm-up under steady traffic, no task or connection left behind by streams their
clients abort, and 503 ``server_overloaded`` with ``retry-after`` past ``listen.max_in_flight``."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.chaos.cluster import Cluster
from tests.chaos.soak import SoakOptions, SoakRun, leaks

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")

MAX_IN_FLIGHT = 24


def test_resources_stay_flat_aborted_streams_leave_nothing_and_overload_is_refused(tmp_path: Path) -> None:
    options = SoakOptions(minutes=0.5, sample_s=5.0, warmup_share=0.3, aborted_streams=200, storm_concurrency=16)
    with Cluster(tmp_path, max_in_flight=MAX_IN_FLIGHT) as cluster:
        result = asyncio.run(SoakRun(cluster, options, max_in_flight=MAX_IN_FLIGHT).run())
    assert result["problems"] == [], "\n".join(result["problems"][:50])
    assert result["growth"], "readings after warm-up"
    assert result["storm"]["aborted"] == result["storm"]["sent"] == options.aborted_streams
    overload = result["overload"]
    assert 0 < overload["served"] <= MAX_IN_FLIGHT and overload["refused"] == overload["sent"] - overload["served"]


def test_what_aborted_streams_leave_behind_is_reported() -> None:
    def reading(tasks: int, fds: int, upstream: int, redis: int) -> dict[str, int]:
        return {"tasks": tasks, "fds": fds, "upstream_connections": upstream, "redis_connections": redis}

    before = {"replicas": {"gateway-0": reading(7, 30, 4, 6)}, "simulator_connections": 4}
    grown_pools = {"replicas": {"gateway-0": reading(7, 40, 0, 20)}, "simulator_connections": 0}
    assert leaks(before, grown_pools) == [], "a Redis pool grown to the peak is no leak"
    leaked = {"replicas": {"gateway-0": reading(9, 64, 30, 6)}, "simulator_connections": 30}
    assert leaks(before, leaked) == [
        "gateway-0: 9 asyncio tasks, 7 before", "gateway-0: 30 upstream connections, 4 before",
        "gateway-0: 28 open descriptors besides its connections to the upstream and Redis, 20 before",
        "the upstream holds 30 connections, 4 before"]
    assert leaks(before, {"replicas": {}, "simulator_connections": 0}) == ["gateway-0 is gone"]
