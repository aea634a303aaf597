"""Telemetry on the live request path: one trace per request (server span, a span per upstream
attempt and per tool call) continuing the client's W3C trace context and handed on upstream;
Prometheus metrics on ``/metrics``; JSON logs with request and trace ids; and no prompt,
completion or secret in any of them unless content capture is switched on."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from proxy.auth import hash_key
from proxy.telemetry import active_provider
from proxy.telemetry.logs import JsonFormatter
from tests.conftest import Api
from tests.gateway_process import spawn_gateway, write_gateway_config
from tests.gateway_server import TEAM_A_KEY, TEAM_B_KEY, RunningGateway, gateway_settings, serve
from tests.spec_validation import parse_sse, validate_error_body, validate_stream

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
METERED_KEY = "sk-test-metered"
ADMIN_KEY = "sk-test-telemetry-admin"
PROVIDER_KEY_ENV, PROVIDER_KEY = "INTERLOCK_TEST_TELEMETRY_PROVIDER_KEY", "prov-secret-5f1e0c9a7b3d"
SEAL_KEY_ENV = "INTERLOCK_TEST_TELEMETRY_SEAL_KEY"
SEAL_KEY = base64.b64encode(b"telemetry-test-seal-key-32bytes!").decode()
PRICE = {"input": 1_000_000.0, "output": 2_000_000.0}
"""Per million tokens: an input token costs 1, an output token 2."""
CALCULATOR = {"name": "calculator", "description": "Evaluate arithmetic.", "kind": "python",
              "target": "tools.builtin.calculator:evaluate",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"], "additionalProperties": False}}
USE_CALCULATOR = {"type": "function", "name": "calculator"}
T = TypeVar("T")


def _provider(dialect: str = "openai_responses", **headers: str) -> dict[str, Any]:
    return {"dialect": dialect, "base_url": "embedded", "headers": headers,
            "timeouts": {"connect": 1, "first_byte": 2, "idle": 2, "total": 10}}


def _settings(tmp: Path, **overrides: Any) -> Any:
    providers = {
        "sim": {**_provider(), "api_key_env": PROVIDER_KEY_ENV},
        "flaky": _provider("openai_chat", **{"x-sim-fault": "status:500", "x-sim-fail-times": "1",
                                             "x-sim-fault-key": f"telemetry-{tmp.name}"}),
        "down": _provider(**{"x-sim-fault": "status:503"}),
        "slow": _provider(**{"x-sim-token-delay-ms": "40"}),
        "cut": _provider(**{"x-sim-fault": "reset-after-first-byte"}),
    }
    models = {"sim": {"deployments": [{"provider": "sim", "model": "sim-1", "price": PRICE}]},
              "flaky": {"deployments": [{"provider": "flaky", "model": "sim-2"}]},
              "down": {"deployments": [{"provider": "down", "model": "sim-3"}]},
              "slow": {"deployments": [{"provider": "slow", "model": "sim-4"}]},
              "cut": {"deployments": [{"provider": "cut", "model": "sim-5"}]}}
    policies = tmp / "policies"
    policies.mkdir()
    metered = {"keys": [{"sha256": hash_key(METERED_KEY), "name": "m"}], "limits": {"key": {"rpm": 1}}}
    (policies / "metered.yaml").write_text(yaml.safe_dump(metered))
    settings = gateway_settings(f"sqlite:///{tmp / 'store.db'}", providers=providers, models=models,
                                tools=[CALCULATOR], policies_dir=str(policies), seal_key_env=SEAL_KEY_ENV,
                                admin_keys=[{"sha256": hash_key(ADMIN_KEY), "name": "ops"}], **overrides)
    settings.teams["team-a"].tools = ["calculator"]
    return settings


class Traced:
    """A running gateway and every span it finished."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.gateway = gateway
        self.exporter = InMemorySpanExporter()
        provider = active_provider()
        assert provider is not None, "tracing is on"
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def trace_of(self, request_id: str) -> list[ReadableSpan]:
        """The server span of the request whose ``x-request-id`` this is and the spans under it,
        once it ended (after the reply's last byte was sent: a moment after the client has it)."""
        server = _wait_for(lambda: next((span for span in self.exporter.get_finished_spans()
                                         if (span.attributes or {}).get("interlock.request_id") == request_id), None))
        found, ids = [server], {server.context.span_id}
        for span in sorted(self.exporter.get_finished_spans(), key=lambda span: span.start_time or 0):
            if span.parent is not None and span.parent.span_id in ids:
                found.append(span)
                ids.add(span.context.span_id)
        return found


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        patch.setenv(SEAL_KEY_ENV, SEAL_KEY)
        with serve(_settings(tmp_path_factory.mktemp("traced"), telemetry={"tracing": True})) as gateway:
            yield Traced(gateway)


