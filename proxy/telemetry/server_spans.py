"""``ServerSpans``: each request's server span, cheap when its trace is dropped.

Imported only where tracing is on: it loads the tracing SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, Tracer, TraceState
from opentelemetry.util.types import AttributeValue

from proxy.telemetry.tracing import remote_context


class ServerSpans:
    """Starts each request's server span.

    At a low ``sample_ratio`` most traces are dropped, and the SDK's way to a dropped server span
    (sampler call, attribute dict, links, span limits) was over a third of what tracing cost an
    unsampled request (44 k of 119 k instructions). So the root decision the provider's sampler
    would take is taken here first, on a trace id drawn from the provider's own generator: a
    dropped trace gets the same non-recording span the SDK would make; a kept one goes to the SDK
    with that id primed, so the sampler meets the same id and keeps it. A client's unsampled
    ``traceparent`` is followed the same way; anything else (a sampled or malformed parent) goes
    to the SDK as it is. Priming and use happen in one synchronous call on the event loop's
    thread, the only one that starts spans."""

    def __init__(self, tracer: Tracer, ids: PrimedIds, root: TraceIdRatioBased) -> None:
        self._tracer = tracer
        self._ids = ids
        self._bound = root.bound
        """``TraceIdRatioBased``'s rule: a root is kept when its id's low 64 bits are below this."""

    def start(self, name: str, headers: Iterable[tuple[bytes, bytes]],
              attributes: Callable[[], dict[str, AttributeValue]]) -> Span:
        """The span of a request with these ASGI headers; ``attributes`` are asked for only when
        the span records."""
        parent = remote_context(headers)
        if parent is None:
            trace_id = self._ids.generate_trace_id()
            if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT >= self._bound:
                return self._dropped(trace_id, random=True, trace_state=None)
            self._ids.primed = trace_id
        else:
            remote = trace.get_current_span(parent).get_span_context()
            if remote.is_valid and not remote.trace_flags.sampled:  # ParentBased follows it: dropped
                return self._dropped(remote.trace_id, random=remote.trace_flags.random_trace_id,
                                     trace_state=remote.trace_state)
        try:
            return self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes())
        finally:
            self._ids.primed = None

    def _dropped(self, trace_id: int, *, random: bool, trace_state: TraceState | None) -> Span:
        """The span the SDK makes for a dropped trace: its flags say whether the trace id is
        random (W3C level 2), as the SDK's do."""
        flags = TraceFlags(TraceFlags.RANDOM_TRACE_ID if random else TraceFlags.DEFAULT)
        return NonRecordingSpan(SpanContext(trace_id, self._ids.generate_span_id(), is_remote=False,
                                            trace_flags=flags, trace_state=trace_state))


class PrimedIds(RandomIdGenerator):
    """Random ids, except that the next trace id may be set beforehand (``ServerSpans``)."""

    def __init__(self) -> None:
        self.primed: int | None = None

    def generate_trace_id(self) -> int:
        primed, self.primed = self.primed, None
        return super().generate_trace_id() if primed is None else primed
