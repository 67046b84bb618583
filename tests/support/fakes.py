"""In-memory fakes of the Cache and Store ports, for unit tests of the use
cases (tests/core). They keep the ports' promises (versions, fences, locks)
in plain dictionaries; the real adapters are proven against real servers in
the other tests."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from movieservice.core.geo import distances_km
from movieservice.core.ports import (
    CachedMovie,
    CacheRepair,
    CacheUnavailable,
    RankedId,
    RankEntry,
    StoredMovie,
    StoreTimeout,
    StoreUnavailable,
    TheaterCandidate,
    TopCursor,
    UpsertOutcome,
)
from movieservice.proto.movies.v1.movies_pb2 import Movie, Theater


@dataclass
class FakeStore:
    movies: dict[str, StoredMovie] = field(default_factory=dict)
    theater_list: list[Theater] = field(default_factory=list)
    repairs: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (count, due at)
    calls: Counter[str] = field(default_factory=Counter)
    # What every call does first: fail with this error, or wait this long.
    failure: Exception | None = None
    delay: float = 0.0

    def add(self, movie: Movie, version: int = 1) -> StoredMovie:
        stored = StoredMovie(movie, version)
        self.movies[movie.id] = stored
        return stored

    async def _enter(self, name: str, timeout: float) -> None:
        self.calls[name] += 1
        if self.failure is not None:
            raise self.failure
        if self.delay:
            if self.delay > timeout:
                await asyncio.sleep(timeout)
                raise StoreTimeout("MongoDB did not answer before the deadline")
            await asyncio.sleep(self.delay)

    async def get_movie(self, movie_id: str, timeout: float) -> StoredMovie | None:
        found = self.movies.get(movie_id)  # what the store held when the read began
        await self._enter("get_movie", timeout)
        return found

    async def get_movies(self, movie_ids: Sequence[str], timeout: float) -> dict[str, StoredMovie]:
        await self._enter("get_movies", timeout)
        return {i: self.movies[i] for i in movie_ids if i in self.movies}

    async def upsert_movie(self, movie: Movie, timeout: float) -> UpsertOutcome:
        await self._enter("upsert_movie", timeout)
        written = Movie()
        written.CopyFrom(movie)
        if not written.id:
            written.id = secrets.token_hex(12)
        before = self.movies.get(written.id)
        stored = StoredMovie(written, (before.version if before else 0) + 1)
        self.movies[written.id] = stored
        return UpsertOutcome(stored, created=before is None)

    async def movie_ratings(self, timeout: float) -> list[StoredMovie]:
        await self._enter("movie_ratings", timeout)
        return list(self.movies.values())

    async def theaters(self, timeout: float) -> list[Theater]:
        await self._enter("theaters", timeout)
        return list(self.theater_list)

    async def record_cache_repair(self, movie_id: str, timeout: float, due_in_seconds: float = 0.0) -> CacheRepair:
        await self._enter("record_cache_repair", timeout)
        count = self.repairs.get(movie_id, (0, 0.0))[0] + 1
        self.repairs[movie_id] = (count, time.monotonic() + due_in_seconds)
        return CacheRepair(movie_id, count)

    async def cache_repairs(self, timeout: float) -> list[CacheRepair]:
        await self._enter("cache_repairs", timeout)
        now = time.monotonic()
        return [CacheRepair(movie_id, count) for movie_id, (count, due) in self.repairs.items() if due <= now]

    async def clear_cache_repair(self, repair: CacheRepair, timeout: float) -> None:
        await self._enter("clear_cache_repair", timeout)
        if self.repairs.get(repair.movie_id, (0, 0.0))[0] == repair.count:
            del self.repairs[repair.movie_id]

    async def ping(self, timeout: float) -> None:
        await self._enter("ping", timeout)

    async def close(self) -> None:
        pass


def down() -> StoreUnavailable:
    return StoreUnavailable("MongoDB is unavailable")


@dataclass
class FakeCache:
    """Versioned like the Redis scripts: a fill or write lands only when no
    newer version is cached or fenced (the fences outlive the entries), and a
    fill only while the lease it took before its store read is still there
    (writes revoke it, and so does `lose_data()`)."""

    entries: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)
    fences: dict[str, int] = field(default_factory=dict)
    ranked: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict)
    top_ready: bool = False
    theaters: list[TheaterCandidate] | None = None
    locks: dict[str, str] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    unavailable: bool = False
    # Entries that say "refresh me early" (XFetch) on their next hit.
    expiring: set[str] = field(default_factory=set)
    epoch: int = 0
    hook: Callable[[], Awaitable[object]] | None = None

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if self.unavailable:
            raise CacheUnavailable("Redis is unavailable: ConnectionError")

    async def get_movie(self, movie_id: str) -> CachedMovie | None:
        self._enter("get_movie")
        entry = self.entries.get(movie_id)
        if entry is None:
            return None
        return CachedMovie(entry[1], refresh_early=movie_id in self.expiring)

    def recovery_epoch(self) -> int:
        return self.epoch

    def lose_data(self) -> None:
        """What FLUSHALL does to Redis: everything goes, with no error to tell."""
        self.entries.clear()
        self.fences.clear()
        self.ranked.clear()
        self.leases.clear()
        self.locks.clear()
        self.top_ready = False

    async def lease_fill(self, movie_id: str, ttl_seconds: float) -> str | None:
        self._enter("lease_fill")
        if movie_id in self.leases:
            return None
        lease = self.leases[movie_id] = secrets.token_hex(4)
        return lease

    async def release_fill(self, movie_id: str, lease: str) -> None:
        self._enter("release_fill")
        if self.leases.get(movie_id) == lease:
            del self.leases[movie_id]

    async def put_movie(
        self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int, lease: str
    ) -> bool:
        self._enter("put_movie")
        if read_epoch != self.epoch or self.leases.get(movie_id) != lease:
            return False
        del self.leases[movie_id]
        version = stored.version if stored is not None else -1
        cached = self.entries.get(movie_id, (-2, None))[0]
        if cached > version or self.fences.get(movie_id, -2) > version:
            return False
        self.entries[movie_id] = (version, stored.data if stored is not None else None)
        self.expiring.discard(movie_id)
        return True

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        self._enter("write_movie")
        self.leases.pop(rank.movie_id, None)
        known = self.fences.get(rank.movie_id, -2)
        if known <= stored.version and self.entries.get(rank.movie_id, (-2, None))[0] < stored.version:
            self.entries[rank.movie_id] = (stored.version, stored.data)
        if known < stored.version:
            self.fences[rank.movie_id] = stored.version
            self._index(rank)

    def _index(self, rank: RankEntry) -> None:
        self.ranked.pop(rank.movie_id, None)
        if rank.score is not None:
            self.ranked[rank.movie_id] = (rank.score, rank.genres)

    def set_recovery_hook(self, hook: Callable[[], Awaitable[object]]) -> None:
        self.hook = hook

    def available(self) -> bool:
        return not self.unavailable

    async def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        self._enter("top_page")
        if not self.top_ready:
            return None
        order = sorted(
            ((-score, movie_id) for movie_id, (score, genres) in self.ranked.items() if not genre or genre in genres)
        )
        if after is not None:
            order = [o for o in order if o > (-after.score, after.movie_id)]
        return [
            RankedId(movie_id, -negative, self.entries.get(movie_id, (0, None))[1])
            for negative, movie_id in order[:limit]
        ]

    async def top_index_ready(self) -> bool:
        self._enter("top_index_ready")
        return self.top_ready

    async def rebuild_top_index(self, load_entries: Callable[[], Awaitable[Iterable[RankEntry]]]) -> int:
        self._enter("rebuild_top_index")
        self.ranked.clear()
        self.top_ready = False
        entries = list(await load_entries())
        for rank in entries:
            if self.fences.get(rank.movie_id, -2) <= rank.version:
                self.fences[rank.movie_id] = rank.version
                self._index(rank)
        self.top_ready = True
        return len(entries)

    async def theaters_near(
        self, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[TheaterCandidate] | None:
        self._enter("theaters_near")
        if self.theaters is None:
            return None
        distances = distances_km(latitude, longitude, [(t.latitude, t.longitude) for t in self.theaters])
        near = sorted((d, t.theater_id, t) for d, t in zip(distances, self.theaters, strict=True) if d <= radius_km)
        return [t for _, _, t in near[:count]]

    async def geo_index_ready(self) -> bool:
        self._enter("geo_index_ready")
        return self.theaters is not None

    async def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        self._enter("rebuild_geo_index")
        self.theaters = [
            TheaterCandidate(t.theater_id, t.latitude, t.longitude, t.SerializeToString()) for t in theaters
        ]

    async def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        self._enter("try_lock")
        if name in self.locks:
            return None
        token = self.locks[name] = secrets.token_hex(4)
        return token

    async def unlock(self, name: str, token: str) -> None:
        self._enter("unlock")
        if self.locks.get(name) == token:
            del self.locks[name]

    async def ping(self) -> None:
        self._enter("ping")

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class RecordedEvents:
    """ServiceEvents that remember what was reported."""

    counts: Counter[tuple[str, ...]] = field(default_factory=Counter)

    def cache_lookup(self, cache: str, result: str) -> None:
        self.counts["lookup", cache, result] += 1

    def coalesced(self, how: str) -> None:
        self.counts["coalesced", how] += 1

    def early_refresh(self) -> None:
        self.counts["early_refresh",] += 1

    def fallback(self, rpc: str) -> None:
        self.counts["fallback", rpc] += 1

    def cache_repair(self, result: str) -> None:
        self.counts["repair", result] += 1

    def index_rebuilt(self, index: str) -> None:
        self.counts["rebuilt", index] += 1

    def fill_lag(self, seconds: float) -> None:
        self.counts["fill_lag",] += 1

    def fill(self, result: str) -> None:
        self.counts["fill", result] += 1

    def auth_failure(self, reason: str) -> None:
        self.counts["auth_failure", reason] += 1
