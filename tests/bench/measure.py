"""One measurement against one target: saturation (closed loop, wrk or ours), a constant
offered rate (open loop, ours), or a single probe request. Each load run is bracketed by /proc
readings of the processes it loads, for CPU milliseconds per completed request."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import wrk
from tests.bench.procs import Proc, Processes, core_times, parse_cores, tcp_counters
from tests.bench.targets import Target, python


class Meter:
    def __init__(self, procs: Processes, work: Path, *, sut_cores: str | None, aux_cores: str | None,
                 wrk_path: str | None, request_timeout: float = 30.0, quiet_share: float = 0.15,
                 quiet_wait: float = 15.0, retries: int = 2, quiet_budget: float = 600.0) -> None:
        self.procs = procs
        self.work = work
        self.aux_cores = aux_cores
        self.sut_cores = sut_cores
        self.quiet_share = quiet_share
        self.quiet_wait = quiet_wait
        self.retries = retries
        self.quiet_budget = quiet_budget
        """Seconds of waiting and rerunning for the whole run; once spent, measurements run as they come."""
        self.waited = 0.0
        self.wrk_path = wrk_path
        self.request_timeout = request_timeout
        self._runs = 0

    def on_cores(self, sut_cores: str | None, aux_cores: str | None) -> Meter:
        """This meter with another layout (the scaling check gives the load the cores the workers
        leave free). Its waiting is counted from this one's; add it back with ``waited``."""
        moved = copy.copy(self)
        moved.sut_cores, moved.aux_cores = sut_cores, aux_cores
        return moved

    @property
    def load_threads(self) -> int:
        """wrk threads: one per load core (up to 8), so the generator is not what saturates
        first when many cores serve."""
        return min(len(parse_cores(self.aux_cores)), 8) if self.aux_cores else 1

    @property
    def generator(self) -> str:
        return "wrk" if self.wrk_path else "python-closed-loop"

    def _body_file(self, target: Target, mode: str) -> Path:
        path = self.work / f"body-{target.key}-{mode}.json"
        if not path.exists():
            path.write_bytes(target.body(mode))
        return path

    def _name(self, kind: str, target: Target, mode: str) -> str:
        self._runs += 1
        return f"{self._runs:03d}-{kind}-{target.key}-{mode}"

    def _headers(self, target: Target) -> list[str]:
        out: list[str] = []
        for name, value in target.headers.items():
            out += ["--header", f"{name}: {value}"]
        return out

    def wait_quiet(self) -> float:
        """Wait (at most ``quiet_wait`` seconds) until the cores this run uses are nearly idle:
        other work on the machine (another test suite) would otherwise be measured too. Our own
        idle servers use next to nothing. Returns the busy share seen last."""
        cores = None
        if self.sut_cores and self.aux_cores:
            cores = parse_cores(self.sut_cores) | parse_cores(self.aux_cores)
        deadline = time.monotonic() + min(self.quiet_wait, max(self.quiet_budget - self.waited, 0.0))
        started = time.monotonic()
        share = 0.0
        while True:
            before = core_times(cores)
            time.sleep(0.5)
            share = _busy_share(before, core_times(cores)) or 0.0
            if share <= self.quiet_share or time.monotonic() >= deadline:
                break
        self.waited += time.monotonic() - started - 0.5
        return round(share, 3)

    def _load_cores_time(self) -> tuple[float, float] | None:
        return core_times(parse_cores(self.aux_cores)) if self.aux_cores else None

    def _window(self, target: Target) -> tuple[float, float] | None:
        if not self.sut_cores or target.server.cores != self.sut_cores:
            return None
        busy, _ = core_times(parse_cores(self.sut_cores))
        return busy, time.monotonic()

    def _foreign(self, target: Target, start: tuple[float, float] | None, own_cpu: float) -> float | None:
        """Share of the SUT core spent on anything but the target during the window."""
        if start is None:
            return None
        busy, _ = core_times(parse_cores(self.sut_cores or ""))
        elapsed = time.monotonic() - start[1]
        return round(max(busy - start[0] - own_cpu, 0.0) / elapsed, 3) if elapsed > 0 else None

    @staticmethod
    def _cpu(watch: list[Proc]) -> dict[str, float]:
        return {proc.name: proc.cpu_seconds() for proc in watch}

    @staticmethod
    def _per_request(before: dict[str, float], after: dict[str, float], done: int) -> dict[str, float | None]:
        return {name: (round((after[name] - before[name]) * 1000 / done, 4) if done else None) for name in before}

    def saturation(self, target: Target, mode: str, *, seconds: float, connections: int, watch: list[Proc],
                   warmup: float = 1.0, retry: bool = True) -> dict[str, Any]:
        """Closed loop with ``connections`` connections for ``seconds``: requests/s, CPU per
        request of every process in ``watch``, and the target's RSS after. ``retry=False``: run
        at once and once (under a profiler already sampling)."""
        watch = list(dict.fromkeys([target.server, *watch]))
        if warmup > 0:
            self._closed(target, mode, seconds=warmup, connections=connections, name=self._name("warm", target, mode))
        result = self._retrying(target, watch, lambda: self._closed(
            target, mode, seconds=seconds, connections=connections, name=self._name("sat", target, mode)),
            retries=self.retries if retry else 0, quiet=retry)
        result["rss_mb"] = target.server.rss_mb()
        result["connections"] = connections
        return result

    def paired(self, base: Target, other: Target, mode: str, *, seconds: float, connections: int,
               rounds: int) -> dict[str, Any]:
        """``other``'s CPU per request over ``base``'s, with both loaded at the same time (each by
        its own closed-loop generator, ``connections`` each) for ``rounds`` runs of ``seconds``.

        Run one after the other, two saturation runs can meet a different machine: on a shared
        host a core's speed was seen to change twofold within seconds, with no other load
        visible. Loaded together on the same core, both meet the same one, so the ratio of each
        round is steady even when each one's figure is not."""
        targets = (base, other)
        ratios: list[float] = []
        runs: list[dict[str, Any]] = []
        for _ in range(rounds):
            before = {t.key: t.server.cpu_seconds() for t in targets}
            loads = [self.procs.start(self._name("paired", t, mode), self._closed_argv(t, mode, seconds, connections),
                                      cores=self.aux_cores, stdout=self.work / f"paired-{t.key}.out")
                     for t in targets]
            for load in loads:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    load.popen.wait(seconds + self.request_timeout + 30)
                self.procs.stop(load)
            after = {t.key: t.server.cpu_seconds() for t in targets}
            run: dict[str, Any] = {}
            for t in targets:
                parsed = self._parse_closed((self.work / f"paired-{t.key}.out").read_text(errors="replace"))
                done = parsed["requests"]
                run[t.key] = {"requests": done, "rate": parsed["rate"], "errors": parsed["error_count"],
                              "cpu_ms_per_request": round((after[t.key] - before[t.key]) * 1000 / done, 4)
                              if done else None}
            runs.append(run)
            base_cpu, other_cpu = run[base.key]["cpu_ms_per_request"], run[other.key]["cpu_ms_per_request"]
            if base_cpu and other_cpu:
                ratios.append(other_cpu / base_cpu)
        ratios.sort()
        return {"base": base.key, "other": other.key, "seconds": seconds, "connections": connections, "runs": runs,
                "cpu_ratios": [round(r, 4) for r in ratios],
                "cpu_ratio": round(ratios[len(ratios) // 2], 4) if ratios else None}

    def _retrying(self, target: Target, watch: list[Proc], run: Callable[[], dict[str, Any]], *,
                  retries: int | None = None, quiet: bool = True) -> dict[str, Any]:
        """``run`` bracketed by CPU readings; run again (up to ``retries`` times) when other work
        took more than ``quiet_share`` of the system-under-test core meanwhile, keeping the
        cleanest attempt."""
        best: dict[str, Any] | None = None
        for attempt in range(1 + (self.retries if retries is None else retries)):
            idle_share = self.wait_quiet() if quiet else None
            before = self._cpu(watch)
            window = self._window(target)
            load_before = self._load_cores_time()
            tcp_before = tcp_counters()
            result = run()
            after = self._cpu(watch)
            load_after = self._load_cores_time()
            tcp_after = tcp_counters()
            result["tcp"] = {name: tcp_after[name] - tcp_before.get(name, 0) for name in tcp_after}
            own = after[target.server.name] - before[target.server.name]
            done = result.get("requests", result.get("completed", 0))
            seconds = result.get("seconds", result.get("elapsed_s", 0))
            result.update(
                foreign_load=self._foreign(target, window, own), load_before=idle_share, attempts=attempt + 1,
                load_cores_busy=_busy_share(load_before, load_after),
                cpu_ms_per_request=self._per_request(before, after, done),
                cpu_share={name: round((after[name] - before[name]) / seconds, 3) for name in before}
                if seconds else {})
            if best is None or (result["foreign_load"] or 0) < (best["foreign_load"] or 0):
                best = result
            if (result["foreign_load"] or 0) <= self.quiet_share:
                break
            if self.waited >= self.quiet_budget:
                break
            self.waited += seconds  # a rerun spends the budget too
        assert best is not None
        best["attempts"] = attempt + 1
        return best

    def _closed(self, target: Target, mode: str, *, seconds: float, connections: int, name: str) -> dict[str, Any]:
        argv = self._closed_argv(target, mode, seconds, connections)
        timeout = seconds + self.request_timeout + 30
        if self.wrk_path:
            _, out = self.procs.run(name, argv, timeout=timeout, cores=self.aux_cores)
            return self._parse_closed(out)
        return _closed_result(self._loadgen(name, argv, timeout=timeout))

    def _closed_argv(self, target: Target, mode: str, seconds: float, connections: int) -> list[str]:
        """The closed-loop generator's command: wrk, or ours where wrk is missing."""
        if self.wrk_path:
            script = self.work / f"{target.key}-{mode}.lua"
            if not script.exists():
                script.write_text(wrk.lua_script(target.body(mode), target.headers))
            return wrk.command(self.wrk_path, target.url, str(script), connections=connections, duration=seconds,
                               timeout=self.request_timeout, threads=self.load_threads)
        argv = [python(), "-m", "tests.bench.loadgen", "closed", "--url", target.url,
                "--body-file", str(self._body_file(target, mode)), *self._headers(target),
                "--connections", str(connections), "--duration", f"{seconds:g}",
                "--request-timeout", f"{self.request_timeout:g}"]
        return [*argv, "--stream"] if mode.startswith("stream") else argv

    def _parse_closed(self, out: str) -> dict[str, Any]:
        if self.wrk_path:
            parsed = wrk.parse(out)
            parsed["generator"] = "wrk"
            return parsed
        return _closed_result(json.loads(out.strip().splitlines()[-1]))

    def fixed_rate(self, target: Target, mode: str, *, rate: float, seconds: float, watch: list[Proc],
                   max_inflight: int = 2000) -> dict[str, Any]:
        """Open loop at ``rate`` requests/s for ``seconds``: latency percentiles (from the due
        time and from the send time), time to first byte, the generator's own lag and CPU."""
        watch = list(dict.fromkeys([target.server, *watch]))
        argv = [python(), "-m", "tests.bench.loadgen", "open", "--url", target.url,
                "--body-file", str(self._body_file(target, mode)), *self._headers(target),
                "--rate", f"{rate:.3f}", "--duration", f"{seconds:g}", "--max-inflight", str(max_inflight),
                "--request-timeout", f"{self.request_timeout:g}", "--drain-timeout", f"{self.request_timeout:g}"]
        if mode.startswith("stream"):
            argv.append("--stream")
        out = self._retrying(target, watch, lambda: self._loadgen(
            self._name("rate", target, mode), argv, timeout=seconds + 2 * self.request_timeout + 30))
        out["rss_mb"] = target.server.rss_mb()
        return out

    def _loadgen(self, name: str, argv: list[str], *, timeout: float) -> dict[str, Any]:
        status, out = self.procs.run(name, argv, timeout=timeout, cores=self.aux_cores)
        lines = out.strip().splitlines()
        if status != 0 or not lines:
            raise RuntimeError(f"load generator {name} failed (exit {status}); see logs/{name}.log")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def probe(self, target: Target, mode: str) -> dict[str, Any]:
        """One request: is the reply complete and well-formed, and how many SSE frames does it
        carry? Run before measuring, so a broken target is reported, not timed."""
        request = urllib.request.Request(target.url, data=target.body(mode), method="POST",
                                         headers={"Content-Type": "application/json", **target.headers})
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        streaming = mode.startswith("stream")
        if status != 200:
            ok, detail = False, f"HTTP {status}: {body[:300]!r}"
        elif streaming:
            ok = b"response.completed" in body or b"[DONE]" in body
            detail = "stream complete" if ok else f"stream without a terminal event: {body[-300:]!r}"
        else:
            ok = b'"status":"completed"' in body.replace(b" ", b"") or b'"choices"' in body
            detail = "reply complete" if ok else f"unexpected reply: {body[:300]!r}"
        return {"ok": ok, "detail": detail, "bytes": len(body), "events": body.count(b"\n\n") if streaming else None}


def _closed_result(out: dict[str, Any]) -> dict[str, Any]:
    """Our closed-loop generator's report in the shape of wrk's parsed one."""
    return {"requests": out["completed"], "seconds": out["elapsed_s"], "rate": out["rate"],
            "latency_ms": out["latency_ms"], "error_count": out["error_count"], "errors": out["errors"],
            "generator": "python-closed-loop", "generator_overhead": out["generator"]}


def _busy_share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Share of the cores' time spent busy between two ``core_times`` readings (of the load
    cores: near 1, the simulator and the generator may be what limits the rate)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)
