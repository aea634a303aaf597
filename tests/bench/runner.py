"""What runs, in which order, on which cores; collects every figure into one results dict.

Per upstream profile (no latency, 60 ms): one simulator and every system under test start
together (idle ones cost nothing), then per mode (JSON, SSE): saturation of each target, the
per-event cost from a long stream, a sweep of constant offered rates expressed as fractions of
the gateway's saturation (the 0.5 point, run longer, gives the added latency), and py-spy on the
gateway at saturation. Then the open-stream capacity, the worker scaling check and, when asked,
LiteLLM.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench import core_speed, instructions, litellm, profiling, streams
from tests.bench.measure import Meter
from tests.bench.procs import Proc, Processes, ordered_cores, parse_cores
from tests.bench.shapes import request_shapes
from tests.bench.targets import (
    REPO,
    VARIANTS,
    BenchKey,
    Pipeline,
    Target,
    chat_bodies,
    responses_bodies,
    start_gateway,
    start_otlp_sink,
    start_passthrough,
    start_redis,
    start_simulator,
    variant_pipeline,
)
from tests.bench.wrk import find_wrk

PROFILES = {"none": 0.0, "60ms": 60.0}
MAIN_TARGETS = ("gateway", "direct", "passthrough", "gateway-sqlite", "gateway-redis")


@dataclass
class Options:
    """Everything a run is told; ``cli`` fills it in."""

    out: Path
    quick: bool = False
    pin: bool = False
    sut_cores: str = "0"
    aux_cores: str = "1"
    workers: int = 1
    connections: int = 32
    latency_connections: int = 256
    profiles: list[str] = field(default_factory=lambda: ["none", "60ms"])
    modes: list[str] = field(default_factory=lambda: ["json", "stream"])
    redis: bool = True
    with_litellm: bool = False
    litellm_spec: str = litellm.DEFAULT_SPEC
    loadgen: str = "auto"
    profile: bool = True
    profile_only: bool = False
    instructions: bool = False
    """Only count instructions per request under callgrind (``tests.bench.instructions``)."""
    parts: bool = False
    """Only load each gateway configuration beside the pass-through (``Bench._parts``)."""
    shapes: bool = False
    """Only load the gateway beside the pass-through with each request shape (``Bench._shapes``)."""
    scale: list[int] = field(default_factory=lambda: [1, 2])
    scale_cores: str | None = None
    """The cores the scaling check's workers take, in order (a taskset list); None: from 0 up."""
    streams: bool = True
    streams_steps: list[int] = field(default_factory=lambda: [500, 1000, 2000, 3000, 4000])
    streams_time_limit: float = 120.0
    streams_token_delay_ms: float = 2000.0
    rss_limit_mb: float = 300.0
    warmup_seconds: float = 1.0
    sat_seconds: float = 5.0
    fixed_seconds: float = 6.0
    sweep_seconds: float = 3.0
    half_repeats: int = 3
    """Runs at half of saturation per configuration; the median (by p50) is reported."""
    fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9, 1.1])
    profile_seconds: float = 12.0
    """Each of the two py-spy recordings per mode."""
    sampler_check_seconds: float = 4.0
    """Each recording of the sampler probe (``profiling.check_sampler``)."""
    paired_rounds: int = 5
    paired_seconds: float = 3.0
    """The gateway and the pass-through loaded at once (``Meter.paired``): rounds, seconds each."""
    request_timeout: float = 30.0
    quiet_wait: float = 15.0
    retries: int = 2
    quiet_budget: float = 600.0
    """Seconds the whole run may spend waiting for quiet and rerunning disturbed measurements."""
    """Measurements rerun when other work took more than 15% of the system-under-test core."""
    """Seconds to wait, before each measurement, for other work on the machine to calm down."""


