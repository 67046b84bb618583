"""Rounds, ratios and the quantities read from a service's /metrics."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from movieservice.devstack.metrics import Samples

T = TypeVar("T")


def interleaved(runs: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Every run once per round, after a warm-up round that is not kept; the
    order rotates from round to round so that no run is always first after a
    pause (a neighbour's burst then falls on different runs)."""
    names = list(runs)
    for name in names:
        runs[name]()
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(runs[name]())
    return results


@dataclass(frozen=True)
class Ratio:
    """The median of per-round ratios, and the quartiles that show their spread."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> Ratio:
        """The ratios a[i] / b[i] of the runs of the same round."""
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        if len(ratios) < 2:
            return cls(ratios[0], ratios[0], ratios[0])
        low, median, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return cls(median, low, high)

    def __str__(self) -> str:
        return f"{self.median:.3f} (middle half of the rounds {self.low:.3f} to {self.high:.3f})"


# Samples of a metric (see movieservice.devstack.metrics.scrape)


def metric(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def grown(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """How much `metric(name, labels)` grew between two scrapes."""
    return metric(after, name, **labels) - metric(before, name, **labels)


def histogram_quantile(after: Samples, before: Samples, name: str, q: float, **labels: str) -> float:
    """The q-quantile of a histogram's observations between two scrapes, from
    its buckets (linear within a bucket, as Prometheus' histogram_quantile)."""
    buckets = sorted(
        (float(dict(ls)["le"]), v - before.get((n, ls), 0.0))
        for (n, ls), v in after.items()
        if n == f"{name}_bucket" and labels.items() <= dict(ls).items()
    )
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return previous_le
            span = count - previous_count
            return previous_le + (le - previous_le) * ((rank - previous_count) / span if span else 1)
        previous_le, previous_count = le, count
    return float("nan")
