"""The use cases' own spans (core/tracing.py), recorded by a fake tracer:
what each says about a Get, a fill, an index rebuild and a repair."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from movieservice.core.deadline import Deadline
from movieservice.core.errors import NotFound
from movieservice.core.service import MovieService, ServiceOptions
from movieservice.core.tracing import NO_TRACING
from movieservice.proto.movies.v1.movies_pb2 import Imdb, Movie
from tests.support.fakes import FakeCache, FakeStore, RecordedEvents

MOVIE_ID = "573a1390f29313caabcd42e8"


@dataclass
class RecordedSpan:
    name: str
    parent: RecordedSpan | None
    attributes: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


class RecordingTracer:
    """Spans in the order they started, each with its parent (the span current
    where it started, across tasks as contextvars carry it)."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []
        self._current: contextvars.ContextVar[RecordedSpan | None] = contextvars.ContextVar("span", default=None)
        self._quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("quiet", default=False)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[RecordedSpan]:
        span = RecordedSpan(name, self._current.get())
        if not self._quiet.get():
            self.spans.append(span)
        token = self._current.set(span)
        try:
            yield span
        except BaseException:
            span.failed = True
            raise
        finally:
            self._current.reset(token)

    @contextlib.contextmanager
    def untraced(self) -> Iterator[None]:
        token = self._quiet.set(True)
        try:
            yield
        finally:
            self._quiet.reset(token)

    def named(self, name: str) -> list[RecordedSpan]:
        return [span for span in self.spans if span.name == name]


@dataclass
class Traced:
    service: MovieService
    cache: FakeCache
    store: FakeStore
    tracer: RecordingTracer

    async def settle(self) -> None:
        await self.service.background.drain(5)


@pytest.fixture
async def traced() -> AsyncIterator[Traced]:
    cache, store, tracer = FakeCache(), FakeStore(), RecordingTracer()
    options = ServiceOptions(fill_lease_seconds=0.05)
    service = MovieService.create(cache, store, RecordedEvents(), options, tracer)
    yield Traced(service, cache, store, tracer)
    await service.close()


def soon() -> Deadline:
    return Deadline.within(5)


async def test_a_hit_is_one_lookup_span(traced):
    stored = traced.store.add(Movie(id=MOVIE_ID, title="cached"), version=3)
    traced.cache.entries[MOVIE_ID] = (3, stored.data)
    await traced.service.reads.get(MOVIE_ID, soon())
    (lookup,) = traced.tracer.spans
    assert (lookup.name, lookup.attributes) == (
        "movieservice.cache.lookup",
        {"movieservice.cache": "movie", "movieservice.cache.result": "hit"},
    )


async def test_a_miss_looks_up_reads_under_single_flight_and_fills_applied(traced):
    traced.store.add(Movie(id=MOVIE_ID, title="stored"), version=2)
    await traced.service.reads.get(MOVIE_ID, soon())
    await traced.settle()
    (lookup,) = traced.tracer.named("movieservice.cache.lookup")
    assert lookup.attributes["movieservice.cache.result"] == "miss"
    (flight,) = traced.tracer.named("movieservice.cache.single_flight")
    assert flight.attributes == {"movieservice.cache": "movie", "movieservice.single_flight.shared": False}
    (fill,) = traced.tracer.named("movieservice.cache.fill")
    assert fill.attributes == {"movieservice.cache.fill.result": "applied"}
    assert fill.parent is flight, "the fill started within the read it caches"
    assert flight.parent is None and lookup.parent is None  # (no call span here)


async def test_a_negative_entry_is_a_negative_hit(traced):
    traced.cache.entries[MOVIE_ID] = (-1, None)
    with pytest.raises(NotFound):
        await traced.service.reads.get(MOVIE_ID, soon())
    (lookup,) = traced.tracer.spans
    assert lookup.attributes["movieservice.cache.result"] == "negative_hit"


