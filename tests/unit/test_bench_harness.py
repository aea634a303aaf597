"""Parts of the load harness (``tests/bench``) that decide what a run measures: the scaling
layout, the load generator's threads, the core-speed reading and the scaling table of a
multi-core run; the configurations, counting and table of ``--instructions``, the table of ``--parts``;
the request shapes of ``--shapes`` and their table; the profiler's check of its own sampling and
its tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.bench import core_speed, instructions, profiling, sampler_probe, wrk
from tests.bench.procs import Processes, free_port, ordered_cores, parse_cores, wait_tcp
from tests.bench.report import instructions_section, parts_section, profile_section, scaling_section, shapes_section
from tests.bench.runner import scaling_layout
from tests.bench.shapes import CODEX_CAPTURE, request_shapes
from tests.bench.targets import BenchKey, Pipeline, gateway_config, variant_pipeline

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


@pytest.mark.parametrize(("variant", "tracing", "metrics", "limits"), [
    ("full", True, True, True), ("no-tracing", False, True, True), ("no-metrics", True, False, True),
    ("no-limits", True, True, False), ("bare", False, False, False)])
def test_each_instruction_variant_leaves_out_its_part_of_the_pipeline(
        tmp_path: Path, variant: str, tracing: bool, metrics: bool, limits: bool) -> None:
    full = Pipeline(limits_store="redis://127.0.0.1:1/0", otlp_endpoint="http://127.0.0.1:2/v1/traces")
    written = gateway_config(tmp_path / "g.yaml", port=1, workers=1, upstream="http://127.0.0.1:3", store="x",
                             key=BenchKey(key="k", sha256="0" * 64), pipeline=variant_pipeline(full, variant))
    config = yaml.safe_load(written.read_text())
    telemetry = config["telemetry"]
    assert (telemetry["tracing"], telemetry["metrics"], "policy" in config) == (tracing, metrics, limits)
    assert ("otlp_endpoint" in telemetry) == tracing
    assert config["limits_store"] == (full.limits_store if limits else "memory")


def test_the_instructions_table_reads_each_configuration_against_the_full_pipeline() -> None:
    def configuration(label: str, left_out: str, count: float) -> dict[str, object]:
        return {"label": label, "left_out": left_out, "modes": {"json": {
            "instructions_per_request": count, "batches": [count, count * 1.01, count * 0.99], "requests": 150,
            "concurrency": 8}}}

    results = {"instructions": {"configurations": {
        "passthrough": configuration("minimal pass-through", "", 800_000),
        "full": configuration("gateway, full pipeline", "", 2_000_000),
        "no-tracing": configuration("gateway without tracing", "tracing", 1_900_000)}}}
    lines = instructions_section(results)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    assert rows["minimal pass-through"][1:4] == ["0.800", "0.792-0.808", "100%"]
    assert rows["gateway, full pipeline"][3] == "40%" and rows["gateway, full pipeline"][5].strip(" |") == ""
    assert rows["gateway without tracing"][3] == "42%"
    assert rows["gateway without tracing"][5].strip(" |") == "5.0% (100 k)"


def test_the_parts_table_reads_each_configuration_against_the_pass_through_and_the_full_pipeline() -> None:
    def configuration(label: str, left_out: str, ratios: list[float]) -> dict[str, object]:
        return {"label": label, "left_out": left_out,
                "modes": {"json": {"cpu_ratios": sorted(ratios), "cpu_ratio": sorted(ratios)[len(ratios) // 2]}}}

    results = {"parts": {"rounds": 3, "seconds": 3.0, "connections": 32, "configurations": {
        "full": configuration("gateway, full pipeline", "", [2.0, 2.1, 1.9]),
        "no-limits": configuration("gateway, limits in memory", "limits", [1.6, 1.5, 1.7])}}}
    lines = parts_section(results)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    assert rows["gateway, full pipeline"][1:4] == ["2.00x", "50%", "48%-53%"]
    assert rows["gateway, full pipeline"][5].strip(" |") == ""
    assert rows["gateway, limits in memory"][1:4] == ["1.60x", "62%", "59%-67%"]
    assert rows["gateway, limits in memory"][5].strip(" |") == "20.0%"
    assert any("3 rounds of 3 s" in line for line in lines)


def test_request_shapes_take_the_last_create_body_of_the_capture_less_what_a_run_sets(tmp_path: Path) -> None:
    capture = tmp_path / CODEX_CAPTURE
    capture.parent.mkdir(parents=True)
    first = {"model": "gpt-5", "input": [{"role": "user", "content": "one"}], "stream": True}
    last = {"model": "gpt-5", "input": [{"role": "user", "content": "two"}, {"type": "custom_tool_call_output",
            "call_id": "c", "output": "ok"}], "tools": [{"type": "custom", "name": "apply_patch"}],
            "stream": True, "store": False, "client_metadata": {"session": "s"}, "include": ["x"]}
    records = [{"method": "POST", "path": "/v1/responses", "body": first},
               {"method": "POST", "path": "/v1/responses", "body": json.dumps(last)},
               {"method": "GET", "path": "/v1/models", "body": None}]
    capture.write_text("\n".join(json.dumps(record) for record in records) + "\n")

    shapes = {shape.key: shape for shape in request_shapes(tmp_path)}
    assert list(shapes) == ["short", "conversation", "codex"]
    assert shapes["codex"].fields == {"input": last["input"], "tools": last["tools"], "include": ["x"]}
    assert "2 items, 1 tools" in shapes["codex"].label
    streamed = json.loads(shapes["codex"].bodies("sim")["stream"])
    assert (streamed["model"], streamed["stream"], streamed["store"]) == ("sim", True, False)
    assert "stream" not in json.loads(shapes["codex"].bodies("sim")["json"])
    conversation = shapes["conversation"].fields["input"]
    assert len(conversation) == 50 and all("type" not in message for message in conversation)
    assert [shape.key for shape in request_shapes(tmp_path / "elsewhere")] == ["short", "conversation"]


def test_the_shapes_table_reads_each_request_against_the_pass_through() -> None:
    def paired(ratios: list[float], gateway_ms: list[float], passthrough_ms: list[float]) -> dict[str, object]:
        runs = [{"gateway-x": {"cpu_ms_per_request": g}, "passthrough-x": {"cpu_ms_per_request": p}}
                for g, p in zip(gateway_ms, passthrough_ms, strict=True)]
        return {"base": "passthrough-x", "other": "gateway-x", "runs": runs, "cpu_ratios": sorted(ratios),
                "cpu_ratio": sorted(ratios)[len(ratios) // 2]}

    results = {"shapes": {"rounds": 3, "seconds": 3.0, "connections": 32, "shapes": {
        "codex": {"label": "a captured Codex request", "bytes": 40978,
                  "modes": {"json": paired([2.5, 2.4, 2.6], [1.0, 0.9, 1.1], [0.4, 0.38, 0.42])}}}}}
    lines = shapes_section(results)
    row = next(line for line in lines if line.startswith("| a captured Codex request")).split(" | ")
    assert row[1:] == ["40,978", "1.000", "0.400", "2.50x", "40%", "38%-42% |"]
    assert any("3 rounds of 3 s" in line for line in lines)


@pytest.mark.skipif(instructions.available() is not None, reason="valgrind is not installed")
def test_callgrind_counts_each_batch_of_requests_apart(tmp_path: Path) -> None:
    """A real server under callgrind: once warm, batches of the same requests cost the same number
    of instructions within a few percent, and twice the requests twice as many."""
    port = free_port()
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    (tmp_path / "index.html").write_text("hello")
    with Processes(tmp_path / "logs", tmp_path / "pids") as procs:
        out = tmp_path / "callgrind.out"
        counter = instructions.Counter(procs.start("http-server", [*instructions.callgrind(out), *server]), out)
        try:
            wait_tcp(counter.proc, port, timeout=120)
            counter.start_counting()

            def batch(count: int) -> int:
                for _ in range(count):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=60) as reply:
                        assert reply.read() == b"hello"
                return counter.dump()

            batch(10)  # warm-up: the first requests also load code
            ten, again, twenty = batch(10), batch(10), batch(20)
        finally:
            procs.stop(counter.proc, timeout=60)
    assert ten > 10 * 10_000, "a request of a Python HTTP server is well over 10,000 instructions"
    assert abs(again - ten) / ten < 0.03
    assert abs(twenty / 2 - ten) / ten < 0.03


def test_offline_bundle_script_names_its_verbs_and_asks_for_a_bundle_first(tmp_path: Path) -> None:
    """``scripts/bench-offline.sh`` runs where no package index is reachable: without its bundle
    it says how to make one instead of failing half-way through an install."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench-offline.sh"
    (tmp_path / "scripts").mkdir()
    copy = tmp_path / "scripts" / script.name
    shutil.copy(script, copy)
    usage = subprocess.run(["bash", str(copy)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2
    assert "pack [PYTHON_VERSION]" in usage.stderr and "run [ARGS]" in usage.stderr
    run = subprocess.run(["bash", str(copy), "run"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "OUT": str(tmp_path / "out")})
    assert run.returncode == 2
    assert "no .bench-offline/: run 'bash scripts/bench-offline.sh pack'" in run.stderr
    assert not (tmp_path / "out").exists()


def test_the_sampler_probe_reports_its_system_calls_share_of_its_time(capsys: pytest.CaptureFixture[str]) -> None:
    sampler_probe.main(["--seconds", "0.3"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["rounds"] > 100
    assert 0 < printed["system_call_us"] < printed["round_us"]
    assert printed["system_call_percent"] == pytest.approx(100 * printed["system_call_us"] / printed["round_us"],
                                                           rel=0.01)


def test_leaf_share_counts_samples_by_their_innermost_python_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("main (tests/bench/sampler_probe.py:52);_system_call (tests/bench/sampler_probe.py:31);"
                   "getpid (libc.so.6) 7\n"
                   "main (tests/bench/sampler_probe.py:51);_work (tests/bench/sampler_probe.py:26) 3\n"
                   "_system_call (tests/bench/sampler_probe.py:31);_work (tests/bench/sampler_probe.py:26) 2\n"
                   "garbled line\n")
    assert profiling.leaf_share(raw, "_system_call") == (12, 7)


@pytest.mark.skipif(profiling.find_py_spy() is None, reason="py-spy is not available")
def test_the_sampler_check_records_the_probe_both_ways(tmp_path: Path) -> None:
    with Processes(tmp_path / "logs", tmp_path / "pids") as procs:
        check = profiling.check_sampler(procs, profiling.find_py_spy() or [], tmp_path, seconds=1.0, cores=None,
                                        spy_cores=None)
    assert 0 < check["system_call_percent"] < 100
    for how in ("nonblocking", "native"):
        assert check[how]["samples"] > 0, how
        assert 0 <= check[how]["percent"] <= 100


def _summary(samples: int, rate: float, leader: str) -> dict[str, object]:
    row = {"frame": leader, "samples": samples // 2, "percent": 50.0}
    return {"samples": samples, "rate_while_profiled": rate, "packages": [row], "python_self": [row], "self": [row],
            "inclusive": [row]}


def test_the_profile_tables_take_python_functions_from_the_recording_that_never_stops_the_gateway() -> None:
    results = {"sampler_check": {"system_call_percent": 0.45, "nonblocking": {"samples": 999, "percent": 2.1},
                                 "native": {"samples": 199, "percent": 31.7}},
               "profile": {"json": {"python": _summary(2400, 1965.0, "Engine.events (proxy/engine.py)"),
                                    "native": _summary(600, 1400.0, "getpid (libc.so.6)")},
                           "stream": {"python": _summary(2000, 1200.0, "sse_body (proxy/streaming.py)"),
                                      "native": None}}}
    text = "\n".join(profile_section(results))
    assert ("a system call taking 0.5% of a loop's time drew 2.1% of the --nonblocking samples (999) and 31.7% of "
            "the --native ones (199)") in text
    json_part, stream_part = text.split("### Gateway at saturation, streaming")
    python_part, native_part = json_part.split("With C frames")
    assert "2,400 samples (py-spy --nonblocking" in python_part and "1,965 req/s" in python_part
    assert "| `Engine.events (proxy/engine.py)` | 50.0 |" in python_part and "getpid" not in python_part
    assert "600 samples (py-spy --native" in native_part and "| `getpid (libc.so.6)` | 50.0 |" in native_part
    assert "| `sse_body (proxy/streaming.py)` | 50.0 |" in stream_part
    assert "No native recording" in stream_part and "With C frames" not in stream_part
    assert profile_section({"profile": {"json": {}}}) == []
