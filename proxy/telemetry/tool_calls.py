"""The ``execute_tool {name}`` span (GenAI conventions) and the metrics of each server-side
tool call::

    result = await observe_tool(call, run_tool(...))   # tool_loop.run_calls

Apart from ``genai`` because the tool loop is imported with the settings, before the policies.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from opentelemetry.trace import Span, SpanKind

from proxy.telemetry import metrics
from proxy.telemetry.state import SWITCHES
from proxy.telemetry.tracing import mark_failed

if TYPE_CHECKING:
    from proxy.schema.items import FunctionCall
    from tools import ToolResult


async def observe_tool(call: FunctionCall, running: Awaitable[ToolResult]) -> ToolResult:
    """``running`` (one server-side call, not awaited yet) inside its span, counted and timed."""
    if not SWITCHES.active:
        return await running
    tracer = SWITCHES.tracer
    span = None
    if tracer is not None:
        span = tracer.start_span(f"execute_tool {call.name}", kind=SpanKind.INTERNAL, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.call_id, "gen_ai.tool.type": "function"})
    started = time.perf_counter()
    result: ToolResult | None = None
    outcome = "cancelled"
    try:
        result = await running
        outcome = tool_outcome(result)
        return result
    finally:
        if SWITCHES.metrics:
            metrics.labelled(metrics.TOOL_EXECUTIONS, call.name, outcome).inc()
            metrics.labelled(metrics.TOOL_DURATION, call.name).observe(time.perf_counter() - started)
        if span is not None:
            _end_tool_span(span, call, result, outcome)


def tool_outcome(result: ToolResult) -> str:
    """ok, timeout, sandbox_failure (the gateway's fault) or error (the tool's)."""
    if result.error is None:
        return "ok"
    if result.timed_out:
        return "timeout"
    return "sandbox_failure" if result.sandbox_failed else "error"


def _end_tool_span(span: Span, call: FunctionCall, result: ToolResult | None, outcome: str) -> None:
    span.set_attribute("interlock.tool.outcome", outcome)
    if result is not None:
        if result.isolation is not None:
            span.set_attribute("interlock.tool.isolation", result.isolation)
        if result.exit_code is not None:
            span.set_attribute("interlock.tool.exit_code", result.exit_code)
        if result.signal is not None:
            span.set_attribute("interlock.tool.signal", result.signal)
        if SWITCHES.capture_content and span.is_recording():
            span.set_attribute("gen_ai.tool.call.arguments", call.arguments)
            span.set_attribute("gen_ai.tool.call.result", result.text)
    if outcome != "ok":
        mark_failed(span, outcome)
    span.end()
