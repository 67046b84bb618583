"""The service's own Prometheus metrics (the gRPC ones are in internal/interceptor.py).

Names follow Prometheus conventions: `movieservice_` prefix, `_total` for
counters, `_seconds` for durations. Every metric here works in
prometheus-client's multiprocess mode (WORKERS > 1).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_LOOKUPS = Counter(
    "movieservice_cache_lookups_total",
    "Cache lookups by cache (movie, top_rated, geo) and result (hit, miss, negative_hit, error).",
    ["cache", "result"],
)
COALESCED = Counter(
    "movieservice_cache_coalesced_total",
    "Misses that did not read the store themselves but waited for another caller's read "
    "(in_process: same worker; lease: another worker or instance held the fill lease).",
    ["how"],
)
EARLY_REFRESHES = Counter(
    "movieservice_cache_early_refreshes_total",
    "Cached movies refreshed before expiry by probabilistic early expiration (XFetch).",
)
FALLBACKS = Counter(
    "movieservice_cache_fallbacks_total",
    "Reads answered from the store because the cache was unavailable, by RPC.",
    ["rpc"],
)
CACHE_REPAIRS = Counter(
    "movieservice_cache_repairs_total",
    "Writes whose cache update failed (recorded) and later applied by the repair loop (applied).",
    ["result"],
)
INDEX_REBUILDS = Counter("movieservice_index_rebuilds_total", "Rebuilds of a Redis index from the store.", ["index"])
BREAKER_STATE = Gauge(
    "movieservice_circuit_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
    ["dependency"],
    multiprocess_mode="max",
)
DEPENDENCY_SECONDS = Histogram(
    "movieservice_dependency_seconds",
    "Latency of Redis and MongoDB operations.",
    ["dependency", "operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DEPENDENCY_ERRORS = Counter(
    "movieservice_dependency_errors_total",
    "Failed Redis and MongoDB operations by kind (unavailable, timeout, circuit_open, error).",
    ["dependency", "kind"],
)
FILL_LAG_SECONDS = Histogram(
    "movieservice_cache_fill_lag_seconds",
    "Time from answering a miss to the movie being in the cache (population lag).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def initialize() -> None:
    """Create every known series at 0, so that its first increase shows in
    rate() and increase() (a series born at 1 looks like no change)."""
    for cache in ("movie", "top_rated", "geo"):
        for result in ("hit", "miss", "negative_hit", "error"):
            CACHE_LOOKUPS.labels(cache, result)
    for how in ("in_process", "lease"):
        COALESCED.labels(how)
    for rpc in ("Get", "TopRated", "Nearby"):
        FALLBACKS.labels(rpc)
    for result in ("recorded", "applied"):
        CACHE_REPAIRS.labels(result)
    for index in ("top_rated", "geo"):
        INDEX_REBUILDS.labels(index)
    for dependency in ("redis", "mongodb"):
        for kind in ("unavailable", "timeout", "circuit_open", "error"):
            DEPENDENCY_ERRORS.labels(dependency, kind)
