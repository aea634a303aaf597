"""Child processes of a bench run: start them (pinned to cores when asked), wait until they
answer, read their CPU time and memory from /proc, and kill every one at the end, even on error.

Each child leads its own process group, so stopping it stops whatever it forked (uvicorn
workers). The groups still alive are listed in a pid file that ``scripts/bench.sh`` reads in
its exit trap, in case this process itself is killed without a chance to clean up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (utime + stime from /proc/<pid>/stat); 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``); 0 once gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MB (10^6 bytes)."""
    return round(sum(status_kb(member, "VmRSS") for member in process_tree(pid)) * 1024 / 1e6, 2)


def core_times(cores: set[int] | None = None) -> tuple[float, float]:
    """(busy, total) CPU seconds so far, summed over ``cores`` (all when None), from /proc/stat."""
    busy = total = 0.0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if cores is not None and int(name[3:]) not in cores:
                continue
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            total += sum(values) / CLK_TCK
            busy += (sum(values) - idle) / CLK_TCK
    return busy, total


def tcp_counters() -> dict[str, int]:
    """Machine-wide TCP counters that mark connection set-up trouble: accept-queue overflows and
    SYN retransmissions (each costs the client a second or more)."""
    wanted = ("ListenOverflows", "TCPSynRetrans")
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], (int(v) for v in values.split()[1:]), strict=False))
            return {name: table.get(name, 0) for name in wanted}
    return {}


def parse_cores(text: str) -> set[int]:
    """A taskset list (``0``, ``0-1``, ``0,2``) as a set."""
    return set(ordered_cores(text))


def ordered_cores(text: str) -> list[int]:
    """A taskset list's cores in the order it names them (``8,0-1``: 8, 0, 1)."""
    cores: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cores += [core for core in range(int(low), int(high or low) + 1) if core not in cores]
    return cores


class Proc:
    """A started child: its ``Popen``, its log file, and readings over its process tree."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path, cores: str | None) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.cores = cores

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def python_pids(self) -> list[int]:
        """The processes of the tree that run Python code: the leaves (uvicorn workers), or the
        process itself when it has no children."""
        tree = self.tree()
        leaves = [pid for pid in tree if len(process_tree(pid)) == 1]
        return leaves or [self.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def rss_mb(self) -> float:
        return tree_rss_mb(self.pid)

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM (peak resident set) of the busiest process and of the whole tree, in MB."""
        peaks = [status_kb(pid, "VmHWM") * 1024 / 1e6 for pid in self.python_pids()]
        return {"max_process": round(max(peaks, default=0.0), 2), "sum": round(sum(peaks), 2)}

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Owns every child of the run; ``close()`` (or leaving the ``with`` block) stops them all."""

    def __init__(self, log_dir: Path, pid_file: Path) -> None:
        self.log_dir = log_dir
        self.pid_file = pid_file
        self._procs: list[Proc] = []
        self._taskset = shutil.which("taskset")
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, argv: Sequence[str], *, cores: str | None = None,
              env: Mapping[str, str] | None = None, cwd: Path | None = None, stdout: Path | None = None) -> Proc:
        """Start ``argv`` in a new session, output to ``<log_dir>/<name>.log`` (standard output
        to ``stdout`` when given), on ``cores`` (a taskset list such as ``0`` or ``0-1``) when given."""
        command = list(argv)
        preexec = None
        if cores is not None:
            if self._taskset:
                command = [self._taskset, "-c", cores, *command]
            else:
                wanted = parse_cores(cores)

                def preexec() -> None:
                    os.sched_setaffinity(0, wanted)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as err, (stdout.open("wb") if stdout else contextlib.nullcontext(err)) as out:
            popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                     preexec_fn=preexec)
        proc = Proc(name, popen, log, cores)
        self._procs.append(proc)
        self._write_pid_file()
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds."""
        if proc.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout)
        # Whatever the leader left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(2.0)
        if proc in self._procs:
            self._procs.remove(proc)
        self._write_pid_file()

    def run(self, name: str, argv: Sequence[str], *, timeout: float, cores: str | None = None,
            env: Mapping[str, str] | None = None) -> tuple[int | None, str]:
        """Run ``argv`` to its end (killed after ``timeout`` seconds); its exit status (None when
        it was killed) and standard output, also kept in ``<log_dir>/<name>.out``."""
        out = self.log_dir / f"{name}.out"
        proc = self.start(name, argv, cores=cores, env=env, stdout=out)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            status = proc.popen.poll()
            self.stop(proc)
        return status, out.read_text(errors="replace")

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)

    def _write_pid_file(self) -> None:
        self.pid_file.write_text("".join(f"{proc.pid}\n" for proc in self._procs))


def wait_http(proc: Proc, url: str, *, timeout: float = 60.0, method: str = "GET") -> None:
    """Poll ``url`` until it answers below 500; ``RuntimeError`` with the log tail if the process
    exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2) as reply:
                if reply.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:g}s:\n{proc.log_tail()}")


def wait_tcp(proc: Proc, port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not listen on port {port} within {timeout:g}s:\n{proc.log_tail()}")
