"""GenAI spans and metrics of model calls, following the OpenTelemetry GenAI semantic
conventions: a ``chat {model}`` CLIENT span per upstream attempt, and what a request used once
it settles (``tool_calls`` has the tool spans).

The hooks the engine and the gate call::

    upstream = observe_attempt(upstream, turn, candidate, request)   # Engine._attempts
    turn_settled(turn)                                                # Engine._settle
    usage_recorded(record)                                            # Gate.settle
    limit_refused(team, alias, reason)                                # Gate.admit

Each returns at once (``observe_attempt`` hands back the same generator) while telemetry is off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer

from policies.tiers import served_tier
from proxy.errors import GatewayError
from proxy.schema.deltas import Delta, Finish, ItemDone, ResponseInfo, UsageDelta
from proxy.telemetry import metrics
from proxy.telemetry.content import OutputCollector, input_messages, system_instructions
from proxy.telemetry.middleware import current_record
from proxy.telemetry.state import SWITCHES
from proxy.telemetry.tracing import mark_failed

if TYPE_CHECKING:
    from policies.limits import UsageRecord
    from policies.router import Candidate
    from proxy.engine import Turn
    from proxy.schema.response import Usage
    from proxy.schema.upstream import Deployment, UpstreamRequest

_PROVIDER_NAMES = {"openai_responses": "openai", "openai_chat": "openai", "anthropic": "anthropic",
                   "gemini": "gcp.gemini", "bedrock": "aws.bedrock", "cohere": "cohere", "ollama": "ollama"}
"""``gen_ai.provider.name`` by wire dialect: the conventions name the API flavour spoken, so
every Chat Completions host is ``openai``."""
_FINISH_REASONS = {"max_output_tokens": "length", "tool_calls": "tool_call"}
"""The gateway's finish reasons where the conventions have a word of their own."""
_NOT_OUTPUT = (ResponseInfo, UsageDelta, Finish, ItemDone)
"""Deltas that are not the model's output: they do not end the wait for a first token."""


def provider_name(deployment: Deployment) -> str:
    if deployment.dialect == "gemini" and deployment.options.get("platform") == "vertex":
        return "gcp.vertex_ai"
    return _PROVIDER_NAMES[deployment.dialect]


def observe_attempt(upstream: AsyncGenerator[Delta, None], turn: Turn, candidate: Candidate,
                    request: UpstreamRequest) -> AsyncGenerator[Delta, None]:
    """``upstream`` (one attempt's deltas, not started yet) inside the attempt's span, timed.
    The span is current while the request is sent, so ``traceparent`` names it upstream; it ends
    with the reply, a failure, or the consumer closing the generator."""
    if not SWITCHES.active:
        return upstream
    return _observed(upstream, _Attempt(turn, candidate, request))


async def _observed(upstream: AsyncGenerator[Delta, None], attempt: _Attempt) -> AsyncGenerator[Delta, None]:
    outcome, description = "ok", None
    try:
        with attempt.current():
            first = await anext(upstream, None)
        if first is None:
            outcome = "empty_reply"  # the engine raises the error when it sees the end
            return
        attempt.see(first)
        yield first
        async for delta in upstream:
            attempt.see(delta)
            yield delta
    except GatewayError as exc:
        outcome, description = exc.type, exc.message
        raise
    except (GeneratorExit, asyncio.CancelledError):
        outcome = "cancelled"
        raise
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        try:
            await upstream.aclose()  # the engine closes this generator: the upstream's is ours to close
        finally:
            attempt.end(outcome, description)


class _Attempt:
    """One upstream attempt as telemetry sees it: its span, its clock, what the deltas said."""

    __slots__ = ("alias", "answered", "candidate", "finish", "first_token_at", "output", "reported_model",
                 "reported_tier", "span", "started", "usage")

    def __init__(self, turn: Turn, candidate: Candidate, request: UpstreamRequest) -> None:
        self.alias = turn.model.alias
        self.candidate = candidate
        self.answered = False
        self.finish = "stop"
        self.first_token_at: float | None = None
        self.usage: Usage | None = None
        self.reported_model: str | None = None
        self.reported_tier: str | None = None
        tracer = SWITCHES.tracer
        self.span = None if tracer is None or _unsampled() else _attempt_span(tracer, turn, candidate, request)
        capture = self.span is not None and SWITCHES.capture_content and self.span.is_recording()
        self.output = OutputCollector() if capture else None
        self.started = time.perf_counter()

    def current(self) -> AbstractContextManager[object]:
        if self.span is None:
            return nullcontext()
        return trace.use_span(self.span, record_exception=False, set_status_on_exception=False)

    def see(self, delta: Delta) -> None:
        self.answered = True
        if isinstance(delta, _NOT_OUTPUT):
            if isinstance(delta, UsageDelta):
                self.usage = delta.usage
            elif isinstance(delta, Finish):
                self.finish = delta.reason
            elif isinstance(delta, ResponseInfo):
                if isinstance(delta.model, str):
                    self.reported_model = delta.model
                if isinstance(delta.service_tier, str):
                    self.reported_tier = delta.service_tier
        elif self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.output is not None:
            self.output.see(delta)

    def end(self, outcome: str, description: str | None) -> None:
        deployment = self.candidate.spec.name
        if SWITCHES.metrics:
            elapsed = time.perf_counter() - self.started
            metrics.labelled(metrics.UPSTREAM_DURATION, self.alias, deployment, outcome).observe(elapsed)
            if self.first_token_at is not None:
                first_token = self.first_token_at - self.started
                metrics.labelled(metrics.UPSTREAM_FIRST_TOKEN, self.alias, deployment).observe(first_token)
        span = self.span
        if span is None:
            return
        if self.answered:
            span.set_attributes(self._response_attributes())
        if outcome != "ok":
            mark_failed(span, outcome, description)
        span.end()

    def _response_attributes(self) -> dict[str, Any]:
        candidate = self.candidate
        # An upstream asked for no tier reports one of its own vocabulary, not ours (as the engine).
        reported = self.reported_tier if candidate.deployment.native_tier else None
        attributes: dict[str, Any] = {
            "gen_ai.response.finish_reasons": [_FINISH_REASONS.get(self.finish, self.finish)],
            "interlock.service_tier.served": served_tier(candidate.spec, candidate.tier, reported),
        }
        if self.reported_model is not None:
            attributes["gen_ai.response.model"] = self.reported_model
        if self.first_token_at is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = self.first_token_at - self.started
        usage = self.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.input_tokens_details.cached_tokens
            attributes["gen_ai.usage.reasoning.output_tokens"] = usage.output_tokens_details.reasoning_tokens
        if self.output is not None:
            attributes["gen_ai.output.messages"] = self.output.messages(attributes["gen_ai.response.finish_reasons"][0])
        return attributes


