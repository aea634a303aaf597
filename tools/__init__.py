"""Server-side tools: a registry from configuration, and a sandbox that runs one call.

Public API (import from ``tools``)::

    class ToolSpec(msgspec.Struct)          # one entry of the gateway YAML's ``tools:`` list
    class ToolRegistry:
        def __init__(self, specs: Iterable[ToolSpec]) -> None   # ToolConfigError on duplicates
        def get(self, name: str) -> ToolSpec | None
        __contains__, __iter__ (the specs), __len__
    def parse_arguments(spec: ToolSpec, arguments: str) -> dict[str, Any]   # ToolArgumentsError
    async def run_tool(spec: ToolSpec, arguments: str, *, deadline: float | None = None,
                       isolation: Isolation | None = None,
                       session: aiohttp.ClientSession | None = None) -> ToolResult
    class ToolResult(msgspec.Struct)        # output, error, exit_code, signal, timed_out,
                                            # duration_ms, isolation; .text for the model
    def isolation_report() -> IsolationReport   # probes once; call at start-up
    class FetchPolicy(msgspec.Struct)       # the gateway YAML's ``fetch_policy``: non-public networks allowed
    def guarded_session(policy) -> aiohttp.ClientSession   # pass as run_tool's session (tools/netguard.py)
    Isolation = Literal["namespaces", "rlimits"]

How the engine uses it:

* Settings: ``tools: list[ToolSpec] = []``; a bad entry fails the decode with its path, e.g.
  ``$.tools[2].target``. Build ``ToolRegistry(settings.tools)`` at start-up (duplicate names
  raise ``ToolConfigError`` naming ``tools[i].name``) and call ``isolation_report()`` once: it
  blocks for about a tenth of a second and logs a loud warning when only rlimits work.
* What the model sees for a registered tool: ``FunctionTool(name=spec.name,
  description=spec.description, parameters=spec.parameters)``.
* Per server-side ``function_call``: ``result = await run_tool(spec, call.arguments,
  deadline=request_deadline, session=worker_http_session)`` (``deadline`` is a
  ``time.monotonic()`` instant) and ``function_call_output(call_id, output=result.text)``.
  ``run_tool`` checks the arguments against the schema itself and never raises for a tool
  failure (bad arguments, exception, exit status, timeout, oversize output, limits): those come
  back in ``result.error``, written for the model. Cancelling the task (client disconnect) kills
  the sandbox's whole process group and re-raises ``CancelledError``.
* Calls are independent processes: run a turn's calls with ``asyncio.gather`` under a semaphore.

The exports load on first use, so a python tool importing ``tools.builtin.*`` inside the sandbox
does not pull the gateway's dependencies into every call. docs/tools.md has the configuration
format and each isolation mode's guarantees.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing would cost every python tool call ~10 ms (type
# checkers treat any constant of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tools.isolation import Isolation, IsolationReport, isolation_report
    from tools.netguard import FetchPolicy, guarded_session
    from tools.registry import ToolArgumentsError, ToolConfigError, ToolKind, ToolRegistry, ToolSpec, parse_arguments
    from tools.sandbox import ToolResult, run_tool

__all__ = [
    "FetchPolicy",
    "Isolation",
    "IsolationReport",
    "ToolArgumentsError",
    "ToolConfigError",
    "ToolKind",
    "ToolRegistry",
    "ToolResult",
    "ToolSpec",
    "guarded_session",
    "isolation_report",
    "parse_arguments",
    "run_tool",
]

_HOME = {
    "Isolation": "tools.isolation",
    "IsolationReport": "tools.isolation",
    "isolation_report": "tools.isolation",
    "FetchPolicy": "tools.netguard",
    "guarded_session": "tools.netguard",
    "ToolArgumentsError": "tools.registry",
    "ToolConfigError": "tools.registry",
    "ToolKind": "tools.registry",
    "ToolRegistry": "tools.registry",
    "ToolSpec": "tools.registry",
    "parse_arguments": "tools.registry",
    "ToolResult": "tools.sandbox",
    "run_tool": "tools.sandbox",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'tools' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
