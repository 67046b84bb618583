"""The live panel's numbers: requests per second by RPC, the Get cache hit
ratio and p50/p99 latency, from the service's Prometheus `/metrics` text
(parsed with prometheus_client's parser) taken a few seconds apart.

The rates are those between the oldest and the newest snapshot of a short
window, as Prometheus' `rate()` computes them (a counter that went down was
reset by a restart and counts from zero); the quantiles interpolate within
histogram buckets as `histogram_quantile()` does.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

SERVICE = "movies.v1.MovieService"
# Movie lookups the cache answered (a near hit is counted as a hit).
CACHE_ANSWERED = ("hit", "negative_hit")


@dataclass(frozen=True)
class Snapshot:
    """The counters of one scrape of /metrics, at `at` (seconds, monotonic)."""

    at: float
    handled: dict[str, float] = field(default_factory=dict)  # RPC -> calls handled
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # RPC -> {le: calls}
    lookups: dict[str, float] = field(default_factory=dict)  # movie cache result -> lookups


def parse_metrics(text: str, at: float) -> Snapshot:
    """The MovieService counters in a /metrics page (Prometheus text format)."""
    snapshot = Snapshot(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "grpc_server_handled_total" and labels.get("grpc_service") == SERVICE:
                method = labels["grpc_method"]
                snapshot.handled[method] = snapshot.handled.get(method, 0.0) + sample.value
            elif sample.name == "grpc_server_handling_seconds_bucket" and labels.get("grpc_service") == SERVICE:
                per_method = snapshot.buckets.setdefault(labels["grpc_method"], {})
                le = float(labels["le"])
                per_method[le] = per_method.get(le, 0.0) + sample.value
            elif sample.name == "movieservice_cache_lookups_total" and labels.get("cache") == "movie":
                result = labels["result"]
                snapshot.lookups[result] = snapshot.lookups.get(result, 0.0) + sample.value
    return snapshot


@dataclass(frozen=True)
class LiveStats:
    """Over `seconds`: calls per second by RPC, the share of Get lookups the cache
    answered (None: no lookups), and p50/p99 latency in milliseconds by RPC and
    for all of them ("all"; None: no calls)."""

    seconds: float
    rps: dict[str, float]
    hit_ratio: float | None
    p50_ms: dict[str, float | None]
    p99_ms: dict[str, float | None]


def live_stats(first: Snapshot, last: Snapshot) -> LiveStats:
    seconds = max(last.at - first.at, 1e-9)
    methods = sorted(set(first.handled) | set(last.handled))
    rps = {m: _increase(first.handled.get(m, 0.0), last.handled.get(m, 0.0)) / seconds for m in methods}
    answered = sum(_increase(first.lookups.get(r, 0.0), last.lookups.get(r, 0.0)) for r in CACHE_ANSWERED)
    results = set(first.lookups) | set(last.lookups)
    lookups = sum(_increase(first.lookups.get(r, 0.0), last.lookups.get(r, 0.0)) for r in results)
    p50: dict[str, float | None] = {}
    p99: dict[str, float | None] = {}
    every: dict[float, float] = {}
    for method in sorted(last.buckets):
        before = first.buckets.get(method, {})
        counts = {le: _increase(before.get(le, 0.0), n) for le, n in last.buckets[method].items()}
        for le, n in counts.items():
            every[le] = every.get(le, 0.0) + n
        p50[method], p99[method] = _ms(quantile(0.5, counts)), _ms(quantile(0.99, counts))
    p50["all"], p99["all"] = _ms(quantile(0.5, every)), _ms(quantile(0.99, every))
    return LiveStats(seconds, rps, answered / lookups if lookups else None, p50, p99)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative histogram `buckets` ({upper bound: count},
    +Inf included), interpolated linearly within its bucket; a quantile in the
    +Inf bucket is the largest finite bound. None when there are no calls."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _increase(before: float, after: float) -> float:
    return after - before if after >= before else after  # reset by a restart


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


class Window:
    """The snapshots of the last `seconds`, for rates over a few scrapes."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self._snapshots: deque[Snapshot] = deque()

    def add(self, snapshot: Snapshot) -> LiveStats | None:
        """Add a scrape; the stats since the oldest kept (None until there are two)."""
        self._snapshots.append(snapshot)
        while len(self._snapshots) > 2 and snapshot.at - self._snapshots[1].at >= self.seconds:
            self._snapshots.popleft()
        if len(self._snapshots) < 2:
            return None
        return live_stats(self._snapshots[0], snapshot)


def fetch_metrics(url: str, timeout: float = 2.0) -> str | None:
    """The /metrics page at `url`, or None when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text: str = response.read().decode()
            return text
    except (OSError, urllib.error.URLError, ValueError):
        return None
