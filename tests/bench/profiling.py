"""Sample the gateway at saturation with py-spy (``--native``, so time in C shows: the garbage
collector, uvloop, the HTTP parsers, msgspec) and reduce the samples to what costs the most:

* by component: where the leaf frame's code lives (a Python package, or a C library);
* by Python function: each sample charged to its innermost Python frame, C work it called
  included; this is the table to pick the next optimisation from;
* by frame, self (C frames included) and inclusive (Python frames below the server's root chain),
  aggregated per function whatever line was sampled.

Samples of threads that only wait (a worker thread blocked on its queue, logging's queue
listener) are dropped: py-spy does not always see them as idle.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.procs import Proc, Processes

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Innermost Python frames of a thread that waits.
_IDLE_PYTHON = frozenset({
    "_worker (concurrent/futures/thread.py)", "Condition.wait (threading.py)", "Event.wait (threading.py)",
    "Queue.get (queue.py)", "_wait_for_tstate_lock (threading.py)", "select (selectors.py)",
})
# C files (py-spy names them without a folder) and the component they belong to.
_NATIVE_COMPONENTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("loop.c", "uvloop/"), "uvloop (C)"),
    (("core.c", "queue.h", "loop-watcher.c", "stream.c", "linux.c", "timer.c", "heap-inl.h", "tcp.c", "async.c",
      "uv-common.c", "poll.c", "signal.c", "process.c"), "libuv (C)"),
    (("llhttp.c", "api.c", "http.c", "parser.c", "url_parser.c", "http_parser.c"), "HTTP parsers (C)"),
    (("_http_parser.c", "_http_writer.c", "_helpers_c.c", "_websocket"), "aiohttp (C)"),
    (("_multidict.c", "htkeys.h", "hashtable.h", "bulk_update.h", "views.h", "pythoncapi_compat.h"),
     "multidict (C)"),
    (("msgspec/",), "msgspec (C)"),
    (("yarl/", "_quoting_c"), "yarl (C)"),
    (("libc.so", "libpthread"), "libc (syscalls, memory)"),
    (("libcrypto", "libssl", "_hashopenssl.c"), "OpenSSL (C)"),
)


def find_py_spy() -> list[str] | None:
    """The command that runs py-spy: from PATH, else through ``uvx`` (cached or fetched)."""
    found = shutil.which("py-spy")
    if found:
        return [found]
    uvx = shutil.which("uvx")
    if uvx is None:
        return None
    for extra in (["--offline"], []):
        try:
            probe = subprocess.run([uvx, *extra, "py-spy", "--version"], capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return [uvx, *extra, "py-spy"]
    return None


def start(procs: Processes, py_spy: list[str], pid: int, *, seconds: float, out: Path, cores: str | None,
          native: bool = True) -> Proc:
    """Record ``pid`` for ``seconds``. Native unwinding pauses the process for every sample, so it
    samples at 50 Hz (the gateway keeps about 70% of its throughput); without it, py-spy reads the
    stacks without pausing (``--nonblocking``) at 250 Hz."""
    argv = [*py_spy, "record", "-p", str(pid), "-d", str(max(int(seconds), 1)), "-f", "raw", "-o", str(out)]
    argv += ["-r", "50", "--native"] if native else ["-r", "250", "--nonblocking"]
    return procs.start("py-spy", argv, cores=cores)


def _short(path: str) -> str:
    """py-spy already prints most paths relative to ``sys.path``; shorten the others alike."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", path)


def _split(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["func"], _short(match["file"])


def _is_python(file: str) -> bool:
    return file.endswith(".py") or file.startswith("<") or "." not in file


def _component(func: str, file: str) -> str:
    """Where a leaf frame's code lives: a Python package, ``stdlib``, or a C component."""
    if _is_python(file):
        if file.startswith("<"):
            return "stdlib" if file.startswith("<frozen") else "python (generated)"
        head = file.split("/", 1)[0].removesuffix(".py")
        return "stdlib" if head in sys.stdlib_module_names else head
    for markers, component in _NATIVE_COMPONENTS:
        if any(marker in file for marker in markers):
            return component
    if func.startswith(("gc_", "collect", "_PyObject_GC", "visit_", "subtract_refs", "move_unreachable",
                        "update_refs", "deduce_unreachable")):
        return "CPython garbage collector"
    return "CPython runtime (C)"


def summarize(raw: Path, *, top: int = 15) -> dict[str, Any]:
    """The tables described in the module docstring, from py-spy's ``raw`` (collapsed stacks)
    output; percentages are of the samples kept (idle waits dropped)."""
    own: Counter[str] = Counter()
    python_own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_split(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        names = [f"{func} ({file})" if file else func for func, file in frames]
        python = [name for name, (_, file) in zip(names, frames, strict=True) if _is_python(file)]
        if python and python[-1] in _IDLE_PYTHON:
            idle += count
            continue
        total += count
        own[names[-1]] += count
        python_own[python[-1] if python else "(no Python frame)"] += count
        components[_component(*frames[-1])] += count
        for name in set(python):
            inclusive[name] += count

    def rows(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"frame": name, "samples": samples, "percent": round(100 * samples / total, 1) if total else 0.0}
                for name, samples in counter.most_common(n)]

    # Inclusive: Python frames below the server's root chain (the frames on nearly every stack).
    for name in [name for name, samples in inclusive.items() if samples >= 0.95 * total]:
        del inclusive[name]
    return {"samples": total, "idle_samples_dropped": idle, "packages": rows(components, 14),
            "python_self": rows(python_own, top + 5), "self": rows(own, top),
            "inclusive": rows(inclusive, top + 10)}
