"""Telemetry switched off costs nothing on the request path; the pieces that need no running
gateway: provider names, tool outcomes, metrics across worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncGenerator
from pathlib import Path

import msgspec
import pytest

from proxy.schema.deltas import Delta, TextDelta
from proxy.schema.items import FunctionCall
from proxy.schema.upstream import Deployment
from proxy.telemetry import TelemetryConfig, observe_attempt, observe_tool, telemetry_middleware, with_trace_context
from proxy.telemetry.genai import provider_name
from proxy.telemetry.state import SWITCHES
from proxy.telemetry.tool_calls import tool_outcome
from tools import ToolResult
from tools.sandbox import _GATEWAY_FAULT


def test_with_telemetry_off_the_hooks_hand_back_what_they_got() -> None:
    assert not SWITCHES.active

    async def upstream() -> AsyncGenerator[Delta, None]:
        yield TextDelta(key=0, text="hi")

    generator = upstream()
    assert observe_attempt(generator, None, None, None) is generator  # type: ignore[arg-type]
    headers = {"Authorization": "Bearer x"}
    assert with_trace_context(headers) is headers


async def test_with_telemetry_off_a_tool_call_is_awaited_as_is() -> None:
    result = ToolResult(output="42")

    async def run() -> ToolResult:
        return result

    assert await observe_tool(FunctionCall(call_id="c", name="calculator", arguments="{}"), run()) is result


@pytest.mark.parametrize(("tracing", "metrics", "registered"),
                         [(False, False, 0), (True, False, 1), (False, True, 1), (True, True, 1)])
def test_the_middleware_is_registered_only_when_something_is_on(tracing: bool, metrics: bool, registered: int) -> None:
    assert len(telemetry_middleware(TelemetryConfig(tracing=tracing, metrics=metrics))) == registered


def test_a_gateway_without_tracing_never_loads_the_tracing_sdk() -> None:
    """(The Redis client loads the metrics SDK for its own use; the tracing SDK and exporter are
    the gateway's.)"""
    script = ("import sys\n"
              "from policies.circuit import CircuitBoard\n"
              "from proxy.app import create_app\n"
              "from proxy.settings import Settings\n"
              "from proxy.telemetry import Telemetry, active_provider\n"
              "settings = Settings()\n"
              "create_app(settings)\n"
              "Telemetry.start(settings, circuits=CircuitBoard(failures=1, cooldown_s=1), upstreams=tuple)\n"
              "assert active_provider() is None\n"
              "print(sorted(name for name in sys.modules\n"
              "             if name.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(("dialect", "options", "expected"), [
    ("openai_responses", {}, "openai"), ("openai_chat", {}, "openai"), ("anthropic", {}, "anthropic"),
    ("gemini", {}, "gcp.gemini"), ("gemini", {"platform": "vertex"}, "gcp.vertex_ai"),
    ("bedrock", {}, "aws.bedrock"), ("cohere", {}, "cohere"), ("ollama", {}, "ollama")])
def test_provider_names_follow_the_conventions(dialect: str, options: dict[str, str], expected: str) -> None:
    deployment = msgspec.convert({"name": "d", "provider": "p", "dialect": dialect, "base_url": "http://h",
                                  "model": "m", "options": options}, Deployment)
    assert provider_name(deployment) == expected


@pytest.mark.parametrize(("result", "outcome"), [
    (ToolResult(output="4"), "ok"),
    (ToolResult(error="The tool raised ZeroDivisionError", exit_code=0), "error"),
    (ToolResult(error="The tool did not finish within 1 s and was stopped.", timed_out=True), "timeout"),
    (ToolResult(error=_GATEWAY_FAULT), "sandbox_failure"),
])
def test_tool_outcomes(result: ToolResult, outcome: str) -> None:
    assert tool_outcome(result) == outcome


def test_metrics_of_every_worker_are_added_up(tmp_path: Path) -> None:
    """``PROMETHEUS_MULTIPROC_DIR``: each worker process writes there, any worker's scrape sums."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = ("from proxy.telemetry import metrics\n"
             "metrics.REQUESTS.labels('/v1/responses', 'POST', '200', 'team-a', 'sim').inc()\n"
             "metrics.OPEN_STREAMS.labels('sse').inc()\n"
             "metrics.process_exited()\n")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=environment, timeout=60, check=True)
    scrape = "from proxy.telemetry import exposition\nprint(exposition().decode())\n"
    done = subprocess.run([sys.executable, "-c", scrape], env=environment, capture_output=True, text=True,
                          timeout=60, check=True)
    assert ('interlock_requests_total{method="POST",model="sim",route="/v1/responses",status="200",team="team-a"} 2.0'
            in done.stdout)
    assert 'interlock_open_streams{transport="sse"}' not in done.stdout, "exited workers' streams are not open"


def test_labelled_children_are_the_metrics_own_and_looked_up_once() -> None:
    from proxy.telemetry import metrics

    child = metrics.labelled(metrics.TOOL_EXECUTIONS, "labelled-probe", "ok")
    assert child is metrics.labelled(metrics.TOOL_EXECUTIONS, "labelled-probe", "ok")
    assert child is metrics.TOOL_EXECUTIONS.labels("labelled-probe", "ok")
    series = 'interlock_tool_executions_total{outcome="ok",tool="labelled-probe"} '
    before = _scraped(metrics.exposition().decode(), series)
    metrics.labelled(metrics.TOOL_EXECUTIONS, "labelled-probe", "ok").inc()
    assert _scraped(metrics.exposition().decode(), series) == before + 1
    assert metrics.labelled(metrics.TOOL_EXECUTIONS, "labelled-probe", "error") is not child


def _scraped(text: str, series: str) -> float:
    return next(float(line[len(series):]) for line in text.splitlines() if line.startswith(series))


def test_tallied_metrics_are_scraped_as_prometheus_client_writes_its_own() -> None:
    """One process's counters and histograms are plain numbers read when scraped
    (``proxy.telemetry.tallies``): the same updates give prometheus_client's text, byte for byte."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from proxy.telemetry import metrics  # noqa: F401  (no ``_created`` series, as in the gateway)
    from proxy.telemetry.tallies import TalliedCounter, TalliedHistogram

    bounds = (0.0002, 0.005, 0.01, 1, 2.5, float("inf"))
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counters = (Counter("probe_requests", "Requests.", ["route", "team"], registry=theirs),
                TalliedCounter("probe_requests", "Requests.", ["route", "team"]))
    histograms = (Histogram("probe_seconds", "Time.", ["model"], buckets=bounds, registry=theirs),
                  TalliedHistogram("probe_seconds", "Time.", ["model"], bounds))
    ours.register(counters[1])
    ours.register(histograms[1])
    for counter in counters:
        counter.labels("/v1/responses", "a").inc()
        counter.labels("/v1/responses", "a").inc(2.25)
        counter.labels("/v1/responses", 'b "quoted"\n').inc(0)
    for histogram in histograms:
        for value in (0.0, 0.0002, 0.00021, 0.005, 0.7, 2.5, 3.0, 1e9):  # on, just above and beyond bounds
            histogram.labels("sim").observe(value)
        histogram.labels("other").observe(0.01)
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()
    with pytest.raises(ValueError, match="non-negative"):
        counters[1].labels("/v1/responses", "a").inc(-1)
    with pytest.raises(ValueError, match="label values"):
        counters[1].labels("/v1/responses")
    with pytest.raises(ValueError, match=r"\+Inf"):
        TalliedHistogram("probe_other_seconds", "Time.", [], (0.1, 1.0))
