"""Counters and histograms of one process kept in plain numbers and read when scraped.

A prometheus_client child takes a lock on every update, and a histogram's walks its buckets in
Python: the nine updates a request makes cost 11-13 us of CPU in a loop, where these take about
4. Here an update is an addition (a histogram's also a bisection), and the
exposition is built from the numbers at scrape time, as prometheus_client would write it (same
names, help, labels, ``le`` values and order). Updated from the event loop's thread only.

Only for a single process: worker processes that share ``PROMETHEUS_MULTIPROC_DIR`` must write
every update to its files as it happens, so ``proxy.telemetry.metrics`` keeps prometheus_client's
own metrics there.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterTally:
    """One label set's count."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramTally:
    """One label set's observations: how many fell in each bucket (not cumulative), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is at least ``amount``: prometheus_client's ``<=``.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


_Tally = TypeVar("_Tally", CounterTally, HistogramTally)


class _Family(Collector, Generic[_Tally]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Tally] = {}

    def labels(self, *values: str) -> _Tally:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes {len(self.labelnames)} label values, not {len(values)}")
            child = self._children[values] = self._new_child()
        return child

    def _new_child(self) -> _Tally:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        return iter(())


class TalliedCounter(_Family[CounterTally]):
    """A counter family (exposed as ``<name>_total``)."""

    def _new_child(self) -> CounterTally:
        return CounterTally()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(values, child.value)
        yield family


class TalliedHistogram(_Family[HistogramTally]):
    """A histogram family with fixed bucket bounds, the last ``+Inf``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(bound) for bound in buckets)
        if self.bounds[-1] != float("inf"):
            raise ValueError("the last bucket of a histogram must be +Inf")
        self._le = [floatToGoString(bound) for bound in self.bounds]

    def _new_child(self) -> HistogramTally:
        return HistogramTally(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            cumulative, buckets = 0, []
            for le, count in zip(self._le, child.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(values, buckets, child.sum)
        yield family