@pytest.fixture(scope="module")
def running(traced: Traced) -> RunningGateway:
    """The traced gateway is the one conftest's ``api`` and ``upstream_log`` talk to."""
    return traced.gateway


@pytest.fixture
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """For gateways a test starts itself: the provider key its ``sim`` deployment needs."""
    monkeypatch.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)


@pytest.fixture
def metered(traced: Traced) -> Iterator[Api]:
    client = Api(traced.gateway.base_url, METERED_KEY)
    yield client
    client.close()


def _wait_for(probe: Callable[[], T | None], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return found


def span_tree(spans: list[ReadableSpan]) -> list[str]:
    """The spans as an indented tree, children in start order: ``name [attempt N]``."""
    known = {span.context.span_id for span in spans}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in known else None
        children[parent].append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda span: span.start_time or 0):
            attempt = (span.attributes or {}).get("interlock.attempt")
            lines.append("  " * depth + span.name + (f" [attempt {attempt}]" if attempt else ""))
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def _named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((span for span in spans if span.name.startswith(prefix)), key=lambda span: span.start_time or 0)


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


# -- traces ------------------------------------------------------------------------------------

def test_a_retried_request_is_one_trace_under_the_clients(traced: Traced, api: Api, upstream_log: Any) -> None:
    reply = api.http.post("/v1/responses", json={"model": "flaky", "input": "hi", "max_output_tokens": 64},
                          headers=TRACEPARENT)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    spans = traced.trace_of(reply.headers["x-request-id"])
    assert span_tree(spans) == ["POST /v1/responses", "  chat sim-2 [attempt 1]", "  chat sim-2 [attempt 2]"]

    server = _named(spans, "POST")[0]
    assert _hex(server.context.trace_id, 32) == CLIENT_TRACE, "the client's trace goes on"
    assert server.parent is not None and _hex(server.parent.span_id, 16) == CLIENT_SPAN
    assert server.kind is SpanKind.SERVER and server.status.status_code is StatusCode.UNSET
    assert server.attributes is not None
    assert {key: server.attributes[key] for key in ("http.request.method", "http.route", "http.response.status_code",
                                                    "interlock.team", "interlock.model", "interlock.attempts",
                                                    "interlock.response_id", "interlock.deployment")} == {
        "http.request.method": "POST", "http.route": "/v1/responses", "http.response.status_code": 200,
        "interlock.team": "team-a", "interlock.model": "flaky", "interlock.attempts": 2,
        "interlock.response_id": body["id"], "interlock.deployment": "flaky#0:flaky/sim-2"}

    failed, answered = _named(spans, "chat")
    assert failed.kind is answered.kind is SpanKind.CLIENT
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes is not None
    assert failed.attributes["error.type"] == "upstream_error"
    assert "gen_ai.usage.output_tokens" not in failed.attributes
    assert answered.status.status_code is StatusCode.UNSET and answered.attributes is not None
    assert {key: answered.attributes[key] for key in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.request.max_tokens",
        "gen_ai.response.model", "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens", "interlock.service_tier.requested", "interlock.service_tier.served",
        "interlock.deployment", "interlock.attempt", "server.address")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "sim-2",
        "gen_ai.request.max_tokens": 64, "gen_ai.response.model": "sim-2", "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": body["usage"]["input_tokens"],
        "gen_ai.usage.output_tokens": body["usage"]["output_tokens"], "interlock.service_tier.requested": "default",
        "interlock.service_tier.served": "default", "interlock.deployment": "flaky#0:flaky/sim-2",
        "interlock.attempt": 2, "server.address": "127.0.0.1"}

    sent = [entry["headers"]["traceparent"] for entry in upstream_log()]
    assert sent == [f"00-{CLIENT_TRACE}-{_hex(span.context.span_id, 16)}-01" for span in (failed, answered)], \
        "each attempt names its own span upstream"


