"""Tracing: this process's tracer provider, and W3C trace context in from clients and out to
upstreams.

The provider is the gateway's own, not installed as OpenTelemetry's global one: several
gateways may start and stop in one process (tests), and nothing else in the process should
start tracing because the gateway does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.telemetry.config import TelemetryConfig
from proxy.telemetry.state import SWITCHES

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from proxy.telemetry.server_spans import ServerSpans

log = logging.getLogger("interlock.telemetry")

TRACER_NAME = "interlock"
_PROPAGATOR = TraceContextTextMapPropagator()
_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate"})


def new_provider(config: TelemetryConfig) -> tuple[TracerProvider, ServerSpans]:
    """A provider sampling as configured, exporting to ``otlp_endpoint`` when there is one, and
    the server spans it starts. The SDK's provider is imported here: a gateway without tracing
    never loads it."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from proxy.telemetry.server_spans import PrimedIds, ServerSpans

    root, ids = TraceIdRatioBased(config.sample_ratio), PrimedIds()
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}),
                              sampler=ParentBased(root), id_generator=ids)
    if config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint, headers=_export_headers(config.otlp_headers_env))
        # Exports from its own thread, in batches: ending a span only queues it.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, ServerSpans(provider.get_tracer(TRACER_NAME), ids, root)


def _export_headers(names: dict[str, str]) -> dict[str, str]:
    headers = {}
    for header, variable in names.items():
        value = os.environ.get(variable)
        if value:
            headers[header] = value
        else:
            log.warning("telemetry.otlp_headers_env: %s is not set; spans are exported without %s", variable, header)
    return headers


def remote_context(headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    """The client's trace context from ASGI request headers; ``None`` when it sent none."""
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers
               if name in _CONTEXT_HEADERS}
    return _PROPAGATOR.extract(carrier) if carrier else None


def with_trace_context(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` of an upstream call, with ``traceparent`` (and ``tracestate``) of the current
    span added while tracing is on; the same dict, untouched, otherwise."""
    if SWITCHES.tracer is None:
        return headers
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return headers
    # What the W3C propagator's ``inject`` writes, without its second lookup of the current span
    # and its comparison with the invalid context: through it, this call was over 40% of what
    # tracing costs a request whose trace is dropped (26 k of 62 k instructions).
    carrier = dict(headers)
    carrier["traceparent"] = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    if context.trace_state:
        carrier["tracestate"] = context.trace_state.to_header()
    return carrier


def mark_failed(span: Span, error_type: str, description: str | None = None) -> None:
    """The span ended in failure: ``error.type`` as the semantic conventions name it."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))