def _passthrough_target(proc: Proc, base: str) -> Target:
    """The minimal pass-through's ``/v1/responses``, asking the simulator's model directly."""
    return Target("passthrough", "minimal pass-through", base + "/v1/responses", proc,
                  bodies=responses_bodies("sim-1", store=False))


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, options: Options, procs: Processes, work: Path) -> None:
        self.o = options
        self.procs = procs
        self.work = work
        self.sut = options.sut_cores if options.pin else None
        self.aux = options.aux_cores if options.pin else None
        wrk_path = find_wrk() if options.loadgen in ("auto", "wrk") else None
        if options.loadgen == "wrk" and wrk_path is None:
            raise SystemExit("--loadgen wrk: wrk is not installed")
        self.meter = Meter(procs, work, sut_cores=self.sut, aux_cores=self.aux, wrk_path=wrk_path,
                           request_timeout=options.request_timeout, quiet_wait=options.quiet_wait,
                           retries=options.retries, quiet_budget=options.quiet_budget)
        self.key = BenchKey.new()
        self.redis_url: str | None = None
        self.pipeline = Pipeline(limits_store="memory", otlp_endpoint=None)
        self.litellm_exe: Path | None = None
        self.results: dict[str, Any] = {"meta": self._meta(wrk_path), "profiles": {}, "skipped": [],
                                        "profile": {}}

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        if self.o.redis:
            self._start_redis()
        self._start_pipeline()
        if self.o.with_litellm:
            self._install_litellm()
        if self.o.profile_only or self.o.instructions or self.o.parts or self.o.shapes:
            if self.o.profile_only:
                self._profile_only()
            elif self.o.instructions:
                self._instructions()
            elif self.o.parts:
                self._parts()
            else:
                self._shapes()
            self._finish(started)
            return self.results
        for profile in self.o.profiles:
            _log(f"profile '{profile}': upstream latency {PROFILES[profile]:g} ms")
            self._profile(profile)
        if self.o.streams and "stream" in self.o.modes:
            _log(f"open-stream capacity: steps {self.o.streams_steps}, RSS limit {self.o.rss_limit_mb:g} MB")
            try:
                self.results["streams"] = streams.measure(
                    self.procs, work=self.work, key=self.key, pipeline=self.pipeline,
                    sut_cores=self.sut, aux_cores=self.aux,
                    steps=self.o.streams_steps, time_limit=self.o.streams_time_limit,
                    rss_limit_mb=self.o.rss_limit_mb, token_delay_ms=self.o.streams_token_delay_ms)
            except RuntimeError as exc:
                self._skip("streams", str(exc))
        if self.o.scale:
            self.results["scaling"] = self._scaling()
        self._finish(started)
        return self.results

    def _finish(self, started: float) -> None:
        self.results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
        self.results["meta"]["waited_for_quiet_seconds"] = round(self.meter.waited, 1)
        self.results["meta"]["loadavg_end"] = _loadavg()
        sink = self.results["meta"].get("pipeline", {}).get("otlp_sink")
        if sink:
            with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(sink + "/stats", timeout=5) as reply:
                self.results["meta"]["pipeline"]["otlp_exports"] = json.load(reply)

    def _profile_only(self) -> None:
        """``--profile-only``: the gateway (store false) at saturation under py-spy, nothing else."""
        sim, upstream = start_simulator(self.procs, "sim-profile", cores=self.aux)
        gateway, base = start_gateway(self.procs, "gateway-profile", work=self.work, upstream=upstream,
                                      store="sqlite://:memory:", key=self.key, pipeline=self.pipeline,
                                      workers=self.o.workers,
                                      cores=self.sut)
        try:
            target = self._gateway_target("gateway", "gateway, store false", gateway, base)
            for mode in self.o.modes:
                sampled_modes = [mode, "stream_long"] if mode == "stream" else [mode]
                for sampled in sampled_modes:
                    if not self.meter.probe(target, sampled)["ok"]:
                        self._skip(f"profile {sampled}", "the gateway does not answer correctly")
                        continue
                    self._warm(target, sampled, sim)
                    self.results["profile"][sampled] = self._py_spy(target, sampled, self.o.connections, sim)
        finally:
            self.procs.stop(gateway)
            self.procs.stop(sim)

    def _instructions(self) -> None:
        """``--instructions``: instructions per request of the pass-through and of the gateway
        with and without each part of its pipeline, counted by callgrind."""
        missing = instructions.available()
        if missing is not None:
            self._skip("instructions", missing)
            return
        sim, upstream = start_simulator(self.procs, "sim-instructions", cores=self.aux)
        try:
            _log("instructions per request under callgrind: the pass-through and 5 gateway configurations, "
                 "under a minute each per mode")
            self.results["instructions"] = instructions.measure(
                self.procs, work=self.work, upstream=upstream, key=self.key, pipeline=self.pipeline,
                modes=self.o.modes, cores=self.sut)
        finally:
            self.procs.stop(sim)

    def _parts(self) -> None:
        """``--parts``: each gateway configuration of ``VARIANTS`` loaded beside the pass-through
        (``Meter.paired``): its CPU per request against the pass-through's, so what each part of
        the pipeline costs in CPU time, where ``--instructions`` counts it in instructions."""
        sim, upstream = start_simulator(self.procs, "sim-parts", cores=self.aux)
        passthrough, pt_base = start_passthrough(self.procs, upstream, cores=self.sut)
        base = _passthrough_target(passthrough, pt_base)
        configurations: dict[str, Any] = {}
        self.results["parts"] = {**self._paired_options(), "configurations": configurations}
        _log(f"parts: {len(VARIANTS)} gateway configurations, each loaded beside the pass-through, "
             f"{self.o.paired_rounds} rounds of {self.o.paired_seconds:g} s per mode")
        try:
            for variant in VARIANTS:
                gateway, gw_base = start_gateway(self.procs, f"parts-{variant.key}", work=self.work, upstream=upstream,
                                                 store="sqlite://:memory:", key=self.key,
                                                 pipeline=variant_pipeline(self.pipeline, variant.key),
                                                 workers=self.o.workers, cores=self.sut)
                target = self._gateway_target(variant.key, variant.label, gateway, gw_base)
                try:
                    configurations[variant.key] = {"label": variant.label, "left_out": variant.left_out,
                                                   "modes": self._beside(base, target, sim, f"parts {variant.key}")}
                finally:
                    self.procs.stop(gateway)
        finally:
            self.procs.stop(passthrough)
            self.procs.stop(sim)

    def _shapes(self) -> None:
        """``--shapes``: the gateway with the full pipeline loaded beside the pass-through with each
        request shape of ``shapes.request_shapes``, from the short input to a coding agent's."""
        from tests.conformance.cassette import shared_dir  # the capture's folder (vcr: only here)

        sim, upstream = start_simulator(self.procs, "sim-shapes", cores=self.aux)
        passthrough, pt_base = start_passthrough(self.procs, upstream, cores=self.sut)
        gateway, gw_base = start_gateway(self.procs, "gateway-shapes", work=self.work, upstream=upstream,
                                         store="sqlite://:memory:", key=self.key, pipeline=self.pipeline,
                                         workers=self.o.workers, cores=self.sut)
        measured: dict[str, Any] = {}
        self.results["shapes"] = {**self._paired_options(), "shapes": measured}
        try:
            for shape in request_shapes(shared_dir()):
                _log(f"shape {shape.key}: {shape.label}")
                base = replace(_passthrough_target(passthrough, pt_base), key=f"passthrough-{shape.key}",
                               bodies=shape.bodies("sim-1"))
                target = replace(self._gateway_target("gateway", "gateway, full pipeline", gateway, gw_base),
                                 key=f"gateway-{shape.key}", bodies=shape.bodies("sim"))
                measured[shape.key] = {"label": shape.label, "bytes": len(target.bodies["json"]),
                                       "modes": self._beside(base, target, sim, f"shape {shape.key}")}
        finally:
            for proc in (gateway, passthrough, sim):
                self.procs.stop(proc)

    def _paired_options(self) -> dict[str, Any]:
        return {"rounds": self.o.paired_rounds, "seconds": self.o.paired_seconds, "connections": self.o.connections}

    def _beside(self, base: Target, target: Target, sim: Proc, what: str) -> dict[str, Any]:
        """``target`` loaded at once with ``base`` (``Meter.paired``) in each mode of the run, both
        warmed first; a mode either one does not answer correctly is skipped."""
        modes: dict[str, Any] = {}
        for mode in self.o.modes:
            if not all(self.meter.probe(each, mode)["ok"] for each in (base, target)):
                self._skip(f"{what} {mode}", "a target does not answer correctly")
                continue
            for warmed in (base, target):
                self._warm(warmed, mode, sim)
            _log(f"  {what}/{mode}: loaded beside the pass-through")
            modes[mode] = self.meter.paired(base, target, mode, seconds=self.o.paired_seconds,
                                            connections=self.o.connections, rounds=self.o.paired_rounds)
        return modes

    def _gateway_target(self, key: str, label: str, proc: Proc, base: str, *, stored: bool = False) -> Target:
        """A gateway's ``/v1/responses``, called with the bench key."""
        return Target(key, label, base + "/v1/responses", proc, headers={"Authorization": f"Bearer {self.key.key}"},
                      bodies=responses_bodies("sim", store=stored))

    def _warm(self, target: Target, mode: str, sim: Proc) -> None:
        """A short unmeasured load: imports, connection pools and caches, before anything counts."""
        self.meter.saturation(target, mode, seconds=self.o.warmup_seconds or 1, connections=self.o.connections,
                              watch=[sim], warmup=0, retry=False)

    def _skip(self, what: str, why: str) -> None:
        _log(f"skipped {what}: {why}")
        self.results["skipped"].append({"what": what, "why": why})

    def _start_redis(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            self._skip("gateway-redis", "redis-server is not installed")
            return
        _, self.redis_url = start_redis(self.procs, server, cores=self.aux)

    def _start_pipeline(self) -> None:
        """Limits in the throwaway Redis (in memory without one, noted) and the OTLP sink."""
        if self.redis_url is None:
            self._skip("limits in Redis", "no Redis (redis-server missing or --no-redis): limits kept in memory")
        _, sink = start_otlp_sink(self.procs, cores=self.aux)
        self.pipeline = Pipeline(limits_store=self.redis_url or "memory", otlp_endpoint=sink + "/v1/traces")
        self.results["meta"]["pipeline"] = {"limits_store": "redis" if self.redis_url else "memory",
                                            "trace_sample_ratio": self.pipeline.sample_ratio,
                                            "otlp_sink": sink, "metrics": True}

    def _install_litellm(self) -> None:
        _log(f"installing {self.o.litellm_spec} into {litellm.VENV} (once)")
        try:
            self.litellm_exe = litellm.install(self.procs, self.o.litellm_spec)
        except litellm.Unavailable as exc:
            self._skip("litellm", str(exc))

    # -- one upstream profile ------------------------------------------------------------------
    def _targets(self, profile: str, sim: Proc, upstream: str) -> dict[str, Target]:
        targets = {"direct": Target("direct", "direct to simulator", upstream + "/v1/responses", sim,
                                    bodies=responses_bodies("sim-1", store=False))}
        pt, pt_base = start_passthrough(self.procs, upstream, cores=self.sut)
        targets["passthrough"] = _passthrough_target(pt, pt_base)
        stores = {"gateway": (f"sqlite:///{self.work}/gateway-{profile}.db", False),
                  "gateway-sqlite": (f"sqlite:///{self.work}/gateway-sqlite-{profile}.db", True)}
        if self.redis_url:
            stores["gateway-redis"] = (self.redis_url, True)
        for key, (store, stored) in stores.items():
            proc, base = start_gateway(self.procs, f"{key}-{profile}", work=self.work, upstream=upstream,
                                       store=store, key=self.key, pipeline=self.pipeline,
                                       workers=self.o.workers, cores=self.sut)
            label = f"gateway, store {'true (' + key.split('-')[1] + ')' if stored else 'false'}"
            targets[key] = self._gateway_target(key, label, proc, base, stored=stored)
        if self.litellm_exe is not None and profile == "none":
            try:
                proc, base = litellm.start(self.procs, self.litellm_exe, work=self.work, upstream=upstream,
                                           cores=self.sut)
            except litellm.Unavailable as exc:
                self._skip("litellm", str(exc))
            else:
                targets["litellm"] = Target("litellm", "LiteLLM proxy (chat)", base + "/v1/chat/completions", proc,
                                            bodies=chat_bodies("sim-chat"))
                targets["direct-chat"] = Target("direct-chat", "direct to simulator (chat)",
                                                upstream + "/v1/chat/completions", sim, bodies=chat_bodies("sim-1"))
                gateway = targets["gateway"]
                targets["gateway-chat"] = Target("gateway-chat", "gateway, chat upstream", gateway.url, gateway.server,
                                                 headers=gateway.headers,
                                                 bodies=responses_bodies("sim-chat", store=False))
        return targets

    def _profile(self, profile: str) -> dict[str, Any]:
        sim, upstream = start_simulator(self.procs, f"sim-{profile}", cores=self.aux, latency_ms=PROFILES[profile])
        out: dict[str, Any] = {"upstream_latency_ms": PROFILES[profile], "modes": {}}
        self.results["profiles"][profile] = out  # filled in as it goes, so a failure keeps what was measured
        servers: list[Proc] = [sim]
        targets: dict[str, Target] = {}
        try:
            targets = self._targets(profile, sim, upstream)
            servers += [t.server for t in targets.values()]
            out["targets"] = {key: t.label for key, t in targets.items()}
            for mode in self.o.modes:
                out["modes"][mode] = {}
                self._mode(profile, mode, targets, sim, out["modes"][mode])
        finally:
            out["peak_rss_mb"] = {key: t.server.peak_rss_mb() for key, t in targets.items()}
            for proc in dict.fromkeys(reversed(servers)):
                self.procs.stop(proc)
        return out

    def _usable(self, targets: dict[str, Target], mode: str, keys: tuple[str, ...]) -> tuple[list[str], dict]:
        usable, probes = [], {}
        for key in keys:
            if key not in targets:
                continue
            probe = self.meter.probe(targets[key], mode)
            probes[key] = probe
            if probe["ok"]:
                usable.append(key)
            else:
                self._skip(f"{key} {mode}", probe["detail"])
        return usable, probes

    def _mode(self, profile: str, mode: str, targets: dict[str, Target], sim: Proc, cell: dict[str, Any]) -> None:
        """Fill ``cell`` with the figures of one profile and mode, as they are measured."""
        streaming = mode == "stream"
        connections = self.o.connections if PROFILES[profile] == 0 else self.o.latency_connections
        usable, probes = self._usable(targets, mode, MAIN_TARGETS)
        cell.update(connections=connections, probes=probes, saturation={}, fixed={})
        if "gateway" not in usable or "direct" not in usable:
            self._skip(f"{profile}/{mode}", "the gateway or the simulator does not answer correctly")
            return
        for key in list(usable):
            _log(f"  {profile}/{mode}: saturation of {key} ({connections} connections, {self.o.sat_seconds:g}s)")
            try:
                cell["saturation"][key] = self.meter.saturation(targets[key], mode, seconds=self.o.sat_seconds,
                                                                connections=connections, watch=[sim],
                                                                warmup=self.o.warmup_seconds)
            except (RuntimeError, ValueError) as exc:
                # A target that breaks under load is reported, and the others still measured.
                self._skip(f"{profile}/{mode} {key}", str(exc))
                usable.remove(key)
        if "gateway" not in cell["saturation"]:
            return
        if "passthrough" in cell["saturation"] and PROFILES[profile] == 0 and self.o.paired_rounds:
            _log(f"  {profile}/{mode}: gateway and passthrough loaded at once, {self.o.paired_rounds} rounds")
            try:
                cell["paired"] = self.meter.paired(targets["passthrough"], targets["gateway"], mode,
                                                   seconds=self.o.paired_seconds, connections=connections,
                                                   rounds=self.o.paired_rounds)
            except (RuntimeError, ValueError) as exc:
                self._skip(f"{profile}/{mode} paired", str(exc))
        if streaming and PROFILES[profile] == 0:
            cell["per_event"] = self._per_event(targets, usable, connections, sim, cell)
        gateway_rate = cell["saturation"]["gateway"]["rate"]
        fractions = self.o.fractions if PROFILES[profile] == 0 else [0.5]
        if 0.5 not in fractions:
            fractions = sorted([*fractions, 0.5])
        for fraction in fractions:
            rate = max(fraction * gateway_rate, 1.0)
            seconds = self.o.fixed_seconds if fraction == 0.5 else self.o.sweep_seconds
            for key in usable:
                _log(f"  {profile}/{mode}: {key} at {rate:.0f} req/s ({fraction:g} x gateway saturation)")
                # The half-saturation point gives the added latency: repeated, the median run kept.
                repeats = self.o.half_repeats if fraction == 0.5 else 1
                try:
                    runs = [self.meter.fixed_rate(targets[key], mode, rate=rate, seconds=seconds, watch=[sim])
                            for _ in range(repeats)]
                except RuntimeError as exc:
                    self._skip(f"{profile}/{mode} {key} at {rate:.0f} req/s", str(exc))
                    continue
                runs.sort(key=lambda r: r["service_ms"].get("p50", float("inf")))
                result = runs[len(runs) // 2]
                if repeats > 1:
                    result["repeats"] = [{"p50": r["service_ms"].get("p50"), "p99": r["service_ms"].get("p99"),
                                          "cpu_ms_per_request": r["cpu_ms_per_request"]} for r in runs]
                result["fraction"] = fraction
                cell["fixed"].setdefault(key, []).append(result)
        cell["added_at_half"] = _added(cell["fixed"], streaming)
        if profile == "none" and self.o.profile:
            # The long stream isolates the per-event path.
            for sampled in [mode, "stream_long"] if streaming else [mode]:
                self.results["profile"][sampled] = self._py_spy(targets["gateway"], sampled, connections, sim)
        if "litellm" in targets:
            cell["litellm"] = self._litellm(targets, mode, sim)

    def _per_event(self, targets: dict[str, Target], usable: list[str], connections: int, sim: Proc,
                   cell: dict[str, Any]) -> dict[str, Any]:
        """CPU per extra SSE event: saturate with a reply about 100 events longer and divide the
        extra CPU per request by the extra events."""
        out: dict[str, Any] = {}
        for key in usable:
            long_probe = self.meter.probe(targets[key], "stream_long")
            short_events = cell["probes"][key].get("events") or 0
            if not long_probe["ok"]:
                self._skip(f"{key} long stream", long_probe["detail"])
                continue
            _log(f"  none/stream: long-stream saturation of {key}")
            long = self.meter.saturation(targets[key], "stream_long", seconds=self.o.sat_seconds,
                                         connections=connections, watch=[sim], warmup=self.o.warmup_seconds)
            short = cell["saturation"][key]
            name = targets[key].server.name
            extra = (long_probe["events"] or 0) - short_events
            short_cpu = short["cpu_ms_per_request"].get(name)
            long_cpu = long["cpu_ms_per_request"].get(name)
            per_event = ((long_cpu - short_cpu) * 1000 / extra
                         if extra > 0 and short_cpu is not None and long_cpu is not None else None)
            out[key] = {"events_short": short_events, "events_long": long_probe["events"],
                        "rate_long": long["rate"], "cpu_ms_per_request_long": long_cpu,
                        "cpu_ms_per_request_short": short_cpu,
                        "cpu_us_per_event": round(per_event, 2) if per_event is not None else None}
        return out

    def _py_spy(self, target: Target, mode: str, connections: int, sim: Proc) -> dict[str, Any]:
        """The gateway at saturation recorded both ways (``tests.bench.profiling``): ``python``
        from the recording that does not stop it, ``native`` (None where py-spy cannot unwind C
        frames here) from the one that does; the first call checks where each puts its samples."""
        py_spy = profiling.find_py_spy()
        if py_spy is None:
            self._skip(f"profile {mode}", "py-spy is not available (neither on PATH nor through uvx)")
            return {}
        if "sampler_check" not in self.results:
            _log(f"  py-spy: where each way of sampling puts its samples ({self.o.sampler_check_seconds:g}s each)")
            self.results["sampler_check"] = profiling.check_sampler(
                self.procs, py_spy, self.work, seconds=self.o.sampler_check_seconds, cores=self.sut,
                spy_cores=self.aux)
        pid = target.server.python_pids()[0]
        out: dict[str, Any] = {}
        for native in (False, True):
            how = "native" if native else "python"
            raw = self.o.out / (f"py-spy-{mode}-native.txt" if native else f"py-spy-{mode}.txt")
            seconds = self.o.profile_seconds
            _log(f"  none/{mode}: py-spy{' --native' if native else ' --nonblocking'} on gateway pid {pid} for "
                 f"{seconds:g}s at saturation")
            self.meter.wait_quiet()
            spy = profiling.start(self.procs, py_spy, pid, seconds=seconds, out=raw, cores=self.aux, native=native)
            try:
                time.sleep(1.0)
                load = self.meter.saturation(target, mode, seconds=seconds + 1, connections=connections,
                                             watch=[sim], warmup=0, retry=False)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.popen.wait(30)
            finally:
                self.procs.stop(spy)
            if raw.exists() and raw.stat().st_size:
                out[how] = profiling.summarize(raw) | {"rate_while_profiled": load["rate"], "raw": raw.name}
            elif native:  # --native needs libunwind support: the Python tables stand alone
                out[how] = None
            else:
                self._skip(f"profile {mode}", "py-spy wrote nothing; see logs/py-spy.log")
                return {}
        return out

    def _litellm(self, targets: dict[str, Target], mode: str, sim: Proc) -> dict[str, Any]:
        keys = ("litellm", "gateway-chat", "direct-chat")
        usable, probes = self._usable(targets, mode, keys)
        out: dict[str, Any] = {"probes": probes, "saturation": {}, "fixed": {}}
        for key in usable:
            _log(f"  none/{mode}: saturation of {key}")
            out["saturation"][key] = self.meter.saturation(targets[key], mode, seconds=self.o.sat_seconds,
                                                           connections=self.o.connections, watch=[sim],
                                                           warmup=self.o.warmup_seconds)
        if "litellm" in out["saturation"]:
            rate = max(0.5 * out["saturation"]["litellm"]["rate"], 1.0)
            for key in usable:
                _log(f"  none/{mode}: {key} at {rate:.0f} req/s (0.5 x LiteLLM saturation)")
                result = self.meter.fixed_rate(targets[key], mode, rate=rate, seconds=self.o.fixed_seconds,
                                               watch=[sim])
                result["fraction"] = 0.5
                out["fixed"][key] = [result]
            out["added_at_half"] = _added(out["fixed"], mode == "stream", baseline="direct-chat")
        return out

    # -- workers -------------------------------------------------------------------------------
    def _scaling(self) -> dict[str, Any]:
        """Saturation of the gateway and of the pass-through with each worker count. Pinned, the
        workers take the first cores and the simulator and wrk (a process and a thread per load
        core, up to 8) every other core, so on a large machine the load grows with the
        cores left to it; ``load_cores_busy`` near 1 says the load side, not the workers, set the
        rate."""
        rows: dict[str, Any] = {}
        for workers in self.o.scale:
            cores, load_cores = (scaling_layout(workers, sut=self.sut or "0", aux=self.aux or "1",
                                                order=self.o.scale_cores, machine=_all_cores())
                                 if self.o.pin else (None, None))
            meter = self.meter.on_cores(cores, load_cores)
            processes = meter.load_threads  # 1 when unpinned
            sim, upstream = start_simulator(self.procs, f"sim-w{workers}", cores=load_cores, processes=processes)
            connections = self.o.connections * workers
            _log(f"scaling: {workers} worker(s) on cores {cores or 'any'}, load on {load_cores or 'any'} "
                 f"({processes} simulator processes), {connections} connections")
            try:
                speed = core_speed.relative_speed(self.procs, ordered_cores(cores)) if cores else None
                row = self._scaled(meter, "gateway", workers, connections, cores, sim, upstream)
                row["cores"], row["load_cores"], row["simulator_processes"] = cores, load_cores, processes
                row["core_speed"] = speed
                row["passthrough"] = self._scaled(meter, "passthrough", workers, connections, cores, sim, upstream)
                rows[str(workers)] = row
            finally:
                self.procs.stop(sim)
                self.meter.waited = meter.waited
        one = rows.get("1", {})
        for row in rows.values():
            row["speedup"] = _ratio(row["rate"], one.get("rate"))
            row["passthrough"]["speedup"] = _ratio(row["passthrough"]["rate"], one.get("passthrough", {}).get("rate"))
            row["share_of_passthrough"] = _ratio(row["rate"], row["passthrough"]["rate"])
        return rows

    def _scaled(self, meter: Meter, key: str, workers: int, connections: int, cores: str | None, sim: Proc,
                upstream: str) -> dict[str, Any]:
        """One saturation run of ``key`` (gateway or pass-through) with ``workers`` workers."""
        name = f"{key}-w{workers}"
        if key == "gateway":
            proc, base = start_gateway(self.procs, name, work=self.work, upstream=upstream,
                                       store=f"sqlite:///{self.work}/{name}.db", key=self.key,
                                       pipeline=self.pipeline, workers=workers, cores=cores)
            target = self._gateway_target(name, f"gateway, {workers} workers", proc, base)
        else:
            proc, base = start_passthrough(self.procs, upstream, cores=cores, workers=workers, name=name)
            target = Target(name, f"pass-through, {workers} workers", base + "/v1/responses", proc,
                            bodies=responses_bodies("sim", store=False))
        try:
            result = meter.saturation(target, "json", seconds=self.o.sat_seconds, connections=connections,
                                      watch=[sim], warmup=max(self.o.warmup_seconds, 2.0))
            result["worker_pids"] = len(proc.python_pids())
            return result
        finally:
            self.procs.stop(proc)

    # -- metadata ------------------------------------------------------------------------------
    def _meta(self, wrk_path: str | None) -> dict[str, Any]:
        def output(argv: list[str], *, failing: bool = False) -> str:
            """What ``argv`` prints; nothing when it fails, unless it reports on a failing exit
            (``wrk -v`` exits 1)."""
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO)
                return (done.stdout.strip() or done.stderr.strip()) if done.returncode == 0 or failing else ""
            except (OSError, subprocess.TimeoutExpired):
                return ""

        cpu = ""
        with contextlib.suppress(OSError):
            cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.startswith("model name")), "")
        wrk_version = (output([wrk_path, "-v"], failing=True).splitlines() or [wrk_path])[0] if wrk_path else None
        o = self.o
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "host": {"cpus": len(_all_cores()), "cpu_model": cpu, "kernel": platform.release(),
                     "python": platform.python_version(), "memory_gb": _memory_gb()},
            "commit": output(["git", "rev-parse", "--short", "HEAD"]),
            "dirty": bool(output(["git", "status", "--porcelain", "--untracked-files=no"])),
            "generator": {"saturation": wrk_version or "python closed loop (tests.bench.loadgen closed)",
                          "saturation_threads": self.meter.load_threads if wrk_version else 1,
                          "fixed_rate": "python open loop (tests.bench.loadgen open, aiohttp + uvloop)"},
            "layout": ({"system_under_test": o.sut_cores, "simulator_and_load": o.aux_cores} if o.pin
                       else "not pinned"),
            "options": {"quick": o.quick, "workers": o.workers, "connections": o.connections,
                        "latency_connections": o.latency_connections, "sat_seconds": o.sat_seconds,
                        "fixed_seconds": o.fixed_seconds, "sweep_seconds": o.sweep_seconds,
                        "fractions": o.fractions, "modes": o.modes, "profiles": o.profiles},
            "argv": sys.argv[1:],
            "loadavg_start": _loadavg(),
        }


