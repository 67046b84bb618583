"""Get: cache-aside, and loading the movies a TopRated page needs.

A hit answers from the cache. A miss reads the store once per process
(single flight) and, across processes, once per fill lease; the answer does
not wait for the cache fill, which runs in the background and lands only if
the lease taken before the store read survived (no write of the movie and no
loss of the cache's data since) and nothing newer is known (versions, see
`Cache.put_movie`). A hit close to
expiry refreshes the entry early (XFetch), once at a time per movie.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from movieservice.core.background import Background
from movieservice.core.deadline import Deadline
from movieservice.core.errors import DeadlineExceeded, InvalidArgument, NotFound
from movieservice.core.flights import SingleFlight
from movieservice.core.ports import (
    Cache,
    CachedMovie,
    CacheUnavailable,
    DependencyError,
    ServiceEvents,
    Store,
    StoredMovie,
)
from movieservice.core.store_calls import store_errors
from movieservice.core.tracing import (
    CACHE,
    CACHE_FILL,
    CACHE_LOOKUP,
    EARLY_REFRESH,
    FILL_RESULT,
    LEASE,
    LEASE_WAIT,
    NO_TRACING,
    RESULT,
    SHARED,
    SINGLE_FLIGHT,
    Tracer,
)
from movieservice.core.validation import check_movie_id

log = logging.getLogger(__name__)
T = TypeVar("T")

_FILL_POLL_SECONDS = 0.005


class CacheOutcome(StrEnum):
    """How a Get's movie lookup ended, in the words of its span's `movieservice.cache.result`
    (and of `movieservice_cache_lookups_total`, which counts a near_hit as a hit). The
    servicer sends it to the client as `x-cache` trailing metadata."""

    HIT = "hit"  # from Redis
    NEAR_HIT = "near_hit"  # from this process' memory (the near cache)
    NEGATIVE_HIT = "negative_hit"  # known not to exist
    MISS = "miss"  # read from the store (or another caller's read of it), then cached
    ERROR = "error"  # the cache could not be read: answered from the store alone


@dataclass(slots=True)
class MovieRead:
    """A Get's answer: the serialized Movie (None: there is none), how the cache
    lookup ended, and the seconds spent in it and in the store (0.0: not read).
    (A slotted class: one per Get, made faster than a NamedTuple.)"""

    movie_id: str
    data: bytes | None
    outcome: CacheOutcome
    cache_seconds: float
    store_seconds: float

    def movie(self) -> bytes:
        """The serialized Movie, or NotFound."""
        return _found(self.movie_id, self.data)


class MovieReads:
    def __init__(
        self,
        cache: Cache,
        store: Store,
        events: ServiceEvents,
        background: Background,
        *,
        fill_lease_seconds: float = 2.0,
        refresh_timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        tracer: Tracer = NO_TRACING,
    ) -> None:
        self._cache = cache
        self._store = store
        self._events = events
        self._background = background
        self._lease_seconds = fill_lease_seconds
        self._refresh_timeout = refresh_timeout_seconds
        self._clock = clock
        self._tracer = tracer
        self._loads: SingleFlight[bytes | None] = SingleFlight()
        self._batch_loads: SingleFlight[dict[str, StoredMovie]] = SingleFlight()
        self._refreshing: set[str] = set()

    async def get(self, movie_id: str, deadline: Deadline) -> bytes:
        """The serialized Movie. InvalidArgument, NotFound, Unavailable, DeadlineExceeded."""
        return (await self.read(movie_id, deadline)).movie()

    async def read(self, movie_id: str, deadline: Deadline) -> MovieRead:
        """The movie (None when there is none) and how the cache answered.
        InvalidArgument, Unavailable, DeadlineExceeded."""
        problems = check_movie_id("id", movie_id)
        if problems:
            raise InvalidArgument(problems)
        movie_id = movie_id.lower()
        clock = self._clock
        started = clock()
        try:
            with self._tracer.span(CACHE_LOOKUP) as span:
                span.set_attribute(CACHE, "movie")
                try:
                    cached = await self._cache.get_movie(movie_id)
                except CacheUnavailable:
                    span.set_attribute(RESULT, CacheOutcome.ERROR.value)
                    raise
                outcome = _outcome(cached)
                span.set_attribute(RESULT, outcome.value)
        except CacheUnavailable:
            # No coalescing here: a shared read that began before a write the
            # cache could not record might be older than that write.
            looked = clock()
            self._events.cache_lookup("movie", "error")
            self._events.fallback("Get")
            with store_errors():
                stored = await self._store.get_movie(movie_id, deadline.timeout())
            data = None if stored is None else stored.data
            return MovieRead(movie_id, data, CacheOutcome.ERROR, looked - started, clock() - looked)
        looked = clock()
        if cached is None:
            self._events.cache_lookup("movie", "miss")
            data = await self._load(movie_id, deadline)
            return MovieRead(movie_id, data, CacheOutcome.MISS, looked - started, clock() - looked)
        if cached.refresh_early:
            self._refresh_soon(movie_id)
        # The metric counts a near hit as a hit (its own near-cache metrics tell them apart).
        self._events.cache_lookup("movie", "hit" if cached.data is not None else "negative_hit")
        return MovieRead(movie_id, cached.data, outcome, looked - started, 0.0)

    async def _load(self, movie_id: str, deadline: Deadline) -> bytes | None:
        """Read a missed movie once for all concurrent callers of this process."""
        data, shared = await self._share(
            self._loads, movie_id, lambda timeout: self._load_once(movie_id, timeout), deadline, "movie"
        )
        if shared:
            self._events.coalesced("in_process")
        return data

    async def _share(
        self,
        flights: SingleFlight[T],
        key: Hashable,
        work: Callable[[float], Awaitable[T]],
        deadline: Deadline,
        what: str,
    ) -> tuple[T, bool]:
        """`work(timeout)` shared with the concurrent callers asking for `key`.

        A read another caller started is bounded by that caller's deadline: if
        it runs out first, this caller reads again within its own.
        """
        while True:
            timeout = deadline.timeout()
            joined = flights.running(key)
            try:
                # The work runs in a task started within this span (by the
                # caller that started it): its Redis and MongoDB spans are
                # children of that caller's span; the others' spans show their wait.
                with store_errors(), self._tracer.span(SINGLE_FLIGHT) as span:
                    span.set_attribute(CACHE, what)
                    result = await flights.run(key, functools.partial(work, timeout), timeout)
                    span.set_attribute(SHARED, result[1])
                    return result
            except TimeoutError:
                raise DeadlineExceeded(f"deadline exceeded waiting for the {what}") from None
            except DeadlineExceeded:
                if not (joined and deadline.remaining() > 0):
                    raise

    async def _load_once(self, movie_id: str, timeout: float) -> bytes | None:
        """Read the store under the movie's fill lease, or, while another
        process holds it, wait (briefly) for that process' fill instead."""
        lease = None
        try:
            lease = await self._cache.lease_fill(movie_id, self._lease_seconds)
            # With the lease, look again: the previous holder may have filled
            # the entry between this caller's miss and now.
            if lease is not None:
                filled = await self._cache.get_movie(movie_id)
            else:
                with self._tracer.span(LEASE_WAIT) as span:
                    filled = await self._wait_for_fill(movie_id, min(timeout, self._lease_seconds))
                    span.set_attribute(RESULT, "filled" if filled is not None else "timed_out")
            if filled is not None:
                if lease is not None:
                    await self._cache.release_fill(movie_id, lease)
                self._events.coalesced("lease")
                return filled.data
            if lease is None:  # the holder did not fill in time: read (and fill) here
                lease = await self._cache.lease_fill(movie_id, self._lease_seconds)
        except CacheUnavailable:
            pass
        epoch = self._cache.recovery_epoch()
        started = self._clock()
        stored = await self._store.get_movie(movie_id, timeout)
        answered = self._clock()
        if lease is not None:
            self._background.spawn(self._fill(movie_id, stored, epoch, answered - started, lease, answered))
        return None if stored is None else stored.data

    async def _wait_for_fill(self, movie_id: str, seconds: float) -> CachedMovie | None:
        deadline = self._clock() + seconds
        while self._clock() < deadline:
            await asyncio.sleep(_FILL_POLL_SECONDS)
            cached = await self._cache.get_movie(movie_id)
            if cached is not None:
                return cached
        return None

    async def _fill(
        self,
        movie_id: str,
        stored: StoredMovie | None,
        epoch: int,
        load_seconds: float,
        lease: str,
        answered: float,
    ) -> None:
        """Cache what a store read returned, if its lease (taken before the
        read) survived: no write and no loss of the cache's data since."""
        with self._tracer.span(CACHE_FILL) as span:
            try:
                applied = await self._cache.put_movie(movie_id, stored, load_seconds, epoch, lease)
                self._events.fill("applied" if applied else "refused")
                span.set_attribute(FILL_RESULT, "applied" if applied else "refused")
                if applied:
                    self._events.fill_lag(self._clock() - answered)
            except CacheUnavailable as error:
                span.set_attribute(FILL_RESULT, "error")
                log.debug("could not cache movie %s: %s", movie_id, error)

    def _refresh_soon(self, movie_id: str) -> None:
        """Reload a hot movie before its entry expires (XFetch), once at a time."""
        if movie_id in self._refreshing:
            return
        self._refreshing.add(movie_id)
        self._background.spawn(self._refresh(movie_id))

    async def _refresh(self, movie_id: str) -> None:
        with self._tracer.span(CACHE_FILL) as span:
            span.set_attribute(EARLY_REFRESH, True)
            try:
                lease = await self._cache.lease_fill(movie_id, self._lease_seconds)
                span.set_attribute(LEASE, "acquired" if lease is not None else "held_elsewhere")
                if lease is None:
                    return  # another process is reading it
                epoch = self._cache.recovery_epoch()
                started = self._clock()
                stored = await self._store.get_movie(movie_id, self._refresh_timeout)
                applied = await self._cache.put_movie(movie_id, stored, self._clock() - started, epoch, lease)
                self._events.fill("applied" if applied else "refused")
                span.set_attribute(FILL_RESULT, "applied" if applied else "refused")
                self._events.early_refresh()
            except DependencyError as error:
                span.set_attribute(FILL_RESULT, "error")
                log.debug("early refresh of %s failed: %s", movie_id, error)
            finally:
                self._refreshing.discard(movie_id)

    async def load_many(self, movie_ids: Sequence[str], deadline: Deadline, *, coalesce: bool) -> dict[str, bytes]:
        """The serialized movies of `movie_ids` the store holds, read in one call
        (shared with concurrent callers asking for the same ids when `coalesce`),
        and cached in the background (those whose fill lease this caller got)."""

        async def load(timeout: float) -> dict[str, StoredMovie]:
            leases = await self._lease_fills(movie_ids)
            epoch = self._cache.recovery_epoch()
            started = self._clock()
            stored = await self._store.get_movies(movie_ids, timeout)
            answered = self._clock()
            for movie_id, lease in leases.items():
                fill = self._fill(movie_id, stored.get(movie_id), epoch, answered - started, lease, answered)
                self._background.spawn(fill)
            return stored

        if coalesce:
            stored, shared = await self._share(self._batch_loads, tuple(movie_ids), load, deadline, "movies")
            if shared:
                self._events.coalesced("in_process")
        else:
            with store_errors():
                stored = await load(deadline.timeout())
        return {movie_id: item.data for movie_id, item in stored.items()}

    async def _lease_fills(self, movie_ids: Sequence[str]) -> dict[str, str]:
        """The fill leases of `movie_ids` this caller got (none while the cache is down)."""
        if not self._cache.available():
            return {}
        try:
            leases = await asyncio.gather(*(self._cache.lease_fill(m, self._lease_seconds) for m in movie_ids))
        except CacheUnavailable:
            return {}
        return {movie_id: lease for movie_id, lease in zip(movie_ids, leases, strict=True) if lease is not None}


def _outcome(cached: CachedMovie | None) -> CacheOutcome:
    """A movie lookup's result: hit, near_hit (this process' memory),
    negative_hit (known not to exist) or miss."""
    if cached is None:
        return CacheOutcome.MISS
    if cached.data is None:
        return CacheOutcome.NEGATIVE_HIT
    return CacheOutcome.NEAR_HIT if cached.near else CacheOutcome.HIT


def _found(movie_id: str, data: bytes | None) -> bytes:
    if data is None:
        raise NotFound(f"movie {movie_id} not found")
    return data
