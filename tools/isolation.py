"""Which isolation the tool sandbox gets on this machine, and the plan each sandboxed call sends
to the runner (``tools/runner_child.py``).

``isolation_report()`` probes once by making a real sandboxed call in ``namespaces`` mode; if
that fails (no user namespaces, a seccomp profile that forbids ``unshare``, an unknown CPU
architecture) every call uses ``rlimits`` mode and the gateway logs a loud warning listing what is
then not contained. docs/tools.md explains both modes and the Kubernetes settings they need.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import marshal
import os
import subprocess
import sys
import tempfile
import threading
from typing import Any, Literal

import msgspec

from tools.registry import SANDBOX_PATH, ToolSpec

log = logging.getLogger("interlock.tools")

Isolation = Literal["namespaces", "rlimits"]

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner_child.py")
# -I: ignore PYTHON* variables and the user site; -S: no site import (the plan carries sys.path);
# -B: write no bytecode (the sandbox's files are read-only). All three also shorten start-up.
RUNNER_ARGV = (sys.executable, "-I", "-S", "-B", RUNNER)
# The runner's own environment: nothing of the gateway's. The tool's is built in the plan.
RUNNER_ENV: dict[str, str] = {}
# Who the sandbox's root is outside when the gateway runs as root: nobody. Any non-zero id would
# do (real root is exempt from RLIMIT_NPROC, so a fork bomb would run); one fixed id is enough
# because each call has its own user namespace, so calls share neither signals nor process counts.
SANDBOX_ID = 65534
_MIB = 1024 * 1024

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/resolv.conf", "/etc/ssl",
    "/etc/ca-certificates",
)  # fmt: skip

CONTAINED: dict[Isolation, tuple[str, ...]] = {
    "namespaces": (
        "network: own network namespace whose only interface is a loopback that is down "
        "(a tool declaring network: true shares the gateway's network instead)",
        "files: a new root of read-only binds (system directories, a few /etc files, the Python "
        "installation, the tool's own package, its read_only_paths); the only writable place is a "
        "private tmpfs /tmp of tmp_mb",
        "processes: own PID namespace; when the tool's main process ends everything it started is "
        "killed, daemons included",
        "signals and ptrace: the gateway and other calls are outside the tool's PID and user namespaces",
        "privileges: root inside is an unprivileged id outside (nobody when the gateway is root), "
        "holds no capability, has no_new_privs, and every mount is nosuid",
        "environment: built from scratch; no variable of the gateway reaches the tool",
        "limits: CPU time, address space, processes, open files, file size, wall clock, output size",
        "IPC, hostname and cgroup view: own namespaces",
    ),
    "rlimits": (
        "environment: built from scratch; no variable of the gateway reaches the tool",
        "limits: CPU time, address space, open files, file size, wall clock, output size",
        "processes: the runner is a child subreaper and kills everything the tool started, daemons "
        "included, when the tool ends (unless the tool kills the runner first)",
    ),
}
NOT_CONTAINED: dict[Isolation, tuple[str, ...]] = {
    "namespaces": (
        "kernel attack surface: no seccomp filter, so a kernel bug reachable from an unprivileged "
        "user namespace is reachable",
        "totals across a tool's processes: no cgroup, so CPU time and memory are limited per "
        "process (up to max_processes x memory_mb in all) and CPU share and I/O are not throttled",
        "tmpfs memory: /tmp counts against the node, not RLIMIT_AS (bounded by tmp_mb)",
    ),
    "rlimits": (
        "network: the tool has the gateway's network (its own port, Redis, the cluster)",
        "files: the tool reads whatever the gateway's user can read (its configuration, the SQLite "
        "store) and writes wherever that user can; the private temp dir is only its working directory",
        "signals and ptrace: the tool runs as the gateway's user and can signal or trace the gateway "
        "(as root: every process in the container)",
        "process count: RLIMIT_NPROC counts every process of the gateway's user, and root is exempt",
        "totals across a tool's processes: CPU time and memory are limited per process only",
        "cleanup on cancellation: a cancelled call kills the runner's process group at once, so a "
        "process that left the group (setsid) survives",
        "privileges: the gateway's own, apart from no_new_privs",
    ),
}


class IsolationReport(msgspec.Struct, kw_only=True, frozen=True):
    """What the sandbox contains on this machine."""

    mode: Isolation
    """``namespaces`` (full isolation) or ``rlimits`` (the degraded fallback)."""
    reason: str
    """Why this mode: what the probe found."""
    contained: tuple[str, ...]
    """What a tool cannot do or reach, one line per area."""
    not_contained: tuple[str, ...]
    """What a tool can still do or reach."""


def _report_for(mode: Isolation, reason: str) -> IsolationReport:
    return IsolationReport(mode=mode, reason=reason, contained=CONTAINED[mode], not_contained=NOT_CONTAINED[mode])


_probe_lock = threading.Lock()
_report: IsolationReport | None = None


def isolation_report() -> IsolationReport:
    """The isolation sandboxed calls get here. The first call probes (blocking, about a tenth of
    a second; call it at start-up) and logs the result, loudly when it is ``rlimits``."""
    global _report
    with _probe_lock:
        if _report is None:
            _report = _probe()
            if _report.mode == "namespaces":
                log.info("tool sandbox: namespaces (%s)", _report.reason)
            else:
                log.warning(
                    "TOOL SANDBOX DEGRADED to rlimits-only isolation: %s. NOT contained: %s. "
                    "docs/tools.md lists the settings that enable namespaces.",
                    _report.reason, "; ".join(_report.not_contained),
                )  # fmt: skip
        return _report


def cached_report() -> IsolationReport | None:
    """The report if the probe has run, without probing."""
    return _report


def _probe() -> IsolationReport:
    # A real call through the same runner and plan as every tool: what works here is what runs.
    spec = ToolSpec(
        name="isolation_probe", description="Lists the network interfaces.", parameters={"type": "object"},
        kind="python", target="socket:if_nameindex",
    )  # fmt: skip
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    try:
        plan = build_plan(spec, {}, "namespaces", status_fd=status_w, tmp="/tmp")
        done = subprocess.run(
            RUNNER_ARGV, input=encode_stdin(plan, b""), capture_output=True, env=RUNNER_ENV,
            pass_fds=(status_w,), start_new_session=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return _report_for("rlimits", f"the sandbox runner could not be run: {exc}")
    finally:
        os.close(status_w)
    status = read_status(status_r)
    if status != "exit 0" or not done.stdout.startswith(b"o"):
        detail = status or done.stderr.decode("utf-8", "replace").strip()[-300:] or "no status"
        return _report_for("rlimits", f"a namespaced sandbox could not be built ({detail})")
    names = sorted(name for _, name in msgspec.json.decode(done.stdout[1:]))
    if names not in ([], ["lo"]):
        return _report_for("rlimits", f"the sandbox's network namespace shows interfaces {names}")
    return _report_for("namespaces", "user, mount, PID, network, IPC, UTS and cgroup namespaces work")


def build_plan(
    spec: ToolSpec, arguments: dict[str, Any], mode: Isolation, *, status_fd: int, tmp: str
) -> dict[str, Any]:
    """What the runner needs to run one call (see runner_child.py); marshal-able values only."""
    plan: dict[str, Any] = {
        "mode": mode,
        "kind": spec.kind,
        "target": spec.target,
        "arguments": arguments,
        "sys_path": [path for path in sys.path if os.path.isabs(path)],
        "env": {"PATH": SANDBOX_PATH, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", **spec.env},
        "network": spec.network,
        "tmp": tmp,
        "tmp_mb": spec.tmp_mb,
        "status_fd": status_fd,
        "limits": {
            "cpu": spec.cpu_seconds,
            "memory": spec.memory_mb * _MIB,
            "processes": spec.max_processes,
            "files": spec.max_open_files,
            "file_size": spec.tmp_mb * _MIB,
        },
    }
    if mode == "namespaces":
        target = spec.target if spec.kind == "python" else None
        binds, links = _view(target if isinstance(target, str) else None, spec.read_only_paths)
        root = os.geteuid() == 0
        plan.update(
            binds=binds,
            links=links,
            stage=_stage_dir(),
            uid=SANDBOX_ID if root else os.geteuid(),
            gid=SANDBOX_ID if root else os.getegid(),
        )
    return plan


def encode_stdin(plan: dict[str, Any], tail: bytes) -> bytes:
    """The runner's stdin: the plan's length in 8 digits, the plan, then the tool's own stdin."""
    body = marshal.dumps(plan)
    return b"%08d" % len(body) + body + tail


