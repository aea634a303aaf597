"""The ``telemetry`` section of the gateway file."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct


class TelemetryConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    service_name: str = "interlock"
    """``service.name`` of every span (the resource), as trace backends group them."""
    tracing: bool = False
    """Make OpenTelemetry spans (server, upstream attempts, tools) and send ``traceparent``
    upstream. Off: no tracer provider exists and no span is made."""
    otlp_endpoint: str | None = None
    """Where spans are POSTed as OTLP/HTTP protobuf, e.g. ``http://collector:4318/v1/traces``.
    Unset: spans are made (their trace ids reach logs and upstreams) but not exported."""
    otlp_headers_env: dict[str, str] = msgspec.field(default_factory=dict)
    """Headers of the export request, each read from the environment variable named here
    (``{Authorization: OTLP_AUTH}``), so credentials stay out of the file."""
    sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0
    """Share of traces kept when the client sent no sampled ``traceparent``; a client's own
    sampling decision is always followed."""
    capture_content: bool = False
    """Record prompts, completions and tool arguments and results on spans
    (``gen_ai.input.messages`` ...). Off: no content reaches a span."""
    metrics: bool = True
    """Count requests, upstream calls, tokens, cost and tools for ``GET /metrics``."""
    metrics_public: bool = True
    """``GET /metrics`` without a key, as scrapers usually call it; false: an ``admin_keys``
    key is required (``Authorization: Bearer ...``)."""
