"""Every Prometheus metric of a process, created in one place (`Metrics`) and
handed to what records it: the use cases (as their `ServiceEvents`), the
Redis and MongoDB adapters (`DependencyMetrics`) and the gRPC interceptor
(`GrpcMetrics`).

Names follow Prometheus conventions: `movieservice_` prefix, `_total` for
counters, `_seconds` for durations; the gRPC ones are go-grpc-prometheus'.
Every series that can appear is created at 0 up front, so that its first
increase shows in rate() and increase() (a series born at 1 looks like no
change). Every metric works in prometheus-client's multiprocess mode
(WORKERS > 1).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

# prometheus_client's defaults, which are also go-grpc-prometheus' (prometheus.DefBuckets).
DEFAULT_GRPC_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
GRPC_CODES = tuple(code.name for code in grpc.StatusCode)

CACHES = ("movie", "top_rated", "geo")
LOOKUP_RESULTS = ("hit", "miss", "negative_hit", "error")
DEPENDENCIES = ("redis", "mongodb")
ERROR_KINDS = ("unavailable", "timeout", "circuit_open", "error")
AUTH_FAILURE_REASONS = ("missing", "invalid", "writes_disabled", "rate_limited")
SPAN_DROP_REASONS = ("queue_full", "export_failed")


# Metrics recorded on every call (the gRPC ones, cache lookups, Redis and
# MongoDB latencies) are kept in plain Python numbers (`LoopCounter`,
# `LoopHistogram`): measured under load, each prometheus_client Counter.inc or
# Histogram.observe cost ~4 us of CPU per call (a lock, several calls), and in
# multiprocess mode (WORKERS > 1: values in files) the gRPC metrics alone cost
# ~29 us a Get, 16% (BENCHMARKS.md). They are updated only from the event
# loop's thread, so they need no lock. With one process a collector reads them
# at scrape time (a consistent copy of each histogram's buckets); with several,
# `Metrics.flush()` (every second, and at shutdown: see movieservice.app) adds
# what changed to prometheus_client's own metrics, whose files the supervisor
# sums.


class _CounterChild:
    __slots__ = ("flushed", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.flushed = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "exemplars", "flushed_counts", "flushed_sum", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.flushed_counts = [0] * (len(bounds) + 1)
        self.flushed_sum = 0.0
        # Per bucket, the last traced observation: (trace id, value, time); None until one.
        self.exemplars: list[tuple[int, float, float] | None] | None = None

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def observe_traced(self, amount: float, trace_id: int) -> None:
        """`observe`, keeping the trace as its bucket's exemplar (the trace id is
        formatted at scrape time, not here). Only observers of traced calls use it:
        `observe` stays as it was."""
        index = bisect.bisect_left(self.bounds, amount)
        self.counts[index] += 1
        self.sum += amount
        exemplars = self.exemplars
        if exemplars is None:
            exemplars = self.exemplars = [None] * len(self.counts)
        exemplars[index] = (trace_id, amount, time.time())


class _LoopMetric(Collector):
    """A metric family updated from one event loop's thread, without locks:
    read at scrape time (registered in `registry`), or with a `sink` (a
    prometheus_client metric of the same name and labels) flushed into it."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        sink: Any = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        self._sink = sink
        if sink is None:
            registry.register(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
            if self._sink is not None:
                self._sink.labels(*values)  # the series exists (at 0) from now on
        return child

    def _new_child(self) -> Any:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        return iter(())


class LoopCounter(_LoopMetric):
    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family

    def flush(self) -> None:
        for values, child in list(self._children.items()):
            value = child.value
            if value > child.flushed:
                self._sink.labels(*values).inc(value - child.flushed)
                child.flushed = value


class LoopHistogram(_LoopMetric):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
        sink: Any = None,
    ) -> None:
        self._bounds = tuple(sorted(buckets))
        super().__init__(name, documentation, labelnames, registry, sink)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.sum
            exemplars = list(child.exemplars or ()) or [None] * len(counts)
            cumulative, buckets = 0, []
            for bound, count, exemplar in zip([*self._bounds, float("inf")], counts, exemplars, strict=True):
                cumulative += count
                if exemplar is None:
                    buckets.append((_bound_text(bound), cumulative))
                else:
                    # Shown in the OpenMetrics exposition only (what Prometheus asks
                    # for when it stores exemplars); the text format leaves them out.
                    trace_id, value, timestamp = exemplar
                    linked = Exemplar({"trace_id": format(trace_id, "032x")}, value, timestamp)
                    buckets.append((_bound_text(bound), cumulative, linked))  # type: ignore[arg-type]
            family.add_metric(list(values), buckets, total)
        yield family

    def flush(self) -> None:
        """prometheus_client's Histogram takes one observation at a time; what
        changed is added to its buckets and sum (its `_buckets` and `_sum`
        values, which a test checks are still there)."""
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.sum
            sink = self._sink.labels(*values)
            for index, (count, flushed) in enumerate(zip(counts, child.flushed_counts, strict=True)):
                if count > flushed:
                    sink._buckets[index].inc(count - flushed)
            if total != child.flushed_sum:
                sink._sum.inc(total - child.flushed_sum)
            child.flushed_counts, child.flushed_sum = counts, total


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Factory:
    """Makes the per-call metric families: lock-free, read at scrape time or
    (`flushed`) flushed into prometheus_client's own (multiprocess) metrics."""

    def __init__(self, registry: CollectorRegistry, *, flushed: bool) -> None:
        self._registry = registry
        self._flushed = flushed
        self.made: list[_LoopMetric] = []

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> LoopCounter:
        sink = Counter(name, documentation, labelnames, registry=self._registry) if self._flushed else None
        metric = LoopCounter(name, documentation, labelnames, self._registry, sink)
        self.made.append(metric)
        return metric

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> LoopHistogram:
        sink = (
            Histogram(name, documentation, labelnames, buckets=buckets, registry=self._registry)
            if self._flushed
            else None
        )
        metric = LoopHistogram(name, documentation, labelnames, buckets, self._registry, sink)
        self.made.append(metric)
        return metric


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in files for a supervisor to sum (WORKERS > 1)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