def test_an_unsampled_request_passes_its_trace_on_without_attempt_spans(traced: Traced, api: Api,
                                                                       upstream_log: Any) -> None:
    """A client's unsampled ``traceparent`` (flags 00): no span of its trace is recorded, and each
    upstream attempt is sent the trace with the gateway's server span as parent, still unsampled."""
    trace_id = "5c1e0f7d2b9a4c3e8d6f1a2b3c4d5e6f"
    reply = api.http.post("/v1/responses", json={"model": "flaky", "input": "hi"},
                          headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-00"})
    assert reply.status_code == 200, reply.text
    sent = [entry["headers"]["traceparent"] for entry in upstream_log()]
    assert sent and len(set(sent)) == 1  # every attempt (flaky fails once per module), under one (the server's) span
    version, sent_trace, parent, flags = sent[0].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "00") and parent != CLIENT_SPAN
    # A sampled request after it: once its spans are in, the unsampled one's would be too.
    marker = api.http.post("/v1/responses", json={"model": "sim", "input": "hi"}, headers=TRACEPARENT)
    traced.trace_of(marker.headers["x-request-id"])
    assert not [span for span in traced.exporter.get_finished_spans() if span.context.trace_id == int(trace_id, 16)]


def test_server_side_tools_get_a_span_between_model_turns(traced: Traced, api: Api) -> None:
    reply = api.http.post("/v1/responses", json={"model": "sim", "input": "compute 42", "tools": [USE_CALCULATOR],
                                                 "stream": True})
    assert reply.status_code == 200
    spans = traced.trace_of(reply.headers["x-request-id"])
    assert span_tree(spans) == ["POST /v1/responses", "  chat sim-1 [attempt 1]", "  execute_tool calculator",
                                "  chat sim-1 [attempt 2]"]
    tool = _named(spans, "execute_tool")[0]
    assert tool.attributes is not None
    assert {key: tool.attributes[key] for key in ("gen_ai.operation.name", "gen_ai.tool.name", "gen_ai.tool.type",
                                                  "interlock.tool.outcome")} == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "calculator", "gen_ai.tool.type": "function",
        "interlock.tool.outcome": "ok"}
    assert str(tool.attributes["gen_ai.tool.call.id"]).startswith("call_")
    first, _ = _named(spans, "chat")
    assert first.attributes is not None and first.attributes["gen_ai.response.finish_reasons"] == ("tool_call",)


def _span_text(spans: list[ReadableSpan]) -> str:
    """Everything a span carries to a backend, as text to search."""
    return "\n".join(json.dumps({"name": span.name, "attributes": dict(span.attributes or {}),
                                 "events": [(event.name, dict(event.attributes or {})) for event in span.events],
                                 "status": span.status.description, "resource": dict(span.resource.attributes)},
                                default=list) for span in spans)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_prompts_and_completions_stay_out_of_spans(traced: Traced, api: Api, stream: bool) -> None:
    canary = f"canary-prompt-{stream}"
    body = {"model": "sim", "input": canary, "instructions": "canary-instructions"}
    output = api.stream(body)[-1]["response"] if stream else api.create(body)
    assert canary in json.dumps(output["output"]), "the completion echoes the prompt"
    spans = traced.exporter.get_finished_spans()
    text = _span_text([span for span in spans if span.name.startswith("chat")])
    assert "gen_ai.usage.input_tokens" in text, "the attempt spans were found"
    assert canary not in text and "canary-instructions" not in text
    assert "gen_ai.input.messages" not in text and "gen_ai.output.messages" not in text


