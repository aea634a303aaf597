"""Server-side function tools: which of a request's tools the gateway runs itself, and running
one model turn's calls in the sandbox.

The rule (also in docs/tools.md): a request's ``function`` tool whose name is a tool registered
with the gateway, and allowed to the caller's team, is a server-side tool. The model sees the
registered description and schema, whatever the request said, so a request may enable one by
naming it alone (``{"type": "function", "name": "calculator"}``). Other function tools go back to
the client as ``function_call`` items.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp
from msgspec import Struct

from proxy.ids import new_id
from proxy.schema.items import FunctionCall, FunctionCallOutput
from proxy.schema.request import FunctionTool, Tool
from proxy.telemetry import observe_tool
from tools import ToolRegistry, ToolSpec, run_tool


class ToolLoopConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    max_parallel: int = 4
    """Server-side calls of one model turn run at once, at most this many."""
    max_tool_calls: int = 16
    """Ceiling on server-side calls per response; a request's ``max_tool_calls`` may only lower it."""
    deadline_s: float = 300.0
    """The whole loop, model turns and tools, ends by then; the response is then incomplete."""


def server_tools(tools: Sequence[Tool], registry: ToolRegistry, allowed: Callable[[str], bool]) -> tuple[
        list[Tool], dict[str, ToolSpec]]:
    """The tools as the model sees them, and the server-side ones among them by name;
    ``allowed(name)``: whether the caller's policy lets the gateway run that tool."""
    chosen: dict[str, ToolSpec] = {}
    seen: list[Tool] = []
    for tool in tools:
        spec = registry.get(tool.name) if isinstance(tool, FunctionTool) else None
        if spec is None or not allowed(spec.name):
            seen.append(tool)
            continue
        chosen[spec.name] = spec
        seen.append(FunctionTool(name=spec.name, description=spec.description, parameters=spec.parameters))
    return seen, chosen


async def run_calls(calls: Sequence[FunctionCall], specs: dict[str, ToolSpec], *, config: ToolLoopConfig,
                    deadline: float, session: aiohttp.ClientSession) -> list[FunctionCallOutput]:
    """Run one turn's server-side calls, at most ``max_parallel`` at once; outputs in call order.
    A failing tool is an output telling the model what went wrong, never an exception."""
    gate = asyncio.Semaphore(max(config.max_parallel, 1))

    async def one(call: FunctionCall) -> FunctionCallOutput:
        async with gate:
            result = await observe_tool(call, run_tool(specs[call.name], call.arguments, deadline=deadline,
                                                       session=session))
        return FunctionCallOutput(id=new_id("fco"), call_id=call.call_id, output=result.text, status="completed")

    return list(await asyncio.gather(*(one(call) for call in calls)))


def loop_deadline(config: ToolLoopConfig) -> float:
    return time.monotonic() + config.deadline_s


