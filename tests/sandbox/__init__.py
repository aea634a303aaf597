"""Functions the sandbox tests register as python tools: they run INSIDE the sandbox.

They live here rather than in test_sandbox.py so that importing them in the sandbox does not
import pytest (and its plugins) on every call. Standard library only. Each escape attempt either
raises (the call then reports the exception to the model) or returns what it managed to do.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import time

_SIOCGIFFLAGS, _SIOCSIFFLAGS = 0x8913, 0x8914
_IFF_UP = 0x1
_MS_REMOUNT, _MS_BIND = 32, 4096
_CLONE_NEWUSER = 0x10000000


def echo(**arguments: object) -> dict[str, object]:
    return {"arguments": arguments, "cwd": os.getcwd(), "tmpdir": os.environ.get("TMPDIR")}


def fail(message: str) -> str:
    raise RuntimeError(message)


def interfaces() -> list[list[object]]:
    """Every network interface and whether it is up."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("16sH14s", name.encode(), 0, b"")
            flags = struct.unpack("16sH14s", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
            found.append([name, bool(flags & _IFF_UP)])
    return found


def escalate() -> dict[str, object]:
    """Try what only a capability or real root allows; report what worked and who we are."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    worked = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", _IFF_UP, b""))
            worked.append("loopback up")
        except OSError:
            pass
    if libc.mount(None, b"/usr", None, _MS_REMOUNT | _MS_BIND, None) == 0:
        worked.append("/usr read-write")
    if libc.unshare(_CLONE_NEWUSER) == 0:
        worked.append("nested user namespace")
    if libc.chroot(b"/tmp") == 0:
        worked.append("chroot")
    with open("/proc/self/status") as status:
        capabilities = next(line.split()[1] for line in status if line.startswith("CapEff:"))
    with open("/proc/self/uid_map") as uid_map:
        outside = int(uid_map.read().split()[1])
    return {"worked": worked, "capabilities": capabilities, "outside_uid": outside}


def connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(b"escaped\n")
    return "connected"


def read_env(name: str) -> str:
    return os.environ[name]


def read_file(path: str) -> str:
    with open(path) as file:
        return file.read()


def write_file(path: str) -> str:
    with open(path, "w") as file:
        file.write("escaped")
    return "written"


def fork_bomb() -> str:
    while True:
        os.fork()


def memory_bomb() -> str:
    hoard = []
    while True:
        hoard.append(bytearray(64 * 1024 * 1024))


def spin() -> str:
    while True:
        pass


def kill_parent() -> str:
    parent = os.getppid()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL):
        os.kill(parent, signum)
    time.sleep(0.3)
    return f"parent {parent} did not die"


def kill_pid(pid: int) -> str:
    os.kill(pid, signal.SIGKILL)
    return f"sent SIGKILL to {pid}"


def big_output(size: int) -> str:
    return "x" * size


def daemon(marker: str, then_sleep: float) -> str:
    """Start ``sleep MARKER`` as a daemon (double fork, own session), wait until it runs, then
    sleep ``then_sleep`` seconds so the test can see it from outside, and return."""
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.close(ready_r)
            os.set_inheritable(ready_w, False)  # closed by the exec below: the parent's signal
            os.execv("/bin/sleep", ["sleep", marker])
        os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)  # returns at the exec, when the write end closes
    time.sleep(then_sleep)
    return "daemon started"