async def test_a_near_cache_hit_says_so(traced):
    from movieservice.core.ports import CachedMovie

    async def near_hit(movie_id: str) -> CachedMovie:
        return CachedMovie(b"movie", near=True)

    traced.cache.get_movie = near_hit  # type: ignore[method-assign]
    await traced.service.reads.get(MOVIE_ID, soon())
    (lookup,) = traced.tracer.spans
    assert lookup.attributes["movieservice.cache.result"] == "near_hit"


async def test_a_cache_that_is_down_is_an_error_lookup(traced):
    traced.store.add(Movie(id=MOVIE_ID, title="stored"))
    traced.cache.unavailable = True
    await traced.service.reads.get(MOVIE_ID, soon())
    (lookup,) = traced.tracer.spans
    assert lookup.attributes["movieservice.cache.result"] == "error"
    assert lookup.failed


async def test_callers_who_join_a_read_show_a_shared_single_flight(traced):
    traced.store.add(Movie(id=MOVIE_ID, title="popular"))
    traced.store.delay = 0.05
    await asyncio.gather(*(traced.service.reads.get(MOVIE_ID, soon()) for _ in range(5)))
    shared = [s.attributes["movieservice.single_flight.shared"] for s in traced.tracer.named(
        "movieservice.cache.single_flight")]  # fmt: skip
    assert sorted(shared) == [False, True, True, True, True]


async def test_a_lease_held_elsewhere_is_a_lease_wait(traced):
    traced.store.add(Movie(id=MOVIE_ID, title="stored"))
    traced.cache.leases[MOVIE_ID] = "another process"
    await traced.service.reads.get(MOVIE_ID, soon())
    (wait,) = traced.tracer.named("movieservice.cache.lease_wait")
    assert wait.attributes == {"movieservice.cache.result": "timed_out"}
    assert wait.parent is traced.tracer.named("movieservice.cache.single_flight")[0]


async def test_a_fill_whose_lease_a_write_revoked_is_refused(traced):
    traced.store.add(Movie(id=MOVIE_ID, title="old"))
    traced.store.delay = 0.05
    reading = asyncio.ensure_future(traced.service.reads.get(MOVIE_ID, soon()))
    await asyncio.sleep(0.02)
    traced.cache.leases.pop(MOVIE_ID)  # what a write does to the lease
    await reading
    await traced.settle()
    (fill,) = traced.tracer.named("movieservice.cache.fill")
    assert fill.attributes == {"movieservice.cache.fill.result": "refused"}


async def test_index_rebuilds_and_the_warm_up_are_spans(traced):
    traced.store.add(Movie(id=MOVIE_ID, title="rated", imdb=Imdb(rating=8.0, votes=5000)))
    await traced.service.indexes.warm_up()
    (warm_up,) = traced.tracer.named("movieservice.index.warm_up")
    rebuilds = traced.tracer.named("movieservice.index.rebuild")
    assert [(s.attributes["movieservice.index"], s.parent) for s in rebuilds] == [
        ("top_rated", warm_up),
        ("geo", warm_up),
    ]
    assert rebuilds[0].attributes["movieservice.index.entries"] == 1


async def test_the_repair_poll_is_untraced_and_applying_repairs_is_a_span(traced):
    assert await traced.service.repairs.apply() == 0
    assert traced.tracer.spans == [], "asking the to-do list (every second) makes no span"
    stored = traced.store.add(Movie(id=MOVIE_ID, title="written"), version=4)
    await traced.store.record_cache_repair(MOVIE_ID, 1.0)
    assert await traced.service.repairs.apply() == 1
    (repair,) = traced.tracer.spans
    assert (repair.name, repair.attributes) == ("movieservice.cache.repair", {"movieservice.cache.repairs": 1})
    assert traced.cache.entries[MOVIE_ID] == (4, stored.data)


def test_no_tracing_is_one_object_doing_nothing():
    with NO_TRACING.span("a") as first, NO_TRACING.span("b") as second, NO_TRACING.untraced():
        first.set_attribute("key", "value")
    assert first is second
