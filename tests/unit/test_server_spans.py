"""Server spans: a trace the sampler drops is decided without the SDK, and every decision is
the one the provider's own sampler takes on the same trace id, so ``sample_ratio`` means what
it says and a client's sampling decision is followed; what an upstream call carries of the
span's context."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.telemetry import TelemetryConfig
from proxy.telemetry.server_spans import ServerSpans
from proxy.telemetry.state import SWITCHES
from proxy.telemetry.tracing import new_provider, with_trace_context

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Spans:
    def __init__(self, ratio: float) -> None:
        provider, self.server = new_provider(TelemetryConfig(tracing=True, sample_ratio=ratio))
        self.provider: TracerProvider = provider
        self.exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.asked = 0
        self.recording: list[bool] = []

    def start(self, headers: list[tuple[bytes, bytes]] | None = None) -> Span:
        def attributes() -> dict[str, str | int]:
            self.asked += 1
            return {"http.route": "/v1/responses"}

        span = self.server.start("POST /v1/responses", headers or [], attributes)
        self.recording.append(span.is_recording())
        span.end()
        return span

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


def _sdk_keeps(ratio: float, trace_id: int) -> bool:
    """What the SDK's own sampler says about a root with this trace id."""
    result = ParentBased(TraceIdRatioBased(ratio)).should_sample(None, trace_id, "POST /v1/responses")
    return result.decision.is_sampled()


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_a_root_span_is_kept_exactly_when_the_providers_sampler_would_keep_it(ratio: float) -> None:
    spans = Spans(ratio)
    started = [spans.start() for _ in range(4000)]
    for span, recording in zip(started, spans.recording, strict=True):
        context = span.get_span_context()
        assert context.is_valid and not context.is_remote and context.trace_flags.random_trace_id
        assert recording == context.trace_flags.sampled == _sdk_keeps(ratio, context.trace_id)
    recorded = [span for span in started if span.get_span_context().trace_flags.sampled]
    assert len(spans.finished()) == len(recorded) == spans.asked, "attributes are built for recorded spans only"
    assert {span.context.trace_id for span in spans.finished()} == {
        span.get_span_context().trace_id for span in recorded}
    share = len(recorded) / len(started)
    assert ratio - 0.04 <= share <= ratio + 0.04
    assert len({span.get_span_context().trace_id for span in started}) == len(started), "every trace id is new"


def test_a_kept_roots_trace_id_is_used_once() -> None:
    spans = Spans(1.0)
    first = spans.start()
    after = spans.provider.get_tracer("other").start_span("background")
    assert after.get_span_context().trace_id != first.get_span_context().trace_id


def test_a_clients_unsampled_trace_is_continued_without_recording() -> None:
    spans = Spans(1.0)  # the client's decision wins over the ratio
    span = spans.start([(b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00".encode()),
                        (b"tracestate", b"vendor=abc")])
    context = span.get_span_context()
    assert spans.recording == [False] and not context.trace_flags.sampled
    assert f"{context.trace_id:032x}" == CLIENT_TRACE and f"{context.span_id:016x}" != CLIENT_SPAN
    assert dict(context.trace_state) == {"vendor": "abc"}
    assert not spans.finished() and spans.asked == 0


def test_a_clients_sampled_trace_is_recorded_under_its_span() -> None:
    spans = Spans(0.0)  # the client's decision wins over the ratio
    spans.start([(b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode())])
    (finished,) = spans.finished()
    assert f"{finished.context.trace_id:032x}" == CLIENT_TRACE
    assert finished.parent is not None and f"{finished.parent.span_id:016x}" == CLIENT_SPAN
    assert finished.attributes == {"http.route": "/v1/responses"}


def test_a_malformed_traceparent_starts_a_new_trace_at_the_ratio() -> None:
    spans = Spans(1.0)
    assert isinstance(spans.server, ServerSpans)
    span = spans.start([(b"traceparent", b"00-not-a-trace-01")])
    assert spans.recording == [True] and f"{span.get_span_context().trace_id:032x}" != CLIENT_TRACE


@pytest.mark.parametrize("client", [
    [], [(b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00".encode()), (b"tracestate", b"vendor=abc,other=1")],
    [(b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()), (b"tracestate", b"vendor=abc")]],
    ids=["new trace", "client's unsampled trace with tracestate", "client's sampled trace with tracestate"])
@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_an_upstream_call_carries_what_the_w3c_propagator_writes(
        client: list[tuple[bytes, bytes]], ratio: float) -> None:
    """``with_trace_context`` writes ``traceparent`` (and ``tracestate``) itself; byte for byte
    what OpenTelemetry's W3C propagator injects for the same current span."""
    spans = Spans(ratio)
    SWITCHES.tracer = spans.provider.get_tracer("test")
    span = spans.server.start("POST /v1/responses", client, dict)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        expected = {"authorization": "Bearer x"}
        TraceContextTextMapPropagator().inject(expected)
        sent = with_trace_context({"authorization": "Bearer x"})
    finally:
        otel_context.detach(token)
        SWITCHES.tracer = None
        span.end()
    assert sent == expected and "traceparent" in sent
    assert ("tracestate" in sent) == bool(client)
