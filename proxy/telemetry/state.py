"""What telemetry this process does now: read on the request path, set by ``Telemetry``.

One instance per process (the tracer provider and the metrics registry are per process too).
Each instrumentation point checks it first, so a switched-off signal costs an attribute read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from proxy.telemetry.server_spans import ServerSpans


class Switches:
    __slots__ = ("capture_content", "currency", "metrics", "provider", "server_spans", "tracer")

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        """Set while tracing is on; ``None``: no span is made anywhere."""
        self.provider: TracerProvider | None = None
        self.server_spans: ServerSpans | None = None
        """Set while tracing is on: starts each request's server span."""
        self.metrics = False
        self.capture_content = False
        self.currency = "USD"
        """The gateway's ``currency``, a label of the cost counter."""

    @property
    def active(self) -> bool:
        return self.tracer is not None or self.metrics


SWITCHES = Switches()
