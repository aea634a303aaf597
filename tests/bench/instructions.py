"""Instructions per request, counted by valgrind's callgrind (``--instructions``).

On a shared host a core's speed moves from one second to the next, so CPU time tells two builds
apart only when both are loaded at once (``Meter.paired``), and then only to 2-3%. The number of
instructions a request executes does not depend on the host's moment: callgrind counts them in
the server process itself, the same from one batch of requests to the next within a fraction of
a percent, so a change of 1% shows, and so does what each part of the pipeline costs. It is not
time (a system call or a cache miss is a handful of instructions), so it complements the CPU
figures rather than replacing them.

Each configuration is one server process (started as the other rows start it) under callgrind,
counting only once it has started (``--instr-atstart=no``, switched on with
``callgrind_control``): a warm-up batch, then ``reps`` batches of ``requests`` each, the counters
dumped after every batch, so start-up and warm-up are never counted. Configurations: the minimal
pass-through, the gateway with the full pipeline, and the gateway with one part of it left out
at a time (tracing, metrics, limits in Redis) and with all three left out; the difference to the
full pipeline is what that part costs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.bench.procs import Proc, Processes
from tests.bench.targets import (
    VARIANTS,
    BenchKey,
    Pipeline,
    responses_bodies,
    start_gateway,
    start_passthrough,
    variant_pipeline,
)

_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def available() -> str | None:
    """Why instructions cannot be counted here, or None when they can."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed (Debian: apt-get install valgrind)" if missing else None


def callgrind(out: Path) -> list[str]:
    """The launcher that runs a server under callgrind, not counting until ``Counter`` says so,
    its counts dumped to ``out.<n>``."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no", f"--callgrind-out-file={out}"]


class Counter:
    """A server started under ``callgrind(out)``: counting once ``start_counting`` is called;
    ``dump`` returns the instructions counted since the last dump."""

    def __init__(self, proc: Proc, out: Path) -> None:
        self.proc = proc
        self.out = out
        self._dumps = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True,
                       timeout=120)

    def start_counting(self) -> None:
        self._control("--instr=on")
        self.dump()  # whatever ran between switching on and now is not a batch's

    def dump(self) -> int:
        """Instructions counted since the last dump."""
        self._control("--dump")
        self._dumps += 1
        path = self.out.with_name(f"{self.out.name}.{self._dumps}")
        deadline = time.monotonic() + 60
        while True:
            found = _TOTALS.search(path.read_bytes()) if path.exists() else None
            if found:
                return int(found.group(1))
            if time.monotonic() > deadline:
                raise RuntimeError(f"callgrind wrote no counts to {path}")
            time.sleep(0.2)


def _send(url: str, body: bytes, headers: dict[str, str], count: int, concurrency: int) -> None:
    def one(_: int) -> None:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=120) as reply:
            reply.read()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))


def _per_request(counter: Counter, url: str, body: bytes, headers: dict[str, str], *, warmup: int, requests: int,
                 reps: int, concurrency: int) -> dict[str, Any]:
    _send(url, body, headers, warmup, concurrency)
    counter.dump()
    batches = []
    for _ in range(reps):
        _send(url, body, headers, requests, concurrency)
        batches.append(counter.dump() / requests)
    ordered = sorted(batches)
    return {"instructions_per_request": ordered[len(ordered) // 2], "batches": [round(b) for b in batches],
            "requests": requests, "concurrency": concurrency}


def measure(procs: Processes, *, work: Path, upstream: str, key: BenchKey, pipeline: Pipeline, modes: Sequence[str],
            cores: str | None, warmup: int = 50, requests: int = 150, reps: int = 3,
            concurrency: int = 8) -> dict[str, Any]:
    """Instructions per request of the pass-through and of each gateway variant, per mode."""
    headers = {"Authorization": f"Bearer {key.key}"}
    bodies = responses_bodies("sim", store=False)
    configurations: list[tuple[str, str, str]] = [("passthrough", "minimal pass-through", "")]
    configurations += [(v.key, v.label, v.left_out) for v in VARIANTS]
    results: dict[str, Any] = {"configurations": {}}
    for name, label, left_out in configurations:
        out = work / f"callgrind-{name}.out"
        if name == "passthrough":
            proc, base = start_passthrough(procs, upstream, cores=cores, name=f"callgrind-{name}",
                                           launcher=callgrind(out), startup_timeout=600)
            sent: dict[str, str] = {}
        else:
            proc, base = start_gateway(procs, f"callgrind-{name}", work=work, upstream=upstream,
                                       store="sqlite://:memory:", key=key, pipeline=variant_pipeline(pipeline, name),
                                       workers=1, cores=cores, launcher=callgrind(out), startup_timeout=600)
            sent = headers
        counter = Counter(proc, out)
        try:
            counter.start_counting()
            results["configurations"][name] = {"label": label, "left_out": left_out, "modes": {
                mode: _per_request(counter, base + "/v1/responses", bodies[mode], sent, warmup=warmup,
                                   requests=requests, reps=reps, concurrency=concurrency) for mode in modes}}
        finally:
            procs.stop(proc, timeout=60)
    return results
