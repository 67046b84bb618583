"""The derived indexes in the cache (TopRated sorted sets, the theaters' GEO
index): rebuilt from the store when missing, by one process at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from movieservice.core.deadline import Deadline
from movieservice.core.ports import Cache, RankEntry, ServiceEvents, Store
from movieservice.core.ranking import Ranking
from movieservice.core.store_calls import store_errors
from movieservice.core.tracing import ENTRIES, INDEX, INDEX_REBUILD, INDEX_WAIT, INDEX_WARM_UP, NO_TRACING, Tracer

log = logging.getLogger(__name__)

TOP_INDEX_LOCK = "top-index"
GEO_INDEX_LOCK = "geo-index"
# Rebuilding an index reads a whole collection: allow it more than one request's time
# (the default of INDEX_REBUILD_TIMEOUT_SECONDS).
REBUILD_TIMEOUT_SECONDS = 120.0
_POLL_SECONDS = 0.05
_INDEX_NAMES = {TOP_INDEX_LOCK: "top_rated", GEO_INDEX_LOCK: "geo"}


class Indexes:
    def __init__(
        self,
        cache: Cache,
        store: Store,
        events: ServiceEvents,
        ranking: Ranking,
        tracer: Tracer = NO_TRACING,
        timeout_seconds: float = REBUILD_TIMEOUT_SECONDS,
    ) -> None:
        self._timeout = timeout_seconds
        self._cache = cache
        self._store = store
        self._events = events
        self._ranking = ranking
        self._tracer = tracer

    async def ensure_top(self, deadline: Deadline | None) -> None:
        """Rebuild the TopRated index unless it is there (or another process is
        rebuilding it and finishes before `deadline`). Raises CacheUnavailable,
        and Unavailable or DeadlineExceeded when the store read fails."""
        await self._ensure(TOP_INDEX_LOCK, self._cache.top_index_ready, self.rebuild_top, deadline)

    async def ensure_geo(self, deadline: Deadline | None) -> None:
        await self._ensure(GEO_INDEX_LOCK, self._cache.geo_index_ready, self.rebuild_geo, deadline)

    async def rebuild_top(self) -> None:
        async def entries() -> list[RankEntry]:
            with store_errors():
                ratings = await self._store.movie_ratings(self._timeout)
            return [self._ranking.entry(stored) for stored in ratings]

        with self._tracer.span(INDEX_REBUILD) as span:
            span.set_attribute(INDEX, "top_rated")
            count = await self._cache.rebuild_top_index(entries)
            span.set_attribute(ENTRIES, count)
            self._events.index_rebuilt("top_rated")
            log.info("rebuilt the TopRated index: %d movies", count)

    async def rebuild_geo(self) -> None:
        with self._tracer.span(INDEX_REBUILD) as span:
            span.set_attribute(INDEX, "geo")
            with store_errors():
                theaters = await self._store.theaters(self._timeout)
            await self._cache.rebuild_geo_index(theaters)
            span.set_attribute(ENTRIES, len(theaters))
            self._events.index_rebuilt("geo")
            log.info("rebuilt the theater index: %d theaters", len(theaters))

    async def _ensure(
        self,
        lock: str,
        is_ready: Callable[[], Awaitable[bool]],
        rebuild: Callable[[], Awaitable[None]],
        deadline: Deadline | None,
    ) -> None:
        """One process rebuilds (under a lock in the cache); the others wait for it."""
        give_up = deadline.at if deadline is not None else time.monotonic() + self._timeout
        token = await self._cache.try_lock(lock, self._timeout)
        if token is None:
            # Another process is rebuilding: wait for it (or for the lock).
            with self._tracer.span(INDEX_WAIT) as span:
                span.set_attribute(INDEX, _INDEX_NAMES.get(lock, lock))
                while token is None:
                    if await is_ready() or time.monotonic() >= give_up:
                        return
                    await asyncio.sleep(_POLL_SECONDS)
                    token = await self._cache.try_lock(lock, self._timeout)
        try:
            if not await is_ready():
                await rebuild()
        finally:
            await self._cache.unlock(lock, token)

    async def warm_up(self) -> None:
        """Build missing indexes now rather than on the first request (best effort)."""
        with self._tracer.span(INDEX_WARM_UP):  # one trace for the checks and rebuilds of a start
            for name, ensure in (("top_rated", self.ensure_top), ("geo", self.ensure_geo)):
                try:
                    await ensure(None)
                except Exception as error:  # noqa: BLE001 - warm-up is best effort; requests retry
                    log.warning("index warm-up (%s) failed: %s", name, error)