# -- metrics -----------------------------------------------------------------------------------

def _scrape(base_url: str, **kw: Any) -> str:
    reply = httpx.get(base_url + "/metrics", **kw)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return reply.text


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels...}`` (others may be there too), 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def _after(gateway: RunningGateway, name: str, expected: float, **labels: str) -> str:
    """A scrape once ``name{labels}`` reached ``expected``: a request is counted when its reply
    was sent, a moment after the client had it."""
    return _wait_for(lambda: text if _value(text := _scrape(gateway.base_url), name, **labels) >= expected else None)


def test_metrics_count_requests_upstream_calls_tokens_and_cost(traced: Traced, api: Api) -> None:
    gateway = traced.gateway
    request = {"route": "/v1/responses", "method": "POST", "status": "200", "team": "team-a", "model": "sim"}
    usage = {"team": "team-a", "model": "sim", "tier": "default"}
    upstream = {"model": "sim", "deployment": "sim#0:sim/sim-1"}
    before = _scrape(gateway.base_url)
    body = api.create({"model": "sim", "input": "count me"})
    served = body["usage"]
    after = _after(gateway, "interlock_requests_total", _value(before, "interlock_requests_total", **request) + 1,
                   **request)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("interlock_request_duration_seconds_count", **request) == 1
    assert grew("interlock_tokens_total", type="input", **usage) == served["input_tokens"] > 0
    assert grew("interlock_tokens_total", type="output", **usage) == served["output_tokens"] > 0
    assert grew("interlock_cost_total", currency="USD", **usage) == pytest.approx(
        served["input_tokens"] + 2 * served["output_tokens"])
    assert grew("interlock_upstream_duration_seconds_count", outcome="ok", **upstream) == 1
    assert grew("interlock_upstream_time_to_first_token_seconds_count", **upstream) == 1
    assert grew("interlock_gateway_overhead_seconds_count", model="sim") == 1
    assert _value(after, "interlock_circuit_state", upstream="sim/sim-1", state="closed") == 1
    assert _value(after, "interlock_circuit_state", upstream="sim/sim-1", state="open") == 0


def test_failed_upstream_attempts_are_counted_by_error_type(traced: Traced, api: Api) -> None:
    labels = {"model": "down", "deployment": "down#0:down/sim-3", "outcome": "service_unavailable"}
    before = _value(_scrape(traced.gateway.base_url), "interlock_upstream_duration_seconds_count", **labels)
    reply = api.http.post("/v1/responses", json={"model": "down", "input": "x"})
    assert reply.status_code == 503
    validate_error_body(reply.json())
    after = _value(_scrape(traced.gateway.base_url), "interlock_upstream_duration_seconds_count", **labels)
    assert after - before == 2, "both attempts (retry.attempts: 2)"
    assert _value(_scrape(traced.gateway.base_url), "interlock_circuit_failures", upstream="down/sim-3") >= 2


