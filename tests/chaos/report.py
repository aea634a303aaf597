"""The closing table of a run, for a terminal or a markdown file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_COLUMNS = (("fault", "fault"), ("sent", "sent"), ("completed", "completed"),
            ("failed", "failed as documented"), ("aborted", "aborted by client"), ("killed", "cut by SIGKILL"),
            ("lost", "lost"), ("malformed", "malformed"), ("p99_ms", "p99 ms"))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for _, title in _COLUMNS) + " |",
             "| --- |" + " ---: |" * (len(_COLUMNS) - 1)]
    for row in rows:
        cells = [_cell(row.get(key)) for key, _ in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}"
    return str(value)


def samples_table(samples: Sequence[dict[str, Any]]) -> str:
    """A soak's readings: per replica, resident MB / descriptors (of which connections to Redis,
    to the upstream) / asyncio tasks."""
    if not samples:
        return ""
    names = list(samples[0]["replicas"])
    lines = ["| t (s) | " + " | ".join(f"{name}: RSS MB / fds (Redis, upstream) / tasks" for name in names) + " |",
             "| ---: |" + " ---: |" * len(names)]
    for sample in samples:
        cells = [_reading(sample["replicas"].get(name)) for name in names]
        lines.append(f"| {sample['t']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _reading(reading: dict[str, Any] | None) -> str:
    if reading is None:
        return "-"
    return (f"{reading['rss_mb']:.1f} / {reading['fds']} ({reading['redis_connections']}, "
            f"{reading['upstream_connections']}) / {reading['tasks']}")


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
