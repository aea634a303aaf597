"""A process whose time is split in a known way, to check where a sampling profiler's samples
fall: rounds of pure-Python work, each followed by one system call (``os.getpid``, about the
cheapest there is). It times the system call alone first, counts its rounds while it loops, and
prints the system call's share of its time as JSON when it ends. A sampler that puts a larger
share of its samples in ``_system_call`` than that leans towards system calls.

``python -m tests.bench.sampler_probe --seconds S``
"""

from __future__ import annotations

import argparse
import json
import os
import time

SYSTEM_CALL = "_system_call"
"""The function whose share of the samples is compared with its share of the time."""
_CALIBRATION_CALLS = 200_000


def _work() -> int:
    total = 0
    for i in range(800):
        total += i * i
    return total


def _system_call() -> int:
    return os.getpid()


def _seconds_per_call() -> float:
    started = time.perf_counter()
    for _ in range(_CALIBRATION_CALLS):
        _system_call()
    return (time.perf_counter() - started) / _CALIBRATION_CALLS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, required=True, help="how long to loop")
    args = parser.parse_args(argv)
    per_call = _seconds_per_call()
    rounds = 0
    started = time.perf_counter()
    deadline = started + args.seconds
    while time.perf_counter() < deadline:
        _work()
        _system_call()
        rounds += 1
    per_round = (time.perf_counter() - started) / max(rounds, 1)
    print(json.dumps({"rounds": rounds, "round_us": round(per_round * 1e6, 3),
                      "system_call_us": round(per_call * 1e6, 4),
                      "system_call_percent": round(100 * per_call / per_round, 3)}), flush=True)


if __name__ == "__main__":
    main()
