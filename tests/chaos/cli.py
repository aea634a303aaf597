"""``python -m tests.chaos`` (``make chaos``): the chaos run, about two minutes by default;
``python -m tests.chaos soak --minutes 20`` (``make soak``): the soak. Each prints its table and
writes the whole result as JSON (``--json``); the exit status is 1 when a check failed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.chaos.chaos import ChaosOptions, ChaosRun
from tests.chaos.cluster import Cluster
from tests.chaos.report import markdown_table, samples_table, write_json
from tests.chaos.soak import SoakOptions, SoakRun


def _workdir(args: argparse.Namespace) -> contextlib.AbstractContextManager[str]:
    if args.workdir is None:
        return tempfile.TemporaryDirectory(prefix="interlock-chaos-")
    args.workdir.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(args.workdir))


def _chaos(args: argparse.Namespace) -> int:
    options = ChaosOptions(rate=args.rate, upstream_s=args.upstream_seconds, window_s=args.window_seconds)
    with _workdir(args) as workdir, Cluster(Path(workdir)) as cluster:
        result = asyncio.run(ChaosRun(cluster, options).run())
    write_json(result, args.json)
    print(markdown_table(result["rows"]))
    return _verdict(result, args.json)


def _soak(args: argparse.Namespace) -> int:
    options = SoakOptions(minutes=args.minutes, rate=args.rate, sample_s=args.sample_seconds,
                          aborted_streams=args.aborted_streams)
    with _workdir(args) as workdir, Cluster(Path(workdir), max_in_flight=args.max_in_flight) as cluster:
        result = asyncio.run(SoakRun(cluster, options, max_in_flight=args.max_in_flight).run())
    write_json(result, args.json)
    print(markdown_table(result["rows"]))
    print("\n" + samples_table(result["samples"]))
    print(f"\ngrowth after warm-up: {result['growth']}")
    storm, overload = result["storm"], result["overload"]
    print(f"abort storm: {storm['aborted']} of {storm['sent']} streams aborted in {storm['seconds']} s")
    print(f"overload: {overload['sent']} at once, {overload['served']} served, {overload['refused']} refused "
          f"(p99 {overload['refused_latency_ms'].get('p99')} ms), /healthz {overload['healthz']}")
    return _verdict(result, args.json)


def _verdict(result: dict[str, Any], path: Path) -> int:
    for problem in result["problems"]:
        print("PROBLEM:", problem)
    print(f"\nwritten to {path}")
    return 1 if result["problems"] else 0


def _common(command: argparse.ArgumentParser, name: str) -> None:
    command.add_argument("--rate", type=float, default=12.0, help="requests started per second")
    command.add_argument("--json", type=Path, default=Path(f"bench-results/{name}.json"),
                         help="where the whole result goes (default: %(default)s, ignored by git)")
    command.add_argument("--workdir", type=Path, help="keep the processes' logs here (default: a temporary "
                         "directory, removed at the end)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    chaos = sub.add_parser("chaos", help="faults under load (the default)")
    for command in (parser, chaos):
        _common(command, "chaos")
        command.add_argument("--upstream-seconds", type=float, default=60.0, help="the upstream-fault window")
        command.add_argument("--window-seconds", type=float, default=10.0, help="each later fault window, at least")
    soak = sub.add_parser("soak", help="resources over a long run, aborted streams, overload")
    _common(soak, "soak")
    soak.add_argument("--minutes", type=float, default=20.0, help="of steady load")
    soak.add_argument("--sample-seconds", type=float, default=30.0, help="load between two readings")
    soak.add_argument("--aborted-streams", type=int, default=2000)
    soak.add_argument("--max-in-flight", type=int, default=48, help="listen.max_in_flight of the replicas")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return _soak(args) if args.command == "soak" else _chaos(args)
