"""The inside of the tool sandbox: run by ``tools.sandbox`` as ``python -I -S -B runner_child.py``.

Never imported by the gateway. Standard library only, and no json or argparse: its start-up is
paid on every tool call, so the plan arrives as a ``marshal`` dump (the same interpreter wrote it).

Protocol. stdin: 8 ASCII digits (the plan's length), the plan, then the bytes the tool reads on
its stdin (a command tool's JSON arguments). The tool's stdout and stderr are the runner's own,
so output goes straight to the gateway's pipes. How the tool ended is written to the status fd
named in the plan, one line: ``exit N``, ``signal N`` or ``error WHY`` (the sandbox could not be
built). SIGTERM from the gateway kills the tool and everything it started, then the runner exits.

Processes, ``namespaces`` mode (a new user, mount, PID, IPC, UTS, cgroup and network namespace):
    runner  the gateway's child, outside the new PID namespace: makes the namespaces and the
            read-only root, then waits for init
    init    PID 1 inside: mounts /proc, pivots into the new root, becomes the unprivileged
            sandbox user, drops every capability, starts the tool and waits for it. When init
            exits the kernel kills whatever the tool left behind (daemons included)
    tool    rlimits, then exec the argv or call the Python function
``rlimits`` mode: runner (a child subreaper, so orphans come back to it) -> tool; after the tool
the runner kills every descendant it still has.
"""

from __future__ import annotations

# The C module: `signal` would import enum, several milliseconds of every tool call.
import _signal as signal
import ctypes
import marshal
import os
import resource
import stat
import sys

_libc = ctypes.CDLL(None, use_errno=True)

_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_ST_NOEXEC = 8
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_CHILD_SUBREAPER = 1, 24, 36
_PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
_CAP_VERSION_3 = 0x20080522
# glibc has no pivot_root wrapper; other architectures fall back to rlimits mode (the probe fails).
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_DEVICES = ("null", "zero", "full", "random", "urandom")

_child_pid = 0  # init (namespaces mode) or the tool (rlimits mode), for the SIGTERM handler
_mode = ""


class _SetupError(Exception):
    """The sandbox could not be built; reported as ``error WHY``."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise _SetupError(f"{what}: {os.strerror(errno)}")


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_bytes(source), target.encode(), _bytes(fstype), flags, _bytes(data)), f"mount {target}")


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), what)


def _read_exact(count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(0, count - len(data))
        if not chunk:
            raise _SetupError("the gateway closed stdin before the plan was complete")
        data += chunk
    return data


def _report(plan: dict, line: str) -> None:
    os.write(plan["status_fd"], line.encode("utf-8", "replace") + b"\n")


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def _kill_descendants() -> None:
    """rlimits mode: kill every process below the runner. As a child subreaper the runner inherits
    orphans (double-forked daemons included), so killing its children until none are left reaches
    them all; a dying child's own children are handed back to us on the next round."""
    me = os.getpid()
    while True:
        with open(f"/proc/{me}/task/{me}/children") as file:
            children = [int(pid) for pid in file.read().split()]
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                continue  # already gone


def _on_sigterm(signum: int, frame: object) -> None:
    if _mode == "namespaces" and _child_pid:
        # init's death takes the whole PID namespace with it; main() waits for that, then exits.
        os.kill(_child_pid, signal.SIGKILL)
        return
    if _mode == "rlimits" and _child_pid:
        _kill_descendants()
    os._exit(128 + signum)


# --- namespaces mode -------------------------------------------------------------------------