def _added(fixed: dict[str, list[dict[str, Any]]], streaming: bool, baseline: str = "direct") -> dict[str, Any]:
    """Each target's latency minus the baseline's at the 0.5 point (send-to-last-byte times, so
    the generator's own scheduling lag cancels out); time to first byte as well for streams."""
    def at_half(key: str) -> dict[str, Any] | None:
        return next((r for r in fixed.get(key, []) if r.get("fraction") == 0.5), None)

    base = at_half(baseline)
    if base is None:
        return {}
    out: dict[str, Any] = {}
    for key in fixed:
        if key == baseline:
            continue
        run = at_half(key)
        if run is None or not run.get("service_ms") or not base.get("service_ms"):
            continue
        row = {"rate": run["offered_rate"],
               "p50_ms": round(run["service_ms"]["p50"] - base["service_ms"]["p50"], 3),
               "p99_ms": round(run["service_ms"]["p99"] - base["service_ms"]["p99"], 3)}
        if streaming and run.get("ttfb_ms") and base.get("ttfb_ms"):
            row["ttfb_p50_ms"] = round(run["ttfb_ms"]["p50"] - base["ttfb_ms"]["p50"], 3)
            row["ttfb_p99_ms"] = round(run["ttfb_ms"]["p99"] - base["ttfb_ms"]["p99"], 3)
        out[key] = row
    return out


def scaling_layout(workers: int, *, sut: str, aux: str, order: str | None, machine: set[int]) -> tuple[str, str]:
    """(worker cores, load cores) of a pinned scaling row: one worker keeps the configured layout
    unless ``order`` (a taskset list) names the cores workers take; more take the first
    ``workers`` of that order (default: from 0 up). The load gets the rest, or the configured
    load cores when none are left (2 workers on a 2-core machine)."""
    taken = ordered_cores(order) if order else sorted(machine)
    cores = parse_cores(sut) if workers == 1 and not order else set(taken[:workers])
    rest = sorted(machine - cores)
    return ",".join(map(str, sorted(cores))), ",".join(map(str, rest)) if rest else aux


def _ratio(value: float, base: float | None) -> float | None:
    return round(value / base, 2) if base else None


def _all_cores() -> set[int]:
    return set(range(os.cpu_count() or 1))


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None
