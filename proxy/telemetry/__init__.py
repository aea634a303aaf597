"""Telemetry: OpenTelemetry traces (GenAI conventions), Prometheus metrics, JSON logs.

Public API (import from ``proxy.telemetry``)::

    class TelemetryConfig(msgspec.Struct)       # the gateway file's ``telemetry`` section
    class Telemetry                             # Telemetry.start(settings, circuits=, upstreams=); await .close()
    def active_provider() -> TracerProvider | None
    def telemetry_middleware(config) -> list    # ASGI middleware: server span, request metrics, streams
    def bind_request_id(request_id)             # the request's logs carry it
    def configure_logging(level, fmt) / log_config(level, fmt) -> dict
    def exposition() -> bytes                   # the Prometheus text for GET /metrics
    def with_trace_context(headers) -> headers  # traceparent for an upstream call
    # hooks of the request path (each returns at once while telemetry is off)
    def note_caller(team) / note_model(alias)
    def observe_attempt(upstream, turn, candidate, request) -> upstream
    async def observe_tool(call, running) -> ToolResult
    def turn_settled(turn) / usage_recorded(record) / limit_refused(team, alias, reason)

docs/observability.md has the span tree, the attributes, the metric names and the log format.
The exports load on first use: ``proxy.settings`` imports the config from here, and the rest
imports the settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.telemetry.config import TelemetryConfig
    from proxy.telemetry.genai import limit_refused, observe_attempt, turn_settled, usage_recorded
    from proxy.telemetry.logs import bind_request_id, configure_logging, log_config
    from proxy.telemetry.metrics import CONTENT_TYPE, exposition
    from proxy.telemetry.middleware import note_caller, note_model, telemetry_middleware
    from proxy.telemetry.setup import Telemetry, active_provider
    from proxy.telemetry.tool_calls import observe_tool
    from proxy.telemetry.tracing import with_trace_context

__all__ = [
    "CONTENT_TYPE",
    "Telemetry",
    "TelemetryConfig",
    "active_provider",
    "bind_request_id",
    "configure_logging",
    "exposition",
    "limit_refused",
    "log_config",
    "note_caller",
    "note_model",
    "observe_attempt",
    "observe_tool",
    "telemetry_middleware",
    "turn_settled",
    "usage_recorded",
    "with_trace_context",
]

_HOME = {
    "TelemetryConfig": "config",
    "limit_refused": "genai",
    "observe_attempt": "genai",
    "observe_tool": "tool_calls",
    "turn_settled": "genai",
    "usage_recorded": "genai",
    "configure_logging": "logs",
    "log_config": "logs",
    "bind_request_id": "logs",
    "CONTENT_TYPE": "metrics",
    "exposition": "metrics",
    "note_caller": "middleware",
    "note_model": "middleware",
    "telemetry_middleware": "middleware",
    "Telemetry": "setup",
    "active_provider": "setup",
    "with_trace_context": "tracing",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'proxy.telemetry' has no attribute {name!r}")
    return getattr(importlib.import_module(f"proxy.telemetry.{home}"), name)