def _write_id_maps(runner_pid: int, uid: int, gid: int) -> None:
    """Runs in a helper forked before unshare(), so it is still in the gateway's user namespace:
    only a process there may map the sandbox's root to an id other than its own. A non-zero
    outer id matters: real root is exempt from RLIMIT_NPROC, which would let a fork bomb run."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/{runner_pid}/{name}", "w") as file:
            file.write(text)


def _unshare(plan: dict) -> None:
    if os.geteuid() == 0:
        os.setgroups([])  # supplementary groups would still grant access to group-readable files
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(ready_w)
        code = 1
        try:
            if os.read(ready_r, 1):
                _write_id_maps(os.getppid(), plan["uid"], plan["gid"])
                code = 0
        finally:
            os._exit(code)
    os.close(ready_r)
    flags = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWCGROUP
    if not plan["network"]:
        flags |= _CLONE_NEWNET
    try:
        _check(_libc.unshare(flags), "unshare")
        os.write(ready_w, b"x")
    finally:
        os.close(ready_w)
        _, status = os.waitpid(helper, 0)
    if status != 0:
        raise _SetupError("writing the user namespace id maps failed")


def _open_sources(paths: list[str]) -> list[tuple[str, int]]:
    """O_PATH handles on the bind sources, opened while the runner still has the gateway's file
    access (the sandbox id it becomes next may not even traverse the way to them, e.g. a Python
    under /root) and after the mount namespace exists (a bind source must be in it). They are
    closed before any tool process exists."""
    return [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in paths]


def _bind_read_only(source: int, target: str) -> None:
    _mount(f"/proc/self/fd/{source}", target, None, _MS_BIND)
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    if os.statvfs(source).f_flag & _ST_NOEXEC:
        flags |= _MS_NOEXEC  # a flag locked on the source mount must be kept, or the remount fails
    _mount(None, target, None, flags)


def _make_mount_point(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _build_root(plan: dict, sources: list[tuple[str, int]]) -> None:
    """Lay out the new root on a tmpfs at the plan's staging directory: read-only binds of what
    the tool needs, a few device nodes, a private writable /tmp, and mount points for /proc."""
    root = plan["stage"]
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount may propagate to the host
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    # The private /tmp first, so that a bind source under the host's /tmp shows on top of it.
    os.mkdir(root + "/tmp")
    _mount("tmpfs", root + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={plan['tmp_mb']}m,mode=0700,uid=0,gid=0")
    for path, source in sources:
        target = root + path
        _make_mount_point(target, stat.S_ISDIR(os.fstat(source).st_mode))
        _bind_read_only(source, target)
        os.close(source)
    for path, destination in plan["links"].items():
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        os.symlink(destination, root + path)
    os.mkdir(root + "/dev")
    for name in _DEVICES:
        _make_mount_point(f"{root}/dev/{name}", False)
        _mount(f"/dev/{name}", f"{root}/dev/{name}", None, _MS_BIND)
    for index, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{index}", f"{root}/dev/{name}")
    os.symlink("/proc/self/fd", f"{root}/dev/fd")
    os.makedirs(root + "/proc", exist_ok=True)
    os.mkdir(root + "/.old-root")


def _drop_privileges() -> None:
    """Keep the sandbox id (root inside, unprivileged outside) but hold no capability: with an
    empty bounding set and no_new_privs no later exec can regain any."""
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL: past the kernel's last capability
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _check(_libc.capset(ctypes.byref(Header(_CAP_VERSION_3, 0)), (Data * 2)()), "capset")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")


def _init(plan: dict) -> None:
    """PID 1 of the new PID namespace. Never returns."""
    try:
        # PID 1 ignores the tool's signals, unless it has a handler: drop ours and Python's.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        # Before setsid: until the death signal is armed we are still in the gateway's kill group.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, "parent death signal")
        os.setsid()
        root = plan["stage"]
        try:
            _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        except _SetupError:
            pass  # a container with masked /proc forbids a new proc mount; tools then run without /proc
        else:
            # No nested user namespaces: they would give the tool capabilities (over nothing of
            # ours, but over more kernel code). The limit is per user namespace, so this is ours.
            with open(root + "/proc/sys/user/max_user_namespaces", "w") as file:
                file.write("0")
        os.chdir(root)
        pivot_root = _SYS_PIVOT_ROOT.get(os.uname().machine)
        if pivot_root is None:
            raise _SetupError(f"pivot_root: no syscall number known for {os.uname().machine}")
        _check(_libc.syscall(pivot_root, b".", b".old-root"), "pivot_root")
        _check(_libc.umount2(b"/.old-root", _MNT_DETACH), "detach the old root")
        os.rmdir("/.old-root")
        _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        _drop_privileges()
        os.chdir(plan["tmp"])
        _run_and_report(plan)
    except BaseException as exc:  # PID 1 must report, never raise past here
        _report(plan, f"error {exc}")
    os._exit(0)


# --- both modes --------------------------------------------------------------------------------


def _apply_limits(limits: dict) -> None:
    # Soft CPU limit: SIGXCPU, which names the cause; the hard one a second later is SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory"], limits["memory"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["files"], limits["files"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size"], limits["file_size"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _call_python(plan: dict) -> None:
    """Import and call ``module:function`` with the arguments as keywords. stdout carries one
    reply, ``o`` + output or ``e`` + ``Type: message``; the tool's own prints go to stderr."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    sys.path[:] = plan["sys_path"]
    me = os.getpid()
    try:
        import importlib

        module, _, name = plan["target"].partition(":")
        value = getattr(importlib.import_module(module), name)(**plan["arguments"])
        if hasattr(value, "__await__"):
            import asyncio

            value = asyncio.run(value)
        if not isinstance(value, str):
            import json

            value = json.dumps(value, ensure_ascii=False)
        reply = b"o" + value.encode("utf-8", "replace")
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are tool errors too
        if os.getpid() != me:
            os._exit(1)  # a process the tool forked is unwinding through here: it has no reply to give
        import traceback

        traceback.print_exc()  # to stderr, for the gateway's logs
        reply = b"e" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
    if os.getpid() != me:
        os._exit(0)
    view = memoryview(reply)
    while view:
        view = view[os.write(reply_fd, view) :]
    os._exit(0)


