"""The ``clock`` tool: the current date and time in an IANA time zone."""

from __future__ import annotations

import datetime
import zoneinfo

SPEC = {
    "name": "clock",
    "description": "The current date, time and weekday in a time zone (IANA name, default UTC).",
    "kind": "python",
    "target": "tools.builtin.clock:now",
    "parameters": {
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "e.g. Europe/Paris", "default": "UTC"}},
        "additionalProperties": False,
    },
    "timeout_s": 5,
}


def now(timezone: str = "UTC") -> dict[str, str | int]:
    """The time now in ``timezone``; an unknown zone raises ZoneInfoNotFoundError."""
    moment = datetime.datetime.now(zoneinfo.ZoneInfo(timezone))
    return {
        "timezone": timezone,
        "iso": moment.isoformat(timespec="seconds"),
        "weekday": moment.strftime("%A"),
        "unix": int(moment.timestamp()),
    }
