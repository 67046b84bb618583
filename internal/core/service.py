"""The use cases wired to one cache and one store, and the work they share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from movieservice.core.background import Background
from movieservice.core.indexes import REBUILD_TIMEOUT_SECONDS, Indexes
from movieservice.core.nearby import NearbyTheaters
from movieservice.core.paging import PageTokens
from movieservice.core.ports import Cache, ServiceEvents, Store
from movieservice.core.ranking import Ranking
from movieservice.core.reads import MovieReads
from movieservice.core.top_rated import TopRatedPages
from movieservice.core.tracing import NO_TRACING, Tracer
from movieservice.core.writers import FAILURES_PER_MINUTE, FailureLimiter, Writers
from movieservice.core.writes import CacheRepairs, MovieWrites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    """Tuning of the use cases (what an operator can set comes from Settings)."""

    # Each writer's name and bearer token.
    writer_tokens: Mapping[str, str] = field(default_factory=dict)
    # Client-certificate subjects (mTLS) that may write without a token.
    writer_subjects: Sequence[str] = ()
    # Failed authentications per client address per minute; 0: no limit.
    auth_failures_per_minute: int = FAILURES_PER_MINUTE
    # Keys of TopRated page tokens: the first signs, all verify (none: a random one).
    page_token_keys: Sequence[str] = ()
    ranking: Ranking = field(default_factory=Ranking)
    # Longest a background store call (early refresh, repair) may take.
    background_timeout_seconds: float = 5.0
    # How long other processes wait for the process that holds a movie's fill lease.
    fill_lease_seconds: float = 2.0
    repair_interval_seconds: float = 1.0
    # Longest an index rebuild's read of a whole collection may take.
    index_rebuild_timeout_seconds: float = REBUILD_TIMEOUT_SECONDS


@dataclass
class MovieService:
    """Get (`reads`), Upsert (`writes`), TopRated (`top_rated`) and Nearby
    (`nearby`), with the index keeper, the repair loop and the background work
    they share. `start()` begins the background loops; `close()` ends them."""

    reads: MovieReads
    writes: MovieWrites
    top_rated: TopRatedPages
    nearby: NearbyTheaters
    indexes: Indexes
    repairs: CacheRepairs
    background: Background
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _loops: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        cache: Cache,
        store: Store,
        events: ServiceEvents,
        options: ServiceOptions = ServiceOptions(),
        tracer: Tracer = NO_TRACING,
    ) -> MovieService:
        """`tracer`: the spans of the work no library sees (see core/tracing.py)."""
        background = Background()
        ranking = options.ranking
        reads = MovieReads(
            cache,
            store,
            events,
            background,
            fill_lease_seconds=options.fill_lease_seconds,
            refresh_timeout_seconds=options.background_timeout_seconds,
            tracer=tracer,
        )
        indexes = Indexes(cache, store, events, ranking, tracer, options.index_rebuild_timeout_seconds)
        repairs = CacheRepairs(
            cache,
            store,
            events,
            ranking,
            interval_seconds=options.repair_interval_seconds,
            timeout_seconds=options.background_timeout_seconds,
            tracer=tracer,
        )
        # Before the cache is trusted again after an outage, the writes it missed are applied.
        cache.set_recovery_hook(repairs.apply)
        return cls(
            reads=reads,
            writes=MovieWrites(
                cache,
                store,
                ranking,
                Writers(
                    options.writer_tokens,
                    events,
                    options.writer_subjects,
                    FailureLimiter.per_minute(options.auth_failures_per_minute),
                ),
                repairs,
                background,
            ),
            top_rated=TopRatedPages(
                cache, store, events, ranking, reads, indexes, background, PageTokens(options.page_token_keys)
            ),
            nearby=NearbyTheaters(cache, store, events, indexes, background),
            indexes=indexes,
            repairs=repairs,
            background=background,
        )

    def start(self, *, warm_up: bool = True) -> None:
        """Start the repair loop and (unless told not to) build missing indexes."""
        self._loops.append(asyncio.ensure_future(self.repairs.run(self._stop)))
        if warm_up:
            self.background.spawn(self.indexes.warm_up())

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the repair loop and wait (up to `timeout`) for background work."""
        self._stop.set()
        self.repairs.wake()
        if self._loops:
            await asyncio.wait(self._loops, timeout=timeout)
            for loop in self._loops:
                loop.cancel()
        await self.background.drain(timeout)
