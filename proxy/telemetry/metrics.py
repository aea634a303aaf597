"""Prometheus metrics of this process, and their exposition for ``GET /metrics``.

Every label value comes from the configuration or a fixed vocabulary (routes, teams, model
aliases, deployments, tiers, tools, error types), never from what a client sends, so the
number of series stays bounded. With several workers (``listen.workers``), set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the gateway starts: each worker then
writes its numbers there and any worker's ``/metrics`` adds them all up. A single process keeps
its counters and histograms in plain numbers instead (``proxy.telemetry.tallies``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from proxy.telemetry.tallies import TalliedCounter, TalliedHistogram

if TYPE_CHECKING:
    from policies.circuit import CircuitBoard

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # a ``*_created`` series beside each counter and histogram doubles the series for nothing
REGISTRY = CollectorRegistry()
_SHARED = bool(os.environ.get(MULTIPROCESS_ENV))
"""Workers add up their numbers through files (prometheus_client decides this at import too)."""


class Counting(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


class Observing(Protocol):
    def observe(self, amount: float) -> None: ...


_Child = TypeVar("_Child", covariant=True)


class Family(Protocol[_Child]):
    """A metric with labels: ``labels(*values)`` is the series of one label set."""

    def labels(self, *values: str) -> _Child: ...


def _counter(name: str, documentation: str, labelnames: Sequence[str]) -> Family[Counting]:
    """prometheus_client's counter where workers share a directory; else one kept in plain
    numbers (``proxy.telemetry.tallies``), several times cheaper to update."""
    if _SHARED:
        return Counter(name, documentation, labelnames, registry=REGISTRY)
    counter = TalliedCounter(name, documentation, labelnames)
    REGISTRY.register(counter)
    return counter


def _histogram(name: str, documentation: str, labelnames: Sequence[str],
               buckets: Sequence[float]) -> Family[Observing]:
    """As ``_counter``, for a histogram."""
    if _SHARED:
        return Histogram(name, documentation, labelnames, buckets=buckets, registry=REGISTRY)
    histogram = TalliedHistogram(name, documentation, labelnames, buckets)
    REGISTRY.register(histogram)
    return histogram


_REQUEST_LABELS = ("route", "method", "status", "team", "model")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))
_OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, float("inf"))

REQUESTS = _counter("interlock_requests", "HTTP requests answered, by route template, method, status, team "
                    "and model alias (empty when not known).", _REQUEST_LABELS)
REQUEST_DURATION = _histogram("interlock_request_duration_seconds", "Time from a request's arrival to the end "
                              "of its reply (streams included).", _REQUEST_LABELS, _LATENCY_BUCKETS)
OPEN_STREAMS = Gauge("interlock_open_streams", "Replies streaming now: SSE responses and WebSocket connections.",
                     ["transport"], registry=REGISTRY, multiprocess_mode="livesum")
UPSTREAM_DURATION = _histogram("interlock_upstream_duration_seconds", "One upstream attempt, from sending the "
                               "request to the end of its reply or its failure.", ["model", "deployment", "outcome"],
                               _LATENCY_BUCKETS)
UPSTREAM_FIRST_TOKEN = _histogram("interlock_upstream_time_to_first_token_seconds", "From sending an upstream "
                                  "request to its first output (text, reasoning or tool call).",
                                  ["model", "deployment"], _LATENCY_BUCKETS)
OVERHEAD = _histogram("interlock_gateway_overhead_seconds", "Time to the first upstream byte spent in the gateway "
                      "itself (decoding, policy, limits, translation), not waiting on upstreams.", ["model"],
                      _OVERHEAD_BUCKETS)
TOKENS = _counter("interlock_tokens", "Tokens of finished responses, by team, model alias, tier served and type "
                  "(input, cached_input, output).", ["team", "model", "tier", "type"])
COST = _counter("interlock_cost", "Cost of finished responses at the tier served, in the gateway's currency.",
                ["team", "model", "tier", "currency"])
LIMIT_REJECTIONS = _counter("interlock_limit_rejections", "Requests refused by a rate limit or budget (or because "
                            "the limits store was unreachable and the policy fails closed), by reason.",
                            ["team", "model", "reason"])
TOOL_EXECUTIONS = _counter("interlock_tool_executions", "Server-side tool calls, by outcome: ok, error (the tool "
                           "failed), timeout, sandbox_failure (the sandbox itself failed: a gateway fault).",
                           ["tool", "outcome"])
TOOL_DURATION = _histogram("interlock_tool_duration_seconds", "Wall-clock time of one server-side tool call.",
                           ["tool"], _LATENCY_BUCKETS)

_Series = TypeVar("_Series")
_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def labelled(metric: Family[_Series], *values: str) -> _Series:
    """``metric.labels(*values)``, looked up once per label set: prometheus_client validates and
    locks on every ``labels`` call, several times per request. The label sets are bounded (the
    module docstring), so this is too; no metric here ever drops a child."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return cast(_Series, child)


_CIRCUIT_STATES = ("closed", "open", "half_open")


class CircuitCollector(Collector):
    """Circuit state per upstream, read from the live ``CircuitBoard`` when scraped (an open
    circuit turns half-open by the clock, with no event to count)."""

    def __init__(self) -> None:
        self.board: CircuitBoard | None = None
        self.upstreams: Callable[[], Iterable[str]] = tuple

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        board = self.board
        if board is None:
            return
        states = GaugeMetricFamily("interlock_circuit_state", "1 for the state each upstream's circuit is in "
                                   "(closed, open, half_open), 0 for the others.", labels=["upstream", "state"])
        failures = GaugeMetricFamily("interlock_circuit_failures", "Consecutive failed attempts of each upstream.",
                                     labels=["upstream"])
        for upstream in self.upstreams():
            state = board.state(upstream)
            for name in _CIRCUIT_STATES:
                states.add_metric([upstream, name], 1.0 if state.state == name else 0.0)
            failures.add_metric([upstream], float(state.failures))
        yield states
        yield failures


CIRCUITS = CircuitCollector()
REGISTRY.register(CIRCUITS)


def exposition() -> bytes:
    """The text format a Prometheus scrape reads: this process's metrics, or every worker's
    when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    registry.register(CIRCUITS)  # each worker reads the same Redis (or, without one, owns its own circuits)
    return generate_latest(registry)


def process_exited() -> None:
    """Drop this worker's live gauges (open streams) from the shared directory."""
    if os.environ.get(MULTIPROCESS_ENV):
        mark_process_dead(os.getpid())
