"""``proxy.runtime.tune_gc``, in a process of its own (it changes the whole interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from proxy.runtime import GC_THRESHOLDS

_PROBE = """
import gc, json, weakref
from proxy.runtime import tune_gc
class Node: pass
cycle = Node()
cycle.self = cycle  # garbage left over from start-up
left_over = weakref.ref(cycle)
del cycle
before = gc.get_freeze_count()
tune_gc()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold(),
                  "left_over_freed": left_over() is None}))
"""


def test_tune_gc_freezes_the_start_up_heap_and_collects_less_often() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2], check=True)
    probe = json.loads(result.stdout)
    assert probe["before"] == 0
    assert probe["frozen"] > 1000, "imports and start-up objects move to the permanent generation"
    assert probe["left_over_freed"], "garbage is collected first, not frozen"
    assert tuple(probe["thresholds"]) == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700, "young collections less often than CPython's default"
