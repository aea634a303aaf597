"""Request shapes of real clients, for ``--shapes``: what the gateway costs beside the pass-through
as requests grow from the harness's short input to what chat SDKs and coding agents send.

* ``short``: the input every other measurement sends (``SHORT_INPUT``);
* ``conversation``: 50 messages without ``type``, as the openai SDK, LangChain and the Agents SDK
  send a chat history;
* ``codex``: the last request of a captured Codex session (``fixtures/clients`` of the shared
  folder; left out when the folder is not there): 40 KB, items of types outside the core and ten
  tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.targets import SHORT_INPUT

CODEX_CAPTURE = Path("fixtures/clients/codex-apply-patch-resume.jsonl")
CONVERSATION_MESSAGES = 50
_DROPPED = ("model", "stream", "store", "client_metadata")
"""Set per run (``model``, ``stream``, ``store``), or Codex's own bookkeeping."""


@dataclass(frozen=True)
class Shape:
    key: str
    label: str
    fields: dict[str, Any]
    """The create body without ``model``, ``stream`` and ``store``."""

    def bodies(self, model: str) -> dict[str, bytes]:
        """``json`` and ``stream`` request bodies, as ``Target.bodies`` takes them."""
        base = {"model": model, **self.fields, "store": False}
        return {"json": json.dumps(base).encode(), "stream": json.dumps({**base, "stream": True}).encode()}


def request_shapes(shared: Path) -> list[Shape]:
    """The shapes to measure; ``codex`` only where ``shared`` holds the capture."""
    conversation = [{"role": "user" if turn % 2 == 0 else "assistant",
                     "content": f"Message {turn} of a conversation, a sentence or so long."}
                    for turn in range(CONVERSATION_MESSAGES)]
    shapes = [Shape("short", f"short input ({len(SHORT_INPUT)} characters)", {"input": SHORT_INPUT}),
              Shape("conversation", f"{CONVERSATION_MESSAGES} messages without a type (chat SDKs)",
                    {"input": conversation})]
    capture = shared / CODEX_CAPTURE
    if capture.is_file():
        fields = _last_create_body(capture)
        if fields is not None:
            shapes.append(Shape("codex", f"a captured Codex request ({len(fields['input'])} items, "
                                         f"{len(fields.get('tools') or [])} tools)", fields))
    return shapes


def _last_create_body(capture: Path) -> dict[str, Any] | None:
    """The last ``POST .../responses`` body of a capture (one JSON record a line) with a list input,
    less the fields a run sets itself."""
    found = None
    for line in capture.read_text().splitlines():
        record = json.loads(line)
        body = record.get("body")
        if isinstance(body, str):
            body = json.loads(body)
        if record.get("method") == "POST" and isinstance(body, dict) and isinstance(body.get("input"), list):
            found = body
    if found is None:
        return None
    return {name: value for name, value in found.items() if name not in _DROPPED}
