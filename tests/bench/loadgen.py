"""A bounded load generator in its own process: ``python -m tests.bench.loadgen MODE ...``.

Modes (the result is one JSON object on stdout):

``open``
    wrk2-style constant rate: request ``i`` is *due* at ``start + i / rate`` whether or not
    earlier ones have finished, and its latency is counted from that due time, so a server that
    stalls is charged for the requests queued behind the stall (no coordinated omission). At most
    ``--max-inflight`` requests are outstanding; a due request beyond that is dropped and counted.
    The generator reports its own overhead: how late it sent (``lag``) and its CPU per request.
``closed``
    ``--connections`` loops that each send the next request when the last one ends: the
    saturation test when wrk is not installed.
``hold``
    opens streaming requests in steps and keeps them open, reading the resident memory of
    ``--watch-pid`` (and its children) once every stream of a step has its first byte; stops at
    the last step, above ``--rss-limit-mb`` or at ``--time-limit``.

Every mode is bounded in requests and in time. Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.bench.procs import tree_rss_mb

_now = time.perf_counter


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles of ``values`` (milliseconds in, milliseconds out), plus max and mean."""
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for point in points:
        rank = max(int(point / 100 * len(ordered) + 0.999999) - 1, 0)
        out[f"p{point:g}"] = round(ordered[min(rank, len(ordered) - 1)], 4)
    out["max"] = round(ordered[-1], 4)
    out["mean"] = round(sum(ordered) / len(ordered), 4)
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Tally:
    """What the requests of one run measured; times in milliseconds."""

    latency: list[float] = field(default_factory=list)
    """From the due time (open mode) or the send time (closed mode) to the last byte."""
    service: list[float] = field(default_factory=list)
    """From the send time to the last byte, whatever the due time was."""
    ttfb: list[float] = field(default_factory=list)
    """From the send time to the first byte of the body."""
    lag: list[float] = field(default_factory=list)
    """How late the generator sent each request after its due time."""
    events: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    completed: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url: str = args.url
        self.body: bytes = args.body
        self.headers = dict(args.headers)
        self.stream: bool = args.stream
        self.timeout = aiohttp.ClientTimeout(total=args.request_timeout)

    async def one(self, session: aiohttp.ClientSession, tally: _Tally, due: float) -> None:
        """Send one request; ``due`` is when it should have been sent."""
        sent = _now()
        tally.lag.append((sent - due) * 1000)
        try:
            async with session.post(self.url, data=self.body, headers=self.headers, timeout=self.timeout) as resp:
                first = await resp.content.readany()
                first_at = _now()
                frames = first.count(b"\n\n")
                tail = first[-1:]
                size = len(first)
                while True:
                    chunk = await resp.content.readany()
                    if not chunk:
                        break
                    size += len(chunk)
                    frames += chunk.count(b"\n\n") + int(tail == b"\n" and chunk[:1] == b"\n")
                    tail = chunk[-1:]
                done = _now()
                status = resp.status
        except TimeoutError:
            tally.error("timeout")
            return
        except (aiohttp.ClientError, OSError) as exc:
            tally.error(type(exc).__name__)
            return
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
        if status != 200 or size == 0:
            tally.error(f"status {status}" if status != 200 else "empty body")
            return
        tally.completed += 1
        tally.latency.append((done - due) * 1000)
        tally.service.append((done - sent) * 1000)
        tally.ttfb.append((first_at - sent) * 1000)
        if self.stream:
            tally.events.append(frames)


def _session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",))


def _summary(tally: _Tally, *, elapsed: float, cpu: float, extra: dict[str, Any]) -> dict[str, Any]:
    done = tally.completed
    result: dict[str, Any] = {
        **extra,
        "completed": done,
        "errors": tally.errors,
        "error_count": sum(tally.errors.values()),
        "statuses": tally.statuses,
        "elapsed_s": round(elapsed, 4),
        "rate": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": percentiles(tally.latency),
        "service_ms": percentiles(tally.service),
        "ttfb_ms": percentiles(tally.ttfb),
        "generator": {
            "lag_ms": percentiles(tally.lag),
            "cpu_ms_per_request": round(cpu * 1000 / done, 4) if done else None,
            "cpu_share": round(cpu / elapsed, 4) if elapsed > 0 else None,
        },
    }
    if tally.events:
        result["events_per_stream"] = round(sum(tally.events) / len(tally.events), 2)
    return result


async def run_open(args: argparse.Namespace) -> dict[str, Any]:
    client = _Client(args)
    tally = _Tally()
    total = max(int(args.rate * args.duration), 1)
    period = 1.0 / args.rate
    inflight: set[asyncio.Task[None]] = set()
    dropped = 0
    async with _session(args.max_inflight) as session:
        await _warm(session, client, min(args.max_inflight, 8))
        cpu0 = _cpu_seconds()
        start = _now() + 0.01
        index = 0
        while index < total:
            due = start + index * period
            wait = due - _now()
            if wait > 0:
                await asyncio.sleep(wait)
            now = _now()
            # Send everything that is due by now: the sleep may have overslept by a tick.
            while index < total and start + index * period <= now:
                if len(inflight) >= args.max_inflight:
                    dropped += 1
                else:
                    task = asyncio.create_task(client.one(session, tally, start + index * period))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                index += 1
        sent_until = _now()
        if inflight:
            _, pending = await asyncio.wait(inflight, timeout=args.drain_timeout)
            for task in pending:
                task.cancel()
                tally.error("not finished at drain timeout")
            await asyncio.gather(*pending, return_exceptions=True)
        elapsed = _now() - start
        cpu = _cpu_seconds() - cpu0
    return _summary(tally, elapsed=elapsed, cpu=cpu, extra={
        "mode": "open", "offered_rate": args.rate, "scheduled": total, "dropped": dropped,
        "send_window_s": round(sent_until - start, 4)})


