"""The live panel's numbers: requests per second by RPC, the Get cache hit
ratio and p50/p99 latency, from the service's Prometheus `/metrics` text
(parsed with prometheus_client's parser) taken a few seconds apart, or, when
the UI is given a Prometheus (UI_PROMETHEUS_URL), from Prometheus' own
queries over every instance it scrapes (`prometheus_stats`).

The rates are those between the oldest and the newest snapshot of a short
window, as Prometheus' `rate()` computes them (a counter that went down was
reset by a restart and counts from zero); the quantiles interpolate within
histogram buckets as `histogram_quantile()` does.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any

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


def prometheus_stats(base_url: str, window: str = "1m", timeout: float = 2.0) -> LiveStats | None:
    """The same numbers from a Prometheus that scrapes the service (every instance and
    worker summed, over `window`), or None when it cannot be asked."""
    selector = f'grpc_service="{SERVICE}"'
    handled = f"rate(grpc_server_handled_total{{{selector}}}[{window}])"
    buckets = f"rate(grpc_server_handling_seconds_bucket{{{selector}}}[{window}])"
    lookups = f'rate(movieservice_cache_lookups_total{{cache="movie"}}[{window}])'
    answered = f'rate(movieservice_cache_lookups_total{{cache="movie",result=~"{"|".join(CACHE_ANSWERED)}"}}[{window}])'
    try:
        rps = _by_method(_query(base_url, f"sum by (grpc_method) ({handled})", timeout))
        ratio = _query(base_url, f"sum({answered}) / sum({lookups})", timeout)
        quantiles = {}
        for q in (0.5, 0.99):
            per_method = _by_method(
                _query(base_url, f"histogram_quantile({q}, sum by (le, grpc_method) ({buckets}))", timeout)
            )
            overall = _query(base_url, f"histogram_quantile({q}, sum by (le) ({buckets}))", timeout)
            every: dict[str, float | None] = {m: _ms(v) for m, v in per_method.items()}
            every["all"] = _ms(_number(overall[0]["value"][1])) if overall else None
            quantiles[q] = every
    except (OSError, ValueError, KeyError, IndexError):
        return None
    hit_ratio = _number(ratio[0]["value"][1]) if ratio else None
    return LiveStats(
        _seconds(window), {m: v or 0.0 for m, v in rps.items()}, hit_ratio, quantiles[0.5], quantiles[0.99]
    )


def _query(base_url: str, expression: str, timeout: float) -> list[dict[str, Any]]:
    url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=timeout) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise ValueError(f"Prometheus answered {answer.get('error')}")
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _by_method(result: list[dict[str, Any]]) -> dict[str, float | None]:
    return {item["metric"].get("grpc_method", ""): _number(item["value"][1]) for item in result}


def _number(text: str) -> float | None:
    """A sample's value; None for NaN (no calls in the window)."""
    value = float(text)
    return None if math.isnan(value) or math.isinf(value) else value


def _seconds(window: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(window[:-1]) * units[window[-1]]
