"""How many concurrent open streams one gateway worker holds within an RSS budget.

A simulator with a delay between streamed events keeps every stream open for tens of seconds;
``loadgen hold`` opens them in steps and reads the worker's resident memory after each step.
Counts and time are bounded; the figure is the largest step measured within the budget, with the
memory per stream (the slope) to show how far the budget would reach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.bench.procs import Processes
from tests.bench.targets import BenchKey, Pipeline, python, responses_bodies, start_gateway, start_simulator


def measure(procs: Processes, *, work: Path, key: BenchKey, pipeline: Pipeline, sut_cores: str | None,
            aux_cores: str | None,
            steps: list[int], time_limit: float, rss_limit_mb: float, token_delay_ms: float) -> dict[str, Any]:
    sim, upstream = start_simulator(procs, "sim-slow-streams", cores=aux_cores, token_delay_ms=token_delay_ms)
    gateway, base = start_gateway(procs, "gateway-streams", work=work, upstream=upstream,
                                  store="sqlite://:memory:", key=key, pipeline=pipeline, workers=1,
                                  cores=sut_cores)
    try:
        body = work / "streams-body.json"
        body.write_bytes(responses_bodies("sim", store=False)["stream_long"])
        worker = gateway.python_pids()[0]
        argv = [python(), "-m", "tests.bench.loadgen", "hold", "--url", base + "/v1/responses",
                "--body-file", str(body), "--header", f"Authorization: Bearer {key.key}", "--stream",
                "--steps", ",".join(str(s) for s in steps), "--watch-pid", str(worker),
                "--rss-limit-mb", f"{rss_limit_mb:g}", "--time-limit", f"{time_limit:g}", "--ramp", "250",
                "--step-timeout", "30",
                "--request-timeout", f"{time_limit + 60:g}"]
        status, out = procs.run("loadgen-hold", argv, timeout=time_limit + 60, cores=aux_cores)
        if status != 0 or not out.strip():
            raise RuntimeError(f"loadgen hold failed ({status}); see loadgen-hold.log")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        result["peak_rss_mb"] = gateway.peak_rss_mb()["max_process"]
    finally:
        procs.stop(gateway)
        procs.stop(sim)
    result["token_delay_ms"] = token_delay_ms
    return _analyse(result)


def _analyse(result: dict[str, Any]) -> dict[str, Any]:
    rows = result.get("steps") or []
    base = result.get("baseline_rss_mb") or 0.0
    limit = result["rss_limit_mb"]
    within = [row for row in rows if row["rss_mb"] <= limit]
    result["held_within_limit"] = max((row["open"] for row in within), default=0)
    measured = [row for row in rows if row["open"] > 0]
    if measured:
        last = measured[-1]
        per_stream_kb = (last["rss_mb"] - base) * 1000 / last["open"]
        result["kb_per_stream"] = round(per_stream_kb, 1)
        result["extrapolated_within_limit"] = (int((limit - base) * 1000 / per_stream_kb)
                                               if per_stream_kb > 0 else None)
    return result
