"""Upsert: write-through, and the repairs that keep it honest when the cache is down.

The store (the source of truth) takes the write first; then the cache, before
the call returns. When the cache cannot take it, a durable repair is recorded
in the store before the write is acknowledged, and every server process
applies such repairs before it trusts its cache again (`CacheRepairs`).

A process can also die between the two (killed, out of memory, its machine
lost): the store has the write, the cache the old copy, and nobody is left to
record a repair. So a write of an existing movie first records its repair as
an intent, due only once the write must have ended; the writer clears it
after its cache write, and if it never does, the intent comes due and any
process applies it: the old copy lives seconds, not its TTL.
"""

from __future__ import annotations

import asyncio
import logging

from movieservice.core.background import Background
from movieservice.core.deadline import Deadline
from movieservice.core.errors import InvalidArgument
from movieservice.core.ports import (
    Cache,
    CacheRepair,
    CacheUnavailable,
    DependencyError,
    ServiceEvents,
    Store,
    UpsertOutcome,
)
from movieservice.core.ranking import Ranking
from movieservice.core.store_calls import store_errors
from movieservice.core.tracing import CACHE_REPAIR, NO_TRACING, REPAIRS, Tracer
from movieservice.core.validation import check_upsert
from movieservice.core.writers import Credentials, Writers
from movieservice.proto.movies.v1.movies_pb2 import Movie

log = logging.getLogger(__name__)

_REPAIR_RETRY_SECONDS = 0.1
# How long after a write's own timeout its intent comes due: room for the
# cache write (Redis calls time out after 0.5 s) and clocks a little apart.
_INTENT_MARGIN_SECONDS = 2.0


class CacheRepairs:
    """The durable to-do list of cache updates that failed, shared by every process."""

    def __init__(
        self,
        cache: Cache,
        store: Store,
        events: ServiceEvents,
        ranking: Ranking,
        *,
        interval_seconds: float = 1.0,
        timeout_seconds: float = 5.0,
        tracer: Tracer = NO_TRACING,
    ) -> None:
        self._cache = cache
        self._store = store
        self._events = events
        self._ranking = ranking
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._tracer = tracer
        self._wakeup = asyncio.Event()

    async def record(self, movie_id: str) -> None:
        """Remember that `movie_id`'s cached copy may be outdated. Given the
        repairs' own timeout rather than the caller's: the write it covers has
        happened, and without this record the cache could keep the old movie."""
        with store_errors():
            await self._store.record_cache_repair(movie_id, self._timeout)
        self._events.cache_repair("recorded")
        self._wakeup.set()

    async def intend(self, movie_id: str, timeout: float) -> CacheRepair:
        """Before writing `movie_id` (within `timeout`): a repair that comes due
        only if the write has not cleared it by the time it must have ended."""
        with store_errors():
            return await self._store.record_cache_repair(
                movie_id, timeout, due_in_seconds=timeout + _INTENT_MARGIN_SECONDS
            )

    async def fulfilled(self, intent: CacheRepair) -> None:
        """The write `intent` covers reached the cache: forget it (if this
        fails, the intent comes due and is applied, which changes nothing)."""
        try:
            await self._store.clear_cache_repair(intent, self._timeout)
        except DependencyError as error:
            log.debug("write intent for %s left to come due: %s", intent.movie_id, error)

    async def apply(self) -> int:
        """Apply to the cache the current version of every movie whose write
        could not reach it; returns how many. Raises DependencyError."""
        # Asked every second by every process, mostly to hear "nothing":
        # untraced, or each would be a trace. Applying repairs is traced.
        with self._tracer.untraced():
            repairs = await self._store.cache_repairs(self._timeout)
        if not repairs:
            return 0
        with self._tracer.span(CACHE_REPAIR) as span:
            span.set_attribute(REPAIRS, len(repairs))
            for repair in repairs:
                stored = await self._store.get_movie(repair.movie_id, self._timeout)
                if stored is not None:
                    await self._cache.write_movie(stored, self._ranking.entry(stored))
                await self._store.clear_cache_repair(repair, self._timeout)
                self._events.cache_repair("applied")
            log.info("applied %d deferred cache updates", len(repairs))
        return len(repairs)

    def wake(self) -> None:
        """Look at the to-do list now rather than at the next interval."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: apply repairs, at once after a failed write, else every
        interval (writes made by other processes). Outlives any error: a repair
        that fails is retried, since the to-do list in the store still holds it."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            if stop.is_set():
                return
            try:
                if self._cache.available():
                    await self.apply()
            except DependencyError as error:
                log.debug("deferred cache updates not applied yet: %s", error)
                await asyncio.sleep(_REPAIR_RETRY_SECONDS)
                self._wakeup.set()
            except Exception:
                log.exception("deferred cache updates failed; retrying in %.0f s", self._interval)


class MovieWrites:
    def __init__(
        self,
        cache: Cache,
        store: Store,
        ranking: Ranking,
        writers: Writers,
        repairs: CacheRepairs,
        background: Background,
    ) -> None:
        self._cache = cache
        self._store = store
        self._ranking = ranking
        self._writers = writers
        self._repairs = repairs
        self._background = background

    async def upsert(self, movie: Movie | None, credentials: Credentials, deadline: Deadline) -> UpsertOutcome:
        """Create or replace `movie` (None: the request had none), for the writer `credentials` identify.

        PermissionDenied, Unauthenticated, ResourceExhausted, InvalidArgument, Unavailable, DeadlineExceeded.
        """
        writer = self._writers.check(credentials)
        problems = check_upsert(movie)
        if problems:
            raise InvalidArgument(problems)
        assert movie is not None
        written = Movie()
        written.CopyFrom(movie)
        written.id = written.id.lower()
        # Once begun, a write runs to its end even if the caller goes away: a
        # write the store took must reach the cache (or be recorded for repair)
        # whether or not anyone still waits for the answer.
        return await self._background.finish(self._write(written, writer, deadline.timeout()))

    async def _write(self, movie: Movie, writer: str, timeout: float) -> UpsertOutcome:
        # A movie without an id is new: the store names it, no copy of it can be cached.
        intent = await self._repairs.intend(movie.id, timeout) if movie.id else None
        with store_errors():
            outcome = await self._store.upsert_movie(movie, timeout)
        stored = outcome.stored
        try:
            await self._cache.write_movie(stored, self._ranking.entry(stored))
            if intent is not None:
                self._background.spawn(self._repairs.fulfilled(intent))
        except CacheUnavailable as error:
            # The store has the write; the cache may still hold the old movie.
            # Record that durably before acknowledging, so that every server
            # process repairs the cache before trusting it again.
            await self._repairs.record(stored.movie.id)
            log.warning("movie %s written; cache update deferred: %s", stored.movie.id, error)
        log.info(
            "upsert movie=%s version=%d created=%s writer=%s", stored.movie.id, stored.version, outcome.created, writer
        )
        return outcome