def test_an_upstream_attempt_is_counted_as_its_reply_ended(traced: Traced) -> None:
    """``cancelled`` for a stream whose client left after its first bytes, the error's type for
    one the upstream cut after its first event."""
    gateway = traced.gateway
    name = "interlock_upstream_duration_seconds_count"
    left = {"model": "slow", "deployment": "slow#0:slow/sim-4", "outcome": "cancelled"}
    cut = {"model": "cut", "deployment": "cut#0:cut/sim-5", "outcome": "upstream_error"}
    before = _scrape(gateway.base_url)
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {TEAM_A_KEY}"}) as client:
        with client.stream("POST", "/v1/responses", json={"model": "slow", "input": "a few slow words here",
                                                            "stream": True}) as reply:
            next(reply.iter_bytes())
        with client.stream("POST", "/v1/responses", json={"model": "cut", "input": "x", "stream": True}) as reply:
            events, _ = parse_sse(reply.read().decode())
    assert events[-1]["type"] == "response.failed"
    validate_stream(events)
    _after(gateway, name, _value(before, name, **left) + 1, **left)
    after = _after(gateway, name, _value(before, name, **cut) + 1, **cut)
    assert _value(after, name, **{**cut, "outcome": "ok"}) == _value(before, name, **{**cut, "outcome": "ok"})


def test_limit_rejections_are_counted(traced: Traced, metered: Api) -> None:
    labels = {"team": "metered", "model": "sim", "reason": "rate_limit_exceeded"}
    refusals = {"route": "/v1/responses", "status": "429", "team": "metered", "model": "sim"}
    before = _scrape(traced.gateway.base_url)
    metered.create({"model": "sim", "input": "one"})
    refused = metered.create({"model": "sim", "input": "two"}, expect=429)
    assert refused["error"]["code"] == "rate_limit_exceeded"
    after = _after(traced.gateway, "interlock_requests_total", _value(before, "interlock_requests_total", **refusals)
                   + 1, **refusals)
    rejections = (_value(text, "interlock_limit_rejections_total", **labels) for text in (after, before))
    assert next(rejections) - next(rejections) == 1


def test_unknown_models_do_not_become_labels(traced: Traced, api: Api) -> None:
    labels = {"route": "/v1/responses", "status": "404", "team": "team-a", "model": ""}
    before = _value(_scrape(traced.gateway.base_url), "interlock_requests_total", **labels)
    api.create({"model": "no-such-model-4711", "input": "x"}, expect=404)
    text = _after(traced.gateway, "interlock_requests_total", before + 1, **labels)
    assert "no-such-model-4711" not in text


def test_open_streams_are_a_gauge(traced: Traced) -> None:
    gateway = traced.gateway
    _streams_become(gateway.base_url, "sse", 0)  # earlier tests' streams count until their last byte is sent
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {TEAM_A_KEY}"}) as client, \
            client.stream("POST", "/v1/responses", json={"model": "slow", "input": "a few slow words here",
                                                           "stream": True}) as reply:
        chunks = reply.iter_bytes()
        next(chunks)
        assert _value(_scrape(gateway.base_url), "interlock_open_streams", transport="sse") == 1
        for _ in chunks:
            pass
    _streams_become(gateway.base_url, "sse", 0)


def _streams_become(base_url: str, transport: str, expected: float) -> None:
    _wait_for(lambda: True if _value(_scrape(base_url), "interlock_open_streams", transport=transport) == expected
              else None)


async def test_websocket_connections_are_open_streams(traced: Traced) -> None:
    base_url = traced.gateway.base_url
    async with connect(base_url.replace("http://", "ws://") + "/v1/responses",
                       additional_headers={"Authorization": f"Bearer {TEAM_A_KEY}"}):
        assert _value(_scrape(base_url), "interlock_open_streams", transport="websocket") == 1
    _streams_become(base_url, "websocket", 0)


# -- logs and secrets --------------------------------------------------------------------------

