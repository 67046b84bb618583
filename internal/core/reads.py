"""Get: cache-aside, and loading the movies a TopRated page needs.

A hit answers from the cache. A miss reads the store once per process
(single flight) and, across processes, once per fill lease; the answer does
not wait for the cache fill, which runs in the background and lands only if
nothing newer is known (versions, see `Cache.put_movie`). A hit close to
expiry refreshes the entry early (XFetch), once at a time per movie.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
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
from movieservice.core.validation import check_movie_id

log = logging.getLogger(__name__)
T = TypeVar("T")

_FILL_POLL_SECONDS = 0.005


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
    ) -> None:
        self._cache = cache
        self._store = store
        self._events = events
        self._background = background
        self._lease_seconds = fill_lease_seconds
        self._refresh_timeout = refresh_timeout_seconds
        self._clock = clock
        self._loads: SingleFlight[bytes | None] = SingleFlight()
        self._batch_loads: SingleFlight[dict[str, StoredMovie]] = SingleFlight()
        self._refreshing: set[str] = set()

    async def get(self, movie_id: str, deadline: Deadline) -> bytes:
        """The serialized Movie. InvalidArgument, NotFound, Unavailable, DeadlineExceeded."""
        problems = check_movie_id("id", movie_id)
        if problems:
            raise InvalidArgument(problems)
        movie_id = movie_id.lower()
        try:
            cached = await self._cache.get_movie(movie_id)
        except CacheUnavailable:
            # No coalescing here: a shared read that began before a write the
            # cache could not record might be older than that write.
            self._events.cache_lookup("movie", "error")
            self._events.fallback("Get")
            with store_errors():
                stored = await self._store.get_movie(movie_id, deadline.timeout())
            return _found(movie_id, None if stored is None else stored.data)
        if cached is None:
            self._events.cache_lookup("movie", "miss")
            return _found(movie_id, await self._load(movie_id, deadline))
        if cached.refresh_early:
            self._refresh_soon(movie_id)
        if cached.data is None:
            self._events.cache_lookup("movie", "negative_hit")
            raise NotFound(f"movie {movie_id} not found")
        self._events.cache_lookup("movie", "hit")
        return cached.data

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
                with store_errors():
                    return await flights.run(key, functools.partial(work, timeout), timeout)
            except TimeoutError:
                raise DeadlineExceeded(f"deadline exceeded waiting for the {what}") from None
            except DeadlineExceeded:
                if not (joined and deadline.remaining() > 0):
                    raise

    async def _load_once(self, movie_id: str, timeout: float) -> bytes | None:
        """Read the store unless another process holds the fill lease for this
        movie, in which case wait (briefly) for its fill instead."""
        lease = f"fill:{movie_id}"
        token = None
        try:
            token = await self._cache.try_lock(lease, self._lease_seconds)
            # With the lease, look again: the previous holder may have filled
            # the entry between this caller's miss and now.
            filled = (
                await self._cache.get_movie(movie_id)
                if token is not None
                else await self._wait_for_fill(movie_id, min(timeout, self._lease_seconds))
            )
            if filled is not None:
                if token is not None:
                    await self._cache.unlock(lease, token)
                self._events.coalesced("lease")
                return filled.data
        except CacheUnavailable:
            pass
        epoch = self._cache.recovery_epoch()
        started = self._clock()
        stored = await self._store.get_movie(movie_id, timeout)
        answered = self._clock()
        self._background.spawn(self._fill(movie_id, stored, epoch, answered - started, token, answered))
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
        lease: str | None,
        answered: float,
    ) -> None:
        try:
            await self._cache.put_movie(movie_id, stored, load_seconds, epoch)
            self._events.fill_lag(self._clock() - answered)
            if lease is not None:
                await self._cache.unlock(f"fill:{movie_id}", lease)
        except CacheUnavailable as error:
            log.debug("could not cache movie %s: %s", movie_id, error)

    def _refresh_soon(self, movie_id: str) -> None:
        """Reload a hot movie before its entry expires (XFetch), once at a time."""
        if movie_id in self._refreshing:
            return
        self._refreshing.add(movie_id)
        self._background.spawn(self._refresh(movie_id))

    async def _refresh(self, movie_id: str) -> None:
        try:
            epoch = self._cache.recovery_epoch()
            started = self._clock()
            stored = await self._store.get_movie(movie_id, self._refresh_timeout)
            await self._cache.put_movie(movie_id, stored, self._clock() - started, epoch)
            self._events.early_refresh()
        except DependencyError as error:
            log.debug("early refresh of %s failed: %s", movie_id, error)
        finally:
            self._refreshing.discard(movie_id)

    async def load_many(self, movie_ids: Sequence[str], deadline: Deadline, *, coalesce: bool) -> dict[str, bytes]:
        """The serialized movies of `movie_ids` the store holds, read in one call
        (shared with concurrent callers asking for the same ids when `coalesce`),
        and cached in the background."""
        epoch = self._cache.recovery_epoch()
        started = self._clock()

        async def load(timeout: float) -> dict[str, StoredMovie]:
            return await self._store.get_movies(movie_ids, timeout)

        if coalesce:
            stored, shared = await self._share(self._batch_loads, tuple(movie_ids), load, deadline, "movies")
        else:
            with store_errors():
                stored, shared = await load(deadline.timeout()), False
        answered = self._clock()
        if shared:
            self._events.coalesced("in_process")
        else:
            for movie_id, item in stored.items():
                self._background.spawn(self._fill(movie_id, item, epoch, answered - started, None, answered))
        return {movie_id: item.data for movie_id, item in stored.items()}


def _found(movie_id: str, data: bytes | None) -> bytes:
    if data is None:
        raise NotFound(f"movie {movie_id} not found")
    return data
