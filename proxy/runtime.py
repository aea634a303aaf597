"""Settings of a serving worker process, applied once its start-up is done: the garbage
collector's tuning, and stacks logged on SIGUSR1.

The cyclic garbage collector took 12-27% of a worker's CPU at saturation (py-spy): every request
allocates thousands of container objects (structs, dicts, frames), each counting towards the next
collection, and each full collection traverses everything imported and built at start-up, which
never becomes garbage. Reference counting frees almost all of a request's objects anyway.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import signal

log = logging.getLogger(__name__)

GC_THRESHOLDS = (10_000, 10, 10)
"""Allocations between young collections, and young (then middle) collections per older one.
CPython's 700 collects several times per request, each time traversing the objects of every
request in flight; measured, 10,000 costs about 2 MB of memory more and 50,000 gains little more."""


def tune_gc() -> None:
    """Move everything alive now into the collector's permanent generation, so no collection
    traverses it again, and collect less often (``GC_THRESHOLDS``). Call it once per serving
    worker, when the app has started (a Litestar ``on_startup`` hook) and before it serves
    requests: a frozen object that later becomes part of a garbage cycle is never collected, so
    freezing again after each reload would leak what the reload replaced."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def dump_stacks_on_signal() -> None:
    """On SIGUSR1, log what this worker is doing: every asyncio task's stack (from the running
    loop, between callbacks) and every thread's (written by ``faulthandler`` from the signal
    itself, so it comes even when the loop is blocked or already gone, at exit). For a worker
    that will not answer or will not stop; call it from the running loop, once per worker."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _log_task_stacks)
    # Chained: the thread dump first, then the handler above, which the signal module runs.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)


def _log_task_stacks() -> None:
    tasks = asyncio.all_tasks()
    stacks = [f"--- {task.get_name()}\n{_awaiting(task.get_coro())}" for task in tasks]
    log.warning("SIGUSR1: stacks of the %d asyncio tasks\n%s", len(tasks), "\n".join(stacks))


def _awaiting(awaitable: object) -> str:
    """Where a suspended coroutine waits, outermost frame first (``Task.get_stack`` shows only
    the outermost frame of a suspended task)."""
    lines = []
    while (frame := getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)) is not None:
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return "\n".join(lines)