class GrpcMetrics:
    """go-grpc-prometheus' server metric families (recorded by the interceptor)."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float], factory: _Factory | None = None) -> None:
        make = factory or _Factory(registry, flushed=False)
        self.started = make.counter(
            "grpc_server_started_total", "Total number of RPCs started on the server.", GRPC_LABELS
        )
        self.handled = make.counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*GRPC_LABELS, "grpc_code"),
        )
        self.handling_seconds = make.histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            GRPC_LABELS,
            buckets,
        )
        registry.register(UnaryMessageCounts(self.started, self.handled))

    def initialize(self, methods: Sequence[str]) -> None:
        """Create every series of `methods` ("/package.Service/Method") at 0, as
        go-grpc-prometheus' InitializeMetrics does."""
        for method in methods:
            labels = grpc_labels(method)
            self.started.labels(*labels)
            self.handling_seconds.labels(*labels)
            for code in GRPC_CODES:
                self.handled.labels(*labels, code)


def grpc_labels(method: str) -> tuple[str, str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return ("unary", service, name)


class UnaryMessageCounts(Collector):
    """grpc_server_msg_received_total and grpc_server_msg_sent_total, derived.

    For unary RPCs go-grpc-prometheus counts one message received per call
    started and one sent per call handled with OK, so these two are exported
    from those counters instead of being counted again on every call: two
    counter increments less on the hot path, and the same numbers.
    `sources` (the two counters, or a multiprocess collector) yield
    grpc_server_started_total and grpc_server_handled_total.
    """

    def __init__(self, *sources: Any) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            labels=GRPC_LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", labels=GRPC_LABELS
        )
        for source in self._sources:
            for family in source.collect():
                for sample in family.samples:
                    labels = sample.labels
                    if labels.get("grpc_type") != "unary":
                        continue
                    if sample.name == "grpc_server_started_total":
                        received.add_metric([labels[name] for name in GRPC_LABELS], sample.value)
                    elif sample.name == "grpc_server_handled_total" and labels.get("grpc_code") == "OK":
                        sent.add_metric([labels[name] for name in GRPC_LABELS], sample.value)
        yield received
        yield sent

    def describe(self) -> Iterator[Metric]:
        # Described without collecting, so registering does not read the sources.
        yield CounterMetricFamily("grpc_server_msg_received_total", "", labels=GRPC_LABELS)
        yield CounterMetricFamily("grpc_server_msg_sent_total", "", labels=GRPC_LABELS)


