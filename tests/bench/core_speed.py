"""How fast each of a set of cores runs while all of them are busy, relative to one of them busy
alone. On a virtual machine a vCPU may share a physical core or a host's power budget with
others; on one 16-vCPU machine here, eight busy vCPUs each ran at about 0.6 of one alone. A
worker-scaling figure is read against this: n workers cannot beat n times it.

``python -m tests.bench.core_speed --start T --seconds S`` is one spinner: it waits until the
wall-clock time T, counts loop passes for S seconds and prints the count."""

from __future__ import annotations

import argparse
import time

from tests.bench.procs import Processes
from tests.bench.targets import REPO, python


def relative_speed(procs: Processes, cores: list[int], *, seconds: float = 1.5) -> dict[str, float]:
    """Each core's pass count with all of ``cores`` spinning at once, over the first core's
    count when it spins alone: the mean and the slowest."""
    alone = _spin(procs, cores[:1], seconds)[0]
    together = _spin(procs, cores, seconds) if len(cores) > 1 else [alone]
    speeds = [count / alone for count in together]
    return {"mean": round(sum(speeds) / len(speeds), 2), "min": round(min(speeds), 2)}


def _spin(procs: Processes, cores: list[int], seconds: float) -> list[int]:
    # Every spinner starts at the same wall-clock moment, after the slowest interpreter start.
    start = time.time() + 1.0
    runs = [procs.start(f"spin-{core}", [python(), "-m", "tests.bench.core_speed", "--start", f"{start:.3f}",
                                         "--seconds", f"{seconds:g}"], cores=str(core), cwd=REPO,
                        stdout=procs.log_dir / f"spin-{core}.out")
            for core in cores]
    counts = []
    for core, run in zip(cores, runs, strict=True):
        run.popen.wait(seconds + 30)
        procs.stop(run)
        counts.append(int((procs.log_dir / f"spin-{core}.out").read_text().split()[-1]))
    return counts


def _count(start: float, seconds: float) -> int:
    time.sleep(max(start - time.time(), 0.0))
    passes, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10_000):
            passes += 1
    return passes


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    print(_count(args.start, args.seconds), flush=True)
