"""The chaos run, short (CI; ``make chaos`` runs the longer one): two replicas sharing a Redis
under steady mixed traffic while upstream faults, a Redis restart, a SIGKILL, a SIGTERM and
client aborts happen. Every request must end complete or as a documented, well-formed error;
usage records and budget spend must match what the clients saw."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.chaos.chaos import CLIENT_ABORTS, REDIS_RESTART, ROWS, SIGKILL, SIGTERM, ChaosOptions, ChaosRun
from tests.chaos.cluster import Cluster
from tests.chaos.report import markdown_table

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


def test_every_request_is_accounted_for_under_chaos(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        result = asyncio.run(ChaosRun(cluster, ChaosOptions(upstream_s=20.0, window_s=5.0)).run())
    rows = {row["fault"]: row for row in result["rows"]}
    summary = markdown_table(result["rows"])
    assert result["problems"] == [], "\n".join([summary, *result["problems"][:50]])
    assert rows["all"]["lost"] == 0 and rows["all"]["malformed"] == 0, summary
    assert all(rows.get(label, {}).get("sent") for label in ROWS), f"a fault met no request:\n{summary}"
    assert rows[SIGTERM]["completed"] == rows[SIGTERM]["sent"], "a drained replica finishes what it holds"
    assert rows[SIGKILL]["completed"] + rows[SIGKILL]["killed"] == rows[SIGKILL]["sent"]
    assert rows[REDIS_RESTART]["completed"] > 0 and rows[CLIENT_ABORTS]["aborted"] > 0
    exited = next(event for event in result["events"] if event["event"].endswith("exited"))
    assert exited["status"] in (0, -15) and exited["drain_s"] < 30, exited
    for name, before in result["idle_before"].items():
        after = result["idle_after"][name]
        assert after["tasks"] <= before["tasks"] and after["open_streams"] == 0, (name, before, after)
