"""Parts of the load harness (``tests/bench``) that decide what a multi-core run measures: the
scaling layout, the load generator's threads, the core-speed reading and the scaling table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bench import core_speed, wrk
from tests.bench.procs import Processes, ordered_cores, parse_cores
from tests.bench.report import scaling_section
from tests.bench.runner import scaling_layout

SIXTEEN = set(range(16))


def test_core_lists_keep_the_order_they_name() -> None:
    assert ordered_cores("8,0-2,1") == [8, 0, 1, 2]
    assert parse_cores("8,0-2,1") == {0, 1, 2, 8}


@pytest.mark.parametrize(("workers", "order", "expected"), [
    (1, None, ("0", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15")),
    (4, None, ("0,1,2,3", "4,5,6,7,8,9,10,11,12,13,14,15")),
    (14, None, ("0,1,2,3,4,5,6,7,8,9,10,11,12,13", "14,15")),
    (1, "8,0", ("8", "0,1,2,3,4,5,6,7,9,10,11,12,13,14,15")),
    (2, "0,8,1,9", ("0,8", "1,2,3,4,5,6,7,9,10,11,12,13,14,15")),
    (16, None, (",".join(map(str, range(16))), "14,15")),  # nothing left: the configured load cores
])
def test_scaling_layout_gives_the_load_the_cores_workers_leave(
        workers: int, order: str | None, expected: tuple[str, str]) -> None:
    assert scaling_layout(workers, sut="0", aux="14,15", order=order, machine=SIXTEEN) == expected


def test_scaling_layout_on_two_cores_matches_the_main_layout() -> None:
    assert scaling_layout(1, sut="0", aux="1", order=None, machine={0, 1}) == ("0", "1")
    assert scaling_layout(2, sut="0", aux="1", order=None, machine={0, 1}) == ("0,1", "1")


def test_wrk_threads_are_capped_by_connections() -> None:
    def threads(requested: int, connections: int) -> str:
        argv = wrk.command("wrk", "http://127.0.0.1:1/", "s.lua", connections=connections, duration=1, timeout=5,
                           threads=requested)
        return argv[1]

    assert threads(8, 448) == "-t8"
    assert threads(8, 4) == "-t4"
    assert threads(0, 4) == "-t1"


def test_core_speed_spins_on_the_given_cores(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))[:2]
    with Processes(tmp_path / "logs", tmp_path / "pids") as procs:
        speed = core_speed.relative_speed(procs, cores, seconds=0.3)
    assert set(speed) == {"mean", "min"}
    # Real counts from real spinners: a core is neither idle nor several times faster than itself.
    assert 0.05 < speed["min"] <= speed["mean"] < 5
    assert all((tmp_path / "logs" / f"spin-{core}.out").read_text().strip().isdigit() for core in cores)


def test_scaling_table_reads_each_row_against_the_pass_through() -> None:
    def run(rate: float, cpu: float, busy: float | None) -> dict[str, object]:
        return {"rate": rate, "cpu_ms_per_request": {"target": cpu, "sim": 0.1}, "load_cores_busy": busy,
                "connections": 32}

    rows = {
        "1": {**run(1700, 0.56, 0.05), "speedup": 1.0, "cores": "0", "load_cores": "1-15",
              "core_speed": {"mean": 1.0, "min": 1.0}, "share_of_passthrough": 0.38,
              "passthrough": {**run(4500, 0.22, 0.08), "speedup": 1.0}},
        "2": {**run(3300, 0.58, None), "speedup": 1.94, "cores": "0,1", "load_cores": "2-15",
              "core_speed": None, "share_of_passthrough": 0.45, "passthrough": {}},
    }
    lines = scaling_section({"scaling": rows})
    table = [line for line in lines if line.startswith("| ")]
    assert table[2] == ("| 1 | 0 | 1-15 | 32 | 1.00 (min 1.00) | 1,700 | 1.00 | 0.560 | 5% | 4,500 | 1.00 | 38% |")
    assert table[3] == "| 2 | 0,1 | 2-15 | 32 | n/a | 3,300 | 1.94 | 0.580 | n/a | n/a | n/a | 45% |"
