"""The ASGI middleware around each routed request: its server span, its count and duration,
open streams, and the request's own record (``RequestRecord``) that deeper code fills in.

Registered after ``request_id_middleware`` (so the request id is bound), and only when the
configuration turns tracing or metrics on: otherwise requests never pass through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import cast

from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from proxy.telemetry import metrics
from proxy.telemetry.config import TelemetryConfig
from proxy.telemetry.logs import current_request_id
from proxy.telemetry.state import SWITCHES
from proxy.telemetry.tracing import mark_failed

_EVENT_STREAM = b"text/event-stream"


class RequestRecord:
    """What one request learns about itself on the way: filled by ``note_caller`` and
    ``note_model``, the span enriched by the engine's hooks."""

    __slots__ = ("model", "span", "team")

    def __init__(self, span: Span | None) -> None:
        self.team = ""
        self.model = ""
        self.span = span


_RECORD: ContextVar[RequestRecord | None] = ContextVar("interlock_request_record", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request running in this context (``None`` outside one, or when
    telemetry is off)."""
    return _RECORD.get()


def note_caller(team: str) -> None:
    """The request was authenticated as ``team``."""
    record = _RECORD.get()
    if record is not None:
        record.team = team


def note_model(alias: str) -> None:
    """The request was routed for the catalogue's ``alias``."""
    record = _RECORD.get()
    if record is not None:
        record.model = alias


def telemetry_middleware(config: TelemetryConfig) -> list[Callable[[ASGIApp], ASGIApp]]:
    """The middleware to register after ``request_id_middleware``: none when ``config`` turns
    tracing and metrics off."""
    return [_observe_requests] if config.tracing or config.metrics else []


def _observe_requests(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _http(app, cast(HTTPScope, scope), receive, send)
        elif scope["type"] == "websocket" and SWITCHES.metrics:
            streams = metrics.labelled(metrics.OPEN_STREAMS, "websocket")
            streams.inc()
            try:
                await app(scope, receive, send)
            finally:
                streams.dec()
        else:
            await app(scope, receive, send)

    return middleware


async def _http(app: ASGIApp, scope: HTTPScope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    method = scope["method"]
    route = scope["path_template"]  # routed already: a template, never a client's path
    server_spans = SWITCHES.server_spans
    span = None
    if server_spans is not None:
        span = server_spans.start(f"{method} {route}", scope["headers"], lambda: {
            "http.request.method": method, "http.route": route, "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http")})
    record = RequestRecord(span)
    record_token = _RECORD.set(record)
    span_token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None
    status = 500
    streaming = False
    failure: str | None = None

    async def observed_send(message: Message) -> None:
        nonlocal status, streaming
        if message["type"] == "http.response.start":
            status = message["status"]
            streaming = any(name == b"content-type" and value.startswith(_EVENT_STREAM)
                            for name, value in message.get("headers", ()))
            if streaming and SWITCHES.metrics:
                metrics.labelled(metrics.OPEN_STREAMS, "sse").inc()
        await send(message)

    try:
        await app(scope, receive, observed_send)
    except BaseException as exc:
        failure = type(exc).__qualname__
        raise
    finally:
        if streaming and SWITCHES.metrics:
            metrics.labelled(metrics.OPEN_STREAMS, "sse").dec()
        if SWITCHES.metrics:
            labels = (route, method, str(status), record.team, record.model)
            metrics.labelled(metrics.REQUESTS, *labels).inc()
            metrics.labelled(metrics.REQUEST_DURATION, *labels).observe(time.perf_counter() - started)
        if span is not None and span.is_recording():
            _end_server_span(span, record, status, failure)
        if span_token is not None:
            otel_context.detach(span_token)
        _RECORD.reset(record_token)


def _end_server_span(span: Span, record: RequestRecord, status: int, failure: str | None) -> None:
    span.set_attribute("http.response.status_code", status)
    request_id = current_request_id()
    if request_id is not None:
        span.set_attribute("interlock.request_id", request_id)
    if record.team:
        span.set_attribute("interlock.team", record.team)
    if record.model:
        span.set_attribute("interlock.model", record.model)
    if failure is not None:
        mark_failed(span, failure)
    elif status >= 500:  # a server span's 4xx is the client's error, not the span's (HTTP conventions)
        mark_failed(span, str(status))
    span.end()