def read_status(fd: int) -> str:
    """The runner's status line (``exit N``, ``signal N``, ``error WHY``), or "" if it wrote none.
    Called once the runner has exited; closes ``fd``."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        data = b""  # a writer (init, when the runner was killed) may still hold the pipe
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").strip()


@functools.cache
def _stage_dir() -> str:
    # An empty directory the runner mounts the new root's tmpfs on, in its own mount namespace
    # only. A fixed place outside any path a tool might be given, so no bind source is hidden.
    path = os.path.join(tempfile.gettempdir(), "interlock-sandbox-root")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _view(python_target: str | None, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The read-only view of a tool: host paths to bind at the same place, and symlinks to
    recreate (``/bin -> /usr/bin``; a path whose real location differs)."""
    wanted = [*_SYSTEM, *_ETC]
    if python_target is not None:
        wanted += [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix]
        wanted += _package_paths(python_target)
    wanted += extra
    binds: set[str] = set()
    links: dict[str, str] = {}
    for path in wanted:
        if not os.path.lexists(path):
            continue
        real = os.path.realpath(path)
        parent = os.path.dirname(path)
        if real != path and os.path.realpath(parent) == parent:
            links[path] = real
        if os.path.exists(real):
            binds.add(real)
    kept: list[str] = []
    for path in sorted(binds):
        if not _inside(path, kept):
            kept.append(path)
    # A path inside a bound directory is already visible as it is, symlinks included (and a
    # read-only bind could not take a new one).
    return kept, {path: real for path, real in links.items() if not _inside(path, kept)}


def _inside(path: str, folders: list[str]) -> bool:
    return any(path.startswith(folder.rstrip("/") + "/") for folder in folders)


def _package_paths(target: str) -> list[str]:
    """Where a python tool's top-level package lives: bound alone, so the tool sees its own code
    but not the rest of the directory it was installed from (e.g. the gateway's data/)."""
    found = importlib.util.find_spec(target.split(":", 1)[0].split(".", 1)[0])
    if found is None:
        return []  # the import inside the sandbox reports it to the model
    if found.submodule_search_locations:
        return list(found.submodule_search_locations)
    return [found.origin] if found.origin and os.path.isabs(found.origin) else []
