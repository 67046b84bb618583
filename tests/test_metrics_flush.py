"""The lock-free per-call metrics report what prometheus_client's own would:
read at scrape time, or flushed into prometheus_client's metrics (WORKERS > 1,
where the supervisor sums their files)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from movieservice.metrics import _Factory

BUCKETS = (0.005, 0.01, 0.1, 1.0)
observations = st.lists(st.floats(0, 5, allow_nan=False), max_size=40)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def reference(first: list[float], second: list[float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("calls_total", "", ["method"], registry=registry)
    histogram = Histogram("call_seconds", "", ["method"], buckets=BUCKETS, registry=registry)
    counter.labels("Get")
    histogram.labels("Get")
    for value in [*first, *second]:
        counter.labels("Get").inc()
        histogram.labels("Get").observe(value)
    return registry


@given(first=observations, second=observations)
def test_read_at_scrape_time_and_flushed_both_equal_prometheus_clients_own(first, second):
    expected = samples(reference(first, second))
    for flushed in (False, True):
        registry = CollectorRegistry()
        make = _Factory(registry, flushed=flushed)
        counter = make.counter("calls_total", "", ["method"]).labels("Get")
        histogram = make.histogram("call_seconds", "", ["method"], BUCKETS).labels("Get")
        for batch in (first, second):  # flushed twice: each flush adds only what is new
            for value in batch:
                counter.inc()
                histogram.observe(value)
            for metric in make.made:
                if flushed:
                    metric.flush()
        got = samples(registry)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert abs(got[key] - value) < 1e-9, (flushed, key, got[key], value)