def _unsampled() -> bool:
    """The request's trace is not sampled: an attempt span under it would not be either (the
    sampler follows the parent), so none is made and ``traceparent`` names the server span. Most
    requests at a low sample ratio; building and ending the span cost more than the rest of the
    attempt's telemetry."""
    record = current_record()
    # The request's server span is the current one here (an attempt span is current only while
    # its request is sent) and one context variable away, where OpenTelemetry's lookup of the
    # current span is four calls and an ABC check.
    span = record.span if record is not None and record.span is not None else trace.get_current_span()
    parent = span.get_span_context()
    return parent.is_valid and not parent.trace_flags.sampled


def _attempt_span(tracer: Tracer, turn: Turn, candidate: Candidate, request: UpstreamRequest) -> Span:
    spec, deployment, body = candidate.spec, candidate.deployment, request.body
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(deployment),
        "gen_ai.request.model": spec.model,
        "interlock.model": turn.model.alias,
        "interlock.deployment": spec.name,
        "interlock.provider": spec.provider,
        "interlock.team": turn.principal.team,
        "interlock.attempt": turn.attempts,
        "interlock.service_tier.requested": candidate.tier,
    }
    url = urlsplit(deployment.base_url)
    if url.hostname:
        attributes["server.address"] = url.hostname
        attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    for name, value in (("gen_ai.request.max_tokens", body.max_output_tokens),
                        ("gen_ai.request.temperature", body.temperature), ("gen_ai.request.top_p", body.top_p)):
        if isinstance(value, int | float):
            attributes[name] = value
    span = tracer.start_span(f"chat {spec.model}", kind=SpanKind.CLIENT, attributes=attributes)
    if SWITCHES.capture_content and span.is_recording():
        span.set_attribute("gen_ai.input.messages", input_messages(request.items))
        if request.instructions:
            span.set_attribute("gen_ai.system_instructions", system_instructions(request.instructions))
    return span


def turn_settled(turn: Turn) -> None:
    """The response ended (any way): the gateway's overhead, and where it went on the request's
    server span."""
    if not SWITCHES.active:
        return
    candidate = turn.candidate
    if SWITCHES.metrics and candidate is not None:
        metrics.labelled(metrics.OVERHEAD, turn.model.alias).observe(turn.overhead_s)
    record = current_record()
    span = record.span if record is not None else None
    if span is None or not span.is_recording():  # a detached (background) turn outlives its request's span
        return
    resource = turn.resource
    attributes: dict[str, Any] = {"interlock.response_id": resource.id, "interlock.response.status": resource.status,
                                  "interlock.attempts": turn.attempts, "interlock.overhead_ms": turn.overhead_s * 1000}
    if candidate is not None:
        attributes["interlock.deployment"] = candidate.spec.name
    asked = turn.request.body.service_tier
    if isinstance(asked, str):
        attributes["interlock.service_tier.requested"] = asked
    if isinstance(resource.service_tier, str):
        attributes["interlock.service_tier.served"] = resource.service_tier
    usage = resource.usage
    if usage is not None:
        attributes["interlock.usage.input_tokens"] = usage.input_tokens
        attributes["interlock.usage.output_tokens"] = usage.output_tokens
    span.set_attributes(attributes)


def usage_recorded(record: UsageRecord) -> None:
    """A response's usage record was made: tokens and cost by team, model and tier served."""
    if not SWITCHES.metrics:
        return
    team, model, tier = record.team, record.model, record.tier
    metrics.labelled(metrics.TOKENS, team, model, tier, "input").inc(record.input_tokens)
    metrics.labelled(metrics.TOKENS, team, model, tier, "cached_input").inc(record.cached_tokens)
    metrics.labelled(metrics.TOKENS, team, model, tier, "output").inc(record.output_tokens)
    metrics.labelled(metrics.COST, team, model, tier, SWITCHES.currency).inc(record.cost)


def limit_refused(team: str, alias: str, reason: str) -> None:
    """A rate limit or budget refused the request (``reason``: the error's code)."""
    if SWITCHES.metrics:
        metrics.labelled(metrics.LIMIT_REJECTIONS, team, alias, reason).inc()