def _tool(plan: dict) -> None:
    """The tool process. Never returns."""
    try:
        os.close(plan["status_fd"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, "parent death signal")
        os.environ.clear()
        os.environ.update(plan["env"])
        _apply_limits(plan["limits"])
        if plan["kind"] == "command":
            # Python ignores these; a command expects the defaults (e.g. `yes | head` ends on SIGPIPE).
            for signum in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(signum, signal.SIG_DFL)
            _exec(plan["target"], plan["env"])
        _call_python(plan)
    except BaseException as exc:  # a forked child must never return into the runner
        os.write(2, f"sandbox: {exc}\n".encode("utf-8", "replace"))
    os._exit(126)


def _exec(argv: list, env: dict) -> None:
    """execvpe without os.execvpe, which imports modules a command tool's root does not have."""
    program = argv[0]
    places = [program] if "/" in program else [f"{folder}/{program}" for folder in env["PATH"].split(":")]
    failure = "not found"
    for path in places:
        try:
            os.execve(path, argv, env)
        except FileNotFoundError:
            continue
        except OSError as exc:
            failure = str(exc.strerror)
    os.write(2, f"cannot run {program!r}: {failure}\n".encode())
    os._exit(127)


def _run_and_report(plan: dict) -> None:
    global _child_pid
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the handler must know the pid it kills
    tool = os.fork()
    if tool == 0:
        _tool(plan)
    _child_pid = tool
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _, status = os.waitpid(tool, 0)
    if plan["mode"] == "rlimits":
        _kill_descendants()
    _report(plan, _describe(status))


def main() -> None:
    global _mode, _child_pid
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.chdir("/")
    try:
        plan = marshal.loads(_read_exact(int(_read_exact(8))))
    except (_SetupError, ValueError, EOFError):
        os._exit(125)  # no plan, hence no status fd to explain on
    os.set_inheritable(plan["status_fd"], False)  # the tool must not be able to forge its own status
    _mode = plan["mode"]
    try:
        if _mode == "rlimits":
            _prctl(_PR_SET_CHILD_SUBREAPER, 1, "child subreaper")
            _prctl(_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
            os.chdir(plan["tmp"])
            _run_and_report(plan)
            os._exit(0)
        _unshare(plan)
        sources = _open_sources(plan["binds"])
        # Become the mapped sandbox root now (capabilities in the new namespace are kept): files
        # can only be created by an id that the namespace maps, and the real root is not mapped.
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        _build_root(plan, sources)
    except (_SetupError, OSError) as exc:
        _report(plan, f"error {exc}")
        os._exit(125)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    init = os.fork()
    if init == 0:
        _init(plan)
    _child_pid = init
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _, status = os.waitpid(init, 0)
    os._exit(0 if status == 0 else 125)


if __name__ == "__main__":
    main()
