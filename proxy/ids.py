"""Identifiers the gateway mints, prefixed like OpenAI's so clients recognise them."""

from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"