class DependencyMetrics:
    """What the Redis and MongoDB adapters record: latency, errors, breaker state."""

    def __init__(self, registry: CollectorRegistry, factory: _Factory | None = None) -> None:
        make = factory or _Factory(registry, flushed=False)
        self.seconds = make.histogram(
            "movieservice_dependency_seconds",
            "Latency of Redis and MongoDB operations.",
            ["dependency", "operation"],
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.errors = Counter(
            "movieservice_dependency_errors_total",
            "Failed Redis and MongoDB operations by kind (unavailable, timeout, circuit_open, error).",
            ["dependency", "kind"],
            registry=registry,
        )
        self.breaker = Gauge(
            "movieservice_circuit_breaker_state",
            "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
            ["dependency"],
            multiprocess_mode="max",
            registry=registry,
        )
        self._errors = {(d, k): self.errors.labels(d, k) for d in DEPENDENCIES for k in ERROR_KINDS}

    def latency(self, dependency: str, operation: str) -> Any:
        """The histogram child of one operation (look it up once, observe often)."""
        return self.seconds.labels(dependency, operation)

    def error(self, dependency: str, kind: str) -> None:
        self._errors[dependency, kind].inc()

    def breaker_state(self, dependency: str, state: int) -> None:
        self.breaker.labels(dependency).set(int(state))


class Metrics:
    """Every metric family of one process, on `registry` (a fresh one per test)."""

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        grpc_buckets: Sequence[float] = DEFAULT_GRPC_BUCKETS,
    ) -> None:
        self.registry = registry
        # With WORKERS > 1 the per-call metrics are flushed into prometheus_client's files.
        self.needs_flush = multiprocess_mode()
        self._per_call = _Factory(registry, flushed=self.needs_flush)
        self.grpc = GrpcMetrics(registry, grpc_buckets, self._per_call)
        self.dependencies = DependencyMetrics(registry, self._per_call)
        lookups = self._per_call.counter(
            "movieservice_cache_lookups_total",
            "Cache lookups by cache (movie, top_rated, geo) and result (hit, miss, negative_hit, error).",
            ["cache", "result"],
        )
        coalesced = Counter(
            "movieservice_cache_coalesced_total",
            "Misses that did not read the store themselves but waited for another caller's read "
            "(in_process: same worker; lease: another worker or instance held the fill lease).",
            ["how"],
            registry=registry,
        )
        self._early_refreshes = Counter(
            "movieservice_cache_early_refreshes_total",
            "Cached movies refreshed before expiry by probabilistic early expiration (XFetch).",
            registry=registry,
        )
        fallbacks = Counter(
            "movieservice_cache_fallbacks_total",
            "Reads answered from the store because the cache was unavailable, by RPC.",
            ["rpc"],
            registry=registry,
        )
        repairs = Counter(
            "movieservice_cache_repairs_total",
            "Writes whose cache update failed (recorded) and later applied by the repair loop (applied).",
            ["result"],
            registry=registry,
        )
        rebuilds = Counter(
            "movieservice_index_rebuilds_total",
            "Rebuilds of a Redis index from the store.",
            ["index"],
            registry=registry,
        )
        self._fill_lag = Histogram(
            "movieservice_cache_fill_lag_seconds",
            "Time from answering a miss to the movie being in the cache (population lag).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        fills = Counter(
            "movieservice_cache_fills_total",
            "Cache fills after a store read, by result: applied, or refused (its fill lease was revoked by a "
            "write or lost with Redis' data, or a newer version was already cached).",
            ["result"],
            registry=registry,
        )
        auth_failures = Counter(
            "movieservice_auth_failures_total",
            "Upserts refused before validation, by reason: missing (no bearer credential), invalid "
            "(not a known token), writes_disabled (no writers configured), rate_limited (too many "
            "failures from the caller's address).",
            ["reason"],
            registry=registry,
        )
        # Label children looked up once: recording is then one increment.
        self._lookups = {(c, r): lookups.labels(c, r) for c in CACHES for r in LOOKUP_RESULTS}
        self._coalesced = {how: coalesced.labels(how) for how in ("in_process", "lease")}
        self._fallbacks = {rpc: fallbacks.labels(rpc) for rpc in ("Get", "TopRated", "Nearby")}
        self._repairs = {result: repairs.labels(result) for result in ("recorded", "applied")}
        self._rebuilds = {index: rebuilds.labels(index) for index in ("top_rated", "geo")}
        self._auth_failures = {reason: auth_failures.labels(reason) for reason in AUTH_FAILURE_REASONS}
        # Recorded by movieservice.tracing (from the exporter's thread too: a locked counter).
        self.trace_spans_dropped = Counter(
            "movieservice_trace_spans_dropped_total",
            "Spans not delivered to the trace collector, by reason: queue_full (the export queue, "
            "OTEL_BSP_MAX_QUEUE_SIZE, was full: the collector is slow or down) or export_failed (the "
            "exporter gave up on a batch). Calls never wait for the collector; their spans are dropped.",
            ["reason"],
            registry=registry,
        )
        for reason in SPAN_DROP_REASONS:
            self.trace_spans_dropped.labels(reason)
        self._fills = {result: fills.labels(result) for result in ("applied", "refused")}
        for dependency in DEPENDENCIES:
            self.dependencies.breaker_state(dependency, 0)

    def flush(self) -> None:
        """Add what the per-call metrics counted since the last flush to
        prometheus_client's metrics (with WORKERS > 1; otherwise nothing to do)."""
        if self.needs_flush:
            for metric in self._per_call.made:
                metric.flush()

    # ServiceEvents (movieservice.core.ports)

    def cache_lookup(self, cache: str, result: str) -> None:
        self._lookups[cache, result].inc()

    def coalesced(self, how: str) -> None:
        self._coalesced[how].inc()

    def early_refresh(self) -> None:
        self._early_refreshes.inc()

    def fallback(self, rpc: str) -> None:
        self._fallbacks[rpc].inc()

    def cache_repair(self, result: str) -> None:
        self._repairs[result].inc()

    def index_rebuilt(self, index: str) -> None:
        self._rebuilds[index].inc()

    def fill_lag(self, seconds: float) -> None:
        self._fill_lag.observe(seconds)

    def fill(self, result: str) -> None:
        self._fills[result].inc()

    def auth_failure(self, reason: str) -> None:
        self._auth_failures[reason].inc()
