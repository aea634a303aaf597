"""wrk (from Debian) as the closed-loop saturation generator: the Lua script that makes it POST
a body, and the parser for its report."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from typing import Any

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DURATION = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_PERCENTILE = re.compile(r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def find_wrk() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def lua_script(body: bytes, headers: Mapping[str, str]) -> str:
    """A wrk script that POSTs ``body`` with ``headers`` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    lines += [f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def command(wrk: str, url: str, script: str, *, connections: int, duration: float, timeout: float,
            threads: int = 1) -> list[str]:
    return [wrk, f"-t{max(min(threads, connections), 1)}", f"-c{connections}", f"-d{max(round(duration), 1)}s",
            f"--timeout={int(timeout)}s", "--latency", "-s", script, url]


def parse(output: str) -> dict[str, Any]:
    """Requests, seconds, requests/s, latency percentiles (ms) and error counts from wrk's report;
    ``ValueError`` when the report has no totals (wrk failed)."""
    totals = _DURATION.search(output)
    rate = _RATE.search(output)
    if not totals or not rate:
        raise ValueError(f"wrk printed no totals:\n{output[-2000:]}")
    requests = int(totals.group(1))
    seconds = float(totals.group(2)) * _UNITS[totals.group(3)] / 1000.0
    latency = {f"p{float(point):g}": round(float(value) * _UNITS[unit], 4)
               for point, value, unit in _PERCENTILE.findall(output)}
    non_2xx = int(m.group(1)) if (m := _NON_2XX.search(output)) else 0
    socket = dict(zip(("connect", "read", "write", "timeout"),
                      (int(x) for x in m.groups()), strict=True)) if (m := _SOCKET.search(output)) else {}
    return {"requests": requests, "seconds": round(seconds, 4), "rate": float(rate.group(1)),
            "latency_ms": latency, "non_2xx": non_2xx, "socket_errors": socket,
            "error_count": non_2xx + sum(socket.values())}
