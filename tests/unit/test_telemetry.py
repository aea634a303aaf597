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
    before = child._value.get()
    metrics.labelled(metrics.TOOL_EXECUTIONS, "labelled-probe", "ok").inc()
    assert metrics.TOOL_EXECUTIONS.labels("labelled-probe", "ok")._value.get() == before + 1
    assert metrics.labelled(metrics.TOOL_EXECUTIONS, "labelled-probe", "error") is not child
