"""``python -m tests.bench [options]`` (``bash scripts/bench.sh [options]``): run the load harness
and write ``bench-results/<timestamp>/``."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tests.bench import litellm, report
from tests.bench.procs import Processes
from tests.bench.runner import PROFILES, Bench, Options
from tests.bench.targets import REPO


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _names(allowed: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
        return names

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bash scripts/bench.sh", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1-2 s per scenario, no 60 ms profile, no scaling, a small stream test")
    p.add_argument("--smoke", action="store_true",
                   help="CI smoke (about 30 s): every part of the harness once, 1 s runs, figures meaningless")
    p.add_argument("--pin", action="store_true",
                   help="pin the system under test to --sut-cores and the simulator and load to --aux-cores")
    p.add_argument("--sut-cores", default="0", help="taskset list for the gateway and the pass-through")
    p.add_argument("--aux-cores", default="1", help="taskset list for the simulator, Redis and load generators")
    p.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections (no upstream latency)")
    p.add_argument("--latency-connections", type=int, default=256,
                   help="closed-loop connections with 60 ms upstream latency")
    p.add_argument("--profiles", type=_names(tuple(PROFILES)), default=None,
                   help="upstream profiles, comma-separated (default: none,60ms; --quick: none)")
    p.add_argument("--modes", type=_names(("json", "stream")), default=["json", "stream"])
    p.add_argument("--no-redis", action="store_true", help="skip the gateway with a Redis store")
    p.add_argument("--with-litellm", action="store_true",
                   help=f"also measure LiteLLM's proxy, installed into {litellm.VENV}")
    p.add_argument("--litellm-spec", default=litellm.DEFAULT_SPEC, help="what to install for --with-litellm")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                   help="saturation generator: wrk when installed (auto), or ours")
    p.add_argument("--no-profile", action="store_true", help="skip py-spy")
    p.add_argument("--profile-only", action="store_true",
                   help="only profile the gateway at saturation with py-spy (a quick loop while optimising)")
    p.add_argument("--instructions", action="store_true",
                   help="only count instructions per request under valgrind's callgrind: the pass-through and the "
                        "gateway with and without each part of its pipeline (a figure the host's speed does not "
                        "move; about 5 minutes for both modes)")
    p.add_argument("--parts", action="store_true",
                   help="only load the gateway with the full pipeline, and with each part of it left out, beside "
                        "the pass-through, for each one's CPU time per request against the pass-through's (what "
                        "each part costs in time; about 4 minutes for both modes)")
    p.add_argument("--shapes", action="store_true",
                   help="only load the gateway beside the pass-through with requests of real clients' shapes: the "
                        "short input, a 50-message chat history and a captured Codex request (what request size "
                        "costs; about 2 minutes for both modes)")
    p.add_argument("--scale", type=_ints, default=None,
                   help="worker counts for the scaling check, comma-separated (default 1,2; --quick: none)")
    p.add_argument("--scale-cores", default=None,
                   help="with --pin, the cores the scaling check's workers take, in this order (default: from 0 "
                        "up); where CPUs are hyperthread pairs, name one of each pair first")
    p.add_argument("--no-streams", action="store_true", help="skip the open-stream capacity test")
    p.add_argument("--streams-steps", type=_ints, default=None,
                   help="cumulative open-stream counts (default 500,1000,2000,3000,4000; --quick: 50,100,200)")
    p.add_argument("--rss-limit-mb", type=float, default=300.0)
    p.add_argument("--fractions", type=_floats, default=None,
                   help="offered rates as fractions of the gateway's saturation (0.5 is always run)")
    p.add_argument("--seconds", type=float, default=None, help="saturation run length (default 5; --quick: 2)")
    p.add_argument("--quiet-budget", type=float, default=None,
                   help="seconds the run may spend waiting for other jobs on the machine to calm down and "
                        "rerunning disturbed measurements (default 600; --quick: 30; 0 turns it off)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench-results/<timestamp>)")
    return p


def options(args: argparse.Namespace) -> Options:
    quick = args.quick or args.smoke
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "bench-results" / stamp
    o = Options(out=out, quick=quick, pin=args.pin, sut_cores=args.sut_cores, aux_cores=args.aux_cores,
                workers=args.workers, connections=args.connections, latency_connections=args.latency_connections,
                modes=args.modes, redis=not args.no_redis, with_litellm=args.with_litellm,
                litellm_spec=args.litellm_spec, loadgen=args.loadgen, scale_cores=args.scale_cores,
                profile=not args.no_profile,
                streams=not args.no_streams, rss_limit_mb=args.rss_limit_mb, profile_only=args.profile_only,
                instructions=args.instructions, parts=args.parts, shapes=args.shapes)
    if quick:
        o.profiles, o.scale, o.fractions = ["none"], [], [0.5]
        o.streams_steps, o.streams_time_limit = [50, 100, 200], 40.0
        o.warmup_seconds, o.sat_seconds, o.fixed_seconds, o.sweep_seconds, o.profile_seconds = 1, 2, 2, 1, 3
        o.sampler_check_seconds = 2.0
        o.quiet_wait, o.retries, o.quiet_budget, o.half_repeats = 3.0, 1, 30.0, 1
        o.paired_rounds, o.paired_seconds = 2, 2.0
    if args.smoke:
        o.quick = True
        o.profiles, o.scale, o.fractions, o.redis, o.profile, o.streams = ["none"], [], [0.5], False, False, False
        o.warmup_seconds, o.sat_seconds, o.fixed_seconds, o.sweep_seconds = 0, 1, 1, 1
        o.quiet_wait, o.retries, o.quiet_budget, o.half_repeats = 0.0, 0, 0.0, 1
        o.paired_rounds, o.paired_seconds = 1, 1.0
    if args.profiles is not None:
        o.profiles = args.profiles
    if args.scale is not None:
        o.scale = args.scale
    if args.streams_steps is not None:
        o.streams_steps = args.streams_steps
    if args.fractions is not None:
        o.fractions = args.fractions
    if args.seconds is not None:
        o.sat_seconds = args.seconds
    if args.quiet_budget is not None:
        o.quiet_budget = args.quiet_budget
    return o


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    o = options(parser().parse_args(argv))
    # SIGTERM/SIGHUP unwind like Ctrl-C does, so every child is stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    o.out.mkdir(parents=True, exist_ok=True)
    # scripts/bench.sh passes a folder it removes itself, even if this process is killed outright.
    given = os.environ.get("BENCH_WORK_DIR")
    work = Path(given) if given else Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    pid_file = Path(os.environ.get("BENCH_PID_FILE") or work / "children.pids")
    print(f"[bench] results: {o.out}", flush=True)
    status = 0
    results = None
    try:
        with Processes(o.out / "logs", pid_file) as procs:
            bench = Bench(o, procs, work)
            try:
                results = bench.run()
            except (Exception, KeyboardInterrupt, SystemExit) as exc:
                # Keep what was measured before the failure; the exception still ends the run.
                results = bench.results
                results["error"] = f"{type(exc).__name__}: {exc}"
                raise
    except (Exception, KeyboardInterrupt) as exc:
        print(f"[bench] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        if not given:
            shutil.rmtree(work, ignore_errors=True)
        if results is not None:
            for path in report.write(results, o.out):
                print(f"[bench] wrote {path}", flush=True)
            latest = o.out.parent / "latest"
            if o.out.parent.name == "bench-results" and (latest.is_symlink() or not latest.exists()):
                latest.unlink(missing_ok=True)
                latest.symlink_to(o.out.name)
    if results is not None and status == 0:
        print((o.out / "results.md").read_text(), flush=True)
    return status
