"""Sample the gateway at saturation with py-spy and reduce the samples to what costs the most.

Two recordings, because neither alone is right everywhere:

* ``--nonblocking`` (250 Hz) reads the stacks without stopping the process, so samples fall where
  the time goes; a stack read while it changes can come out cut short, so only its innermost
  frames are used: self time by Python package and by Python function (C work charged to the
  Python function that called it). This is the table to pick the next optimisation from.
* ``--native`` (50 Hz) stops the process for every sample to unwind it, C frames included (the
  garbage collector, uvloop, the HTTP parsers, msgspec): self time by component and by frame,
  and inclusive time by Python frame. Stopping the process puts samples on system-call returns:
  on the 2-core VM, a system call taking 0.4% of a loop's time drew 43% of its native samples.
  ``check_sampler`` measures that lean on the machine at hand (``tests.bench.sampler_probe``),
  and the report prints it beside the tables.

Samples of threads that only wait (a worker thread blocked on its queue, logging's queue
listener) are dropped: py-spy does not always see them as idle.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.bench import sampler_probe
from tests.bench.procs import Proc, Processes
from tests.bench.targets import REPO

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
          native: bool) -> Proc:
    """Record ``pid`` for ``seconds``: stopping it for each sample to unwind C frames too
    (``native``; at 50 Hz, as each stop costs the gateway throughput), or reading its Python
    stacks while it runs (at 250 Hz)."""
    argv = [*py_spy, "record", "-p", str(pid), "-d", str(max(int(seconds), 1)), "-f", "raw", "-o", str(out)]
    argv += ["-r", "50", "--native"] if native else ["-r", "250", "--nonblocking"]
    return procs.start("py-spy", argv, cores=cores)


def check_sampler(procs: Processes, py_spy: list[str], work: Path, *, seconds: float, cores: str | None,
                  spy_cores: str | None) -> dict[str, Any]:
    """Where each way of sampling puts its samples, against where the time goes: the sampler
    probe on ``cores`` (the gateway's), recorded from ``spy_cores`` once each way. Percentages:
    the probe's system call's share of its time, and of each recording's samples."""
    out: dict[str, Any] = {}
    for native in (False, True):
        how = "native" if native else "nonblocking"
        raw, printed = work / f"sampler-probe-{how}.txt", work / f"sampler-probe-{how}.json"
        # It loops past the recording's end: every sample meets it looping.
        probe = procs.start(f"sampler-probe-{how}", [sys.executable, "-m", "tests.bench.sampler_probe",
                                                     "--seconds", f"{seconds + 2:g}"],
                            cores=cores, cwd=REPO, stdout=printed)
        try:
            time.sleep(0.5)
            spy = start(procs, py_spy, probe.pid, seconds=seconds, out=raw, cores=spy_cores, native=native)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.popen.wait(seconds + 30)
            procs.stop(spy)
            with contextlib.suppress(subprocess.TimeoutExpired):
                probe.popen.wait(seconds + 30)
        finally:
            procs.stop(probe)
        try:
            timing = json.loads(printed.read_text())
        except (OSError, ValueError):
            return {}  # the probe did not finish: no check rather than a wrong one
        samples, in_call = leaf_share(raw, sampler_probe.SYSTEM_CALL) if raw.exists() else (0, 0)
        out["system_call_percent"] = timing["system_call_percent"]
        out[how] = {"samples": samples, "percent": round(100 * in_call / samples, 1) if samples else None}
    return out


def leaf_share(raw: Path, function: str) -> tuple[int, int]:
    """The samples in py-spy's ``raw`` output, and how many of them have ``function`` as their
    innermost Python frame."""
    total = hits = 0
    for frames, count in _stacks(raw):
        python = [func for func, file in frames if _is_python(file)]
        total += count
        if python and python[-1] == function:
            hits += count
    return total, hits


def _stacks(raw: Path) -> Iterator[tuple[list[tuple[str, str]], int]]:
    """Each stack of py-spy's ``raw`` (collapsed) output as its frames, outermost first, each a
    function and its file, with its sample count; a stack py-spy could not read is left out."""
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [_split(frame) for frame in stack.split(";") if frame.strip()]
        if frames and count_text.isdigit():
            yield frames, int(count_text)


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
    for frames, count in _stacks(raw):
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