@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """What the process logs while the test runs (the gateway's thread included), as the
    gateway's JSON formatter writes it, down to debug."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root, interlock = logging.getLogger(), logging.getLogger("interlock")
    previous = interlock.level
    root.addHandler(handler)
    interlock.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        interlock.setLevel(previous)


def _log_entries(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_logs_carry_the_request_id_and_trace_id(traced: Traced, api: Api, json_logs: io.StringIO) -> None:
    reply = api.http.post("/v1/responses", json={"model": "no-such-model", "input": "x"}, headers=TRACEPARENT)
    assert reply.status_code == 404
    validate_error_body(reply.json())
    spans = traced.trace_of(reply.headers["x-request-id"])
    entry = next(entry for entry in _log_entries(json_logs) if "model_not_found" in entry["message"])
    assert entry["level"] == "INFO" and entry["logger"] == "interlock.http"
    assert entry["request_id"] == reply.headers["x-request-id"]
    assert entry["trace_id"] == CLIENT_TRACE
    assert entry["span_id"] == _hex(_named(spans, "POST")[0].context.span_id, 16)


def test_no_key_reaches_logs_spans_or_metrics(traced: Traced, api: Api, json_logs: io.StringIO) -> None:
    """Team keys (valid and not), the provider key and the sealing key, after traffic that logs
    (failures, refusals, tools, streams)."""
    api.create({"model": "sim", "input": "hello"})
    api.stream({"model": "sim", "input": "compute 6*7", "tools": [USE_CALCULATOR]})
    assert api.http.post("/v1/responses", json={"model": "down", "input": "x"}).status_code == 503
    bogus = "sk-not-a-real-team-key-0042"
    assert httpx.post(traced.gateway.base_url + "/v1/responses", json={"model": "sim", "input": "x"},
                      headers={"Authorization": f"Bearer {bogus}"}).status_code == 401
    with closing(Api(traced.gateway.base_url, TEAM_B_KEY)) as other:
        other.create({"model": "sim", "input": "from b"})
    logs = json_logs.getvalue()
    assert "failed before the first byte" in logs, "the failures were logged"
    everything = "\n".join([logs, _span_text(traced.exporter.get_finished_spans()), _scrape(traced.gateway.base_url)])
    for secret in (TEAM_A_KEY, TEAM_B_KEY, bogus, PROVIDER_KEY, SEAL_KEY):
        assert secret not in everything


def test_interlock_serve_logs_json_and_adds_up_its_workers_metrics(tmp_path: Path) -> None:
    """The real CLI with two worker processes: every line it writes is a JSON object (uvicorn's
    and Litestar's included), and any worker's ``/metrics`` counts both workers' requests."""
    providers = {"sim": _provider(), "down": _provider(**{"x-sim-fault": "status:503"})}
    models = {"sim": {"deployments": [{"provider": "sim", "model": "sim-1"}]},
              "down": {"deployments": [{"provider": "down", "model": "sim-3"}]}}
    config = write_gateway_config(tmp_path / "gateway.yaml", store=f"sqlite:///{tmp_path / 'store.db'}",
                                  providers=providers, models=models, listen={"workers": 2})
    shared = tmp_path / "metrics"
    shared.mkdir()
    with spawn_gateway(config, env={"PROMETHEUS_MULTIPROC_DIR": str(shared)}) as gateway, \
            closing(Api(gateway.base_url, TEAM_A_KEY)) as api:
        for _ in range(4):
            api.create({"model": "sim", "input": "which worker?"})
        failed = api.http.post("/v1/responses", json={"model": "down", "input": "x"})
        assert failed.status_code == 503
        labels = {"route": "/v1/responses", "status": "200", "model": "sim"}
        scrapes = [_value(_scrape(gateway.base_url), "interlock_requests_total", **labels) for _ in range(6)]
        assert scrapes == [4.0] * 6
        entries = [json.loads(line) for line in gateway.log().splitlines() if line.strip()]
    warning = next(entry for entry in entries if "failed before the first byte" in entry["message"])
    assert warning["level"] == "WARNING" and warning["request_id"] == failed.headers["x-request-id"]


# -- content capture, a private /metrics, export, and tracing off --------------------------------

@pytest.mark.usefixtures("provider_key")
def test_content_is_recorded_only_when_opted_in_and_metrics_can_need_an_admin_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path, telemetry={"tracing": True, "capture_content": True, "metrics_public": False})
    with serve(settings) as gateway:
        traced = Traced(gateway)
        with closing(Api(gateway.base_url, TEAM_A_KEY)) as api:
            reply = api.http.post("/v1/responses", json={"model": "sim", "input": "compute 41",
                                                         "instructions": "be exact", "tools": [USE_CALCULATOR]})
            assert reply.status_code == 200
            spans = traced.trace_of(reply.headers["x-request-id"])
            (calling, answering), tool = _named(spans, "chat"), _named(spans, "execute_tool")[0]
            assert calling.attributes is not None and answering.attributes is not None
            assert tool.attributes is not None
            sent = json.loads(str(calling.attributes["gen_ai.input.messages"]))
            assert sent == [{"role": "user", "parts": [{"type": "text", "content": "compute 41"}]}]
            assert json.loads(str(calling.attributes["gen_ai.system_instructions"])) == [
                {"type": "text", "content": "be exact"}]
            called = json.loads(str(calling.attributes["gen_ai.output.messages"]))[0]
            assert called["finish_reason"] == "tool_call"
            assert called["parts"][0]["type"] == "tool_call" and called["parts"][0]["name"] == "calculator"
            assert tool.attributes["gen_ai.tool.call.arguments"] == called["parts"][0]["arguments"]
            assert tool.attributes["gen_ai.tool.call.result"] == "41"
            answered = json.loads(str(answering.attributes["gen_ai.output.messages"]))[0]
            assert answered["parts"] == [{"type": "text", "content": "Tool said: 41"}]

            assert api.get("/metrics", expect=403)["error"]["code"] == "admin_key_required"
        refused = httpx.get(gateway.base_url + "/metrics")
        assert refused.status_code == 401
        validate_error_body(refused.json())
        assert "interlock_requests_total" in _scrape(gateway.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver on loopback: keeps each export request's headers and spans."""

    received: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        export = ExportTraceServiceRequest()
        export.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(({name.lower(): value for name, value in self.headers.items()}, export))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.mark.usefixtures("provider_key")
def test_spans_are_exported_over_otlp_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: str) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("INTERLOCK_TEST_OTLP_TOKEN", "otlp-token-8d2f")
    settings = _settings(tmp_path, telemetry={"tracing": True, "otlp_endpoint": collector, "service_name": "gw-test",
                                              "otlp_headers_env": {"Authorization": "INTERLOCK_TEST_OTLP_TOKEN"}})
    with serve(settings) as gateway, closing(Api(gateway.base_url, TEAM_A_KEY)) as api:
        api.create({"model": "sim", "input": "export me"})
    # spans leave in batches; closing the gateway flushed the last one
    spans = [(resource, span) for headers, export in _Collector.received for resource in export.resource_spans
             for scope in resource.scope_spans for span in scope.spans]
    assert {span.name for _, span in spans} >= {"POST /v1/responses", "chat sim-1"}
    services = {attribute.value.string_value for resource, _ in spans for attribute in resource.resource.attributes
                if attribute.key == "service.name"}
    assert services == {"gw-test"}
    assert {headers["authorization"] for headers, _ in _Collector.received} == {"otlp-token-8d2f"}
    assert {headers["content-type"] for headers, _ in _Collector.received} == {"application/x-protobuf"}


@pytest.mark.usefixtures("provider_key")
def test_with_tracing_and_metrics_off_nothing_is_made(tmp_path: Path) -> None:
    with serve(_settings(tmp_path, telemetry={"metrics": False})) as gateway, \
            closing(Api(gateway.base_url, TEAM_A_KEY)) as api:
        assert active_provider() is None
        simulator = gateway.gateway.simulator_url
        httpx.delete(f"{simulator}/_sim/requests")
        api.create({"model": "sim", "input": "quiet"}, headers=TRACEPARENT)
        sent = httpx.get(f"{simulator}/_sim/requests").json()
        assert "traceparent" not in sent[0]["headers"]
        assert api.get("/metrics", expect=404)["error"]["code"] == "metrics_disabled"