async def run_closed(args: argparse.Namespace) -> dict[str, Any]:
    client = _Client(args)
    tally = _Tally()
    async with _session(args.connections) as session:
        await _warm(session, client, min(args.connections, 8))
        deadline = _now() + args.duration
        limit = args.max_requests
        cpu0 = _cpu_seconds()
        start = _now()
        sent = 0

        async def loop() -> None:
            nonlocal sent
            while _now() < deadline and sent < limit:
                sent += 1
                await client.one(session, tally, _now())

        await asyncio.gather(*(loop() for _ in range(args.connections)))
        elapsed = _now() - start
        cpu = _cpu_seconds() - cpu0
    return _summary(tally, elapsed=elapsed, cpu=cpu, extra={"mode": "closed", "connections": args.connections})


async def _warm(session: aiohttp.ClientSession, client: _Client, count: int) -> None:
    """Open a few keep-alive connections before the clock starts."""
    scratch = _Tally()
    await asyncio.gather(*(client.one(session, scratch, _now()) for _ in range(count)))


async def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    client = _Client(args)
    steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    deadline = _now() + args.time_limit
    first_bytes = 0
    finished = 0
    failed: dict[str, int] = {}
    tasks: list[asyncio.Task[None]] = []
    rows: list[dict[str, Any]] = []
    stop_reason = "all steps done"

    async def hold(session: aiohttp.ClientSession) -> None:
        nonlocal first_bytes, finished
        try:
            async with session.post(client.url, data=client.body, headers=client.headers,
                                    timeout=client.timeout) as resp:
                if resp.status != 200:
                    failed[f"status {resp.status}"] = failed.get(f"status {resp.status}", 0) + 1
                    return
                if not await resp.content.readany():
                    failed["empty body"] = failed.get("empty body", 0) + 1
                    return
                first_bytes += 1
                while await resp.content.readany():
                    pass
                finished += 1
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            kind = f"{type(exc).__name__}: {exc}"[:120]
            failed[kind] = failed.get(kind, 0) + 1

    async with _session(0) as session:
        baseline = tree_rss_mb(args.watch_pid)
        for target in steps:
            if _now() > deadline:
                stop_reason = "time limit"
                break
            # Open at --ramp streams/s: a burst of connects would overflow the listen backlogs
            # (the simulator's is 128), and a dropped SYN is retried only after a second or more.
            while len(tasks) < target:
                tasks.append(asyncio.create_task(hold(session)))
                if len(tasks) % 25 == 0:
                    await asyncio.sleep(25 / args.ramp)
            step_deadline = min(deadline, _now() + args.step_timeout)
            while first_bytes + sum(failed.values()) < target and _now() < step_deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(args.settle)
            rss = tree_rss_mb(args.watch_pid)
            rows.append({"target": target, "open": first_bytes - finished, "first_bytes": first_bytes,
                         "finished": finished, "failed": sum(failed.values()), "rss_mb": rss})
            if rss > args.rss_limit_mb:
                stop_reason = f"RSS above {args.rss_limit_mb} MB"
                break
        else:
            if _now() > deadline:
                stop_reason = "time limit"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"mode": "hold", "baseline_rss_mb": baseline, "steps": rows, "failed": failed,
            "stop_reason": stop_reason, "rss_limit_mb": args.rss_limit_mb}


def _loopback(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise argparse.ArgumentTypeError(f"only loopback URLs are allowed, not {host!r}")
    return url


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"a header is 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("open", "closed", "hold"))
    parser.add_argument("--url", type=_loopback, required=True)
    parser.add_argument("--body-file", required=True, help="request body (JSON) to POST")
    parser.add_argument("--header", dest="headers", type=_header, action="append", default=[])
    parser.add_argument("--stream", action="store_true", help="count SSE events per reply")
    parser.add_argument("--rate", type=float, default=100.0, help="open: requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="open/closed: seconds of load")
    parser.add_argument("--max-inflight", type=int, default=2000, help="open: outstanding requests at most")
    parser.add_argument("--connections", type=int, default=32, help="closed: concurrent loops")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="closed: requests at most")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="open: wait for stragglers at most")
    parser.add_argument("--steps", default="100", help="hold: cumulative stream counts, comma-separated")
    parser.add_argument("--watch-pid", type=int, default=0, help="hold: process whose RSS is read")
    parser.add_argument("--rss-limit-mb", type=float, default=300.0)
    parser.add_argument("--step-timeout", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=500.0, help="hold: streams opened per second")
    parser.add_argument("--settle", type=float, default=1.0, help="hold: seconds between ramp and reading")
    parser.add_argument("--time-limit", type=float, default=60.0, help="hold: seconds for all steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with open(args.body_file, "rb") as handle:
        args.body = handle.read()
    if not any(name.lower() == "content-type" for name, _ in args.headers):
        args.headers.append(("Content-Type", "application/json"))
    if args.rate <= 0 or args.duration <= 0:
        raise SystemExit("--rate and --duration must be positive")
    runner = {"open": run_open, "closed": run_closed, "hold": run_hold}[args.mode]
    try:
        import uvloop

        result = uvloop.run(runner(args))
    except ImportError:
        result = asyncio.run(runner(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
