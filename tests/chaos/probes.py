"""Readings of a process from /proc, for leak checks: resident memory, open file descriptors,
and established TCP connections by port (Linux only; loopback connections appear as any other)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tests.bench.procs import tree_rss_mb

_ESTABLISHED = "01"

__all__ = ["connections_from", "descriptors", "tree_rss_mb"]


def descriptors(pid: int, remote_ports: Mapping[str, int]) -> dict[str, int]:
    """One look at ``pid``'s open descriptors: how many (``fds``), and for each name of
    ``remote_ports`` how many are connections established to that port (0s once it is gone)."""
    inodes = _socket_inodes(pid)
    rows = _established()
    counts = {name: sum(1 for _, remote, inode in rows if remote == port and inode in inodes)
              for name, port in remote_ports.items()}
    try:
        counts["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        counts["fds"] = 0
    return counts


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _established() -> list[tuple[int, int, str]]:
    """(local port, remote port, inode) of every established TCP connection, IPv4 and IPv6."""
    rows: list[tuple[int, int, str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _ESTABLISHED:
                rows.append((int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[9]))
    return rows


def connections_from(port: int) -> int:
    """Established connections accepted on ``port`` (by whichever process listens there)."""
    return sum(1 for local, _, _ in _established() if local == port)
