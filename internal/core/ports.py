"""The ports: what the use cases need from a cache and a store, and their errors.

`movieservice.cache` implements `Cache` with Redis and `movieservice.store`
implements `Store` with MongoDB; the use cases know neither. Every method
that talks to a server is a coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Protocol

from movieservice.proto.movies.v1.movies_pb2 import Movie, Theater


class DependencyError(Exception):
    """A cache or store call failed; the message is safe to show a client."""


class StoreUnavailable(DependencyError):
    """The store cannot be reached (down, unreachable, no primary)."""


class StoreTimeout(DependencyError):
    """A store call did not finish within its deadline."""


class CacheUnavailable(DependencyError):
    """The cache cannot be reached or did not answer in time."""


@dataclass(frozen=True)
class StoredMovie:
    """A movie as the store holds it, with its write version.

    The version grows by one with every write of that movie; the cache uses it
    to refuse to replace a newer copy with an older one.
    """

    movie: Movie
    version: int

    @cached_property
    def data(self) -> bytes:
        """The serialized Movie (computed once)."""
        return self.movie.SerializeToString()


@dataclass(frozen=True)
class UpsertOutcome:
    stored: StoredMovie
    created: bool


@dataclass(frozen=True)
class RankEntry:
    """A movie's place in the TopRated index: `score` None means unranked.

    `genres` are normalized: lowercase, trimmed, unique, sorted.
    """

    movie_id: str
    version: int
    score: float | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class TopCursor:
    """Position after the last movie of a page: its score and id."""

    score: float
    movie_id: str


class RankedId(NamedTuple):
    movie_id: str
    score: float
    # The serialized Movie when the cache holds it.
    data: bytes | None = None


class TheaterCandidate(NamedTuple):
    """A theater from the GEO index: exact coordinates and the serialized Theater."""

    theater_id: int
    latitude: float
    longitude: float
    data: bytes


class CachedMovie(NamedTuple):
    """A cache hit. `data` is the serialized Movie, or None when the cache
    knows the movie does not exist (a negative entry)."""

    data: bytes | None
    # The entry is close enough to expiry that this caller should refresh it
    # (probabilistic early expiration, XFetch).
    refresh_early: bool = False
    # Answered from this process' memory (the near cache), not from the cache server.
    near: bool = False


@dataclass(frozen=True)
class CacheRepair:
    """A movie whose latest write could not be applied to the cache."""

    movie_id: str
    # How many times it was recorded; clearing it only succeeds if that has not changed.
    count: int


class Store(Protocol):
    """The source of truth. Every call takes a timeout in seconds."""

    async def get_movie(self, movie_id: str, timeout: float) -> StoredMovie | None: ...

    async def get_movies(self, movie_ids: Sequence[str], timeout: float) -> dict[str, StoredMovie]: ...

    async def upsert_movie(self, movie: Movie, timeout: float) -> UpsertOutcome:
        """Create or replace `movie` (a new id when `movie.id` is empty).

        The store sets the output-only `lastupdated` and ignores `year_text`.
        """
        ...

    async def movie_ratings(self, timeout: float) -> list[StoredMovie]:
        """Every movie with only its id, `imdb` and `genres` filled in."""
        ...

    async def theaters(self, timeout: float) -> list[Theater]: ...

    async def record_cache_repair(self, movie_id: str, timeout: float, due_in_seconds: float = 0.0) -> CacheRepair:
        """Remember durably that the cached copy of `movie_id` may be outdated,
        from `due_in_seconds` from now on (the repair of a write still under way
        is due once that write must have ended)."""
        ...

    async def cache_repairs(self, timeout: float) -> list[CacheRepair]:
        """The repairs that are due."""
        ...

    async def clear_cache_repair(self, repair: CacheRepair, timeout: float) -> None:
        """Forget `repair`, unless it was recorded again since it was read."""
        ...

    async def ping(self, timeout: float) -> None: ...

    async def close(self) -> None: ...


class Cache(Protocol):
    """A fast, possibly incomplete copy of the store, plus derived indexes."""

    async def get_movie(self, movie_id: str) -> CachedMovie | None:
        """The cached movie, or None on a miss."""
        ...

    def recovery_epoch(self) -> int:
        """Changes each time the cache comes back after an outage; take it before a store read."""
        ...

    async def lease_fill(self, movie_id: str, ttl_seconds: float) -> str | None:
        """Take the right to fill `movie_id`, before reading it from the store: a
        token, or None while another caller holds it. Any write of the movie
        revokes it, and so does anything that loses the cache's data."""
        ...

    async def release_fill(self, movie_id: str, lease: str) -> None:
        """Give up a fill lease without filling."""
        ...

    async def put_movie(
        self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int, lease: str
    ) -> bool:
        """Cache what the store returned (None: the movie does not exist) while
        `lease` (taken before the store read) still holds, unless a newer
        version is already known or the cache recovered from an outage since
        `read_epoch` was taken; True if written. The lease ends either way.
        `load_seconds` is how long the store read took (it paces early refreshes)."""
        ...

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        """After a store write: replace the cached copy and its index entries,
        unless a newer version is already there."""
        ...

    def set_recovery_hook(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run `hook` (and require it to succeed) before using the cache again after an outage."""
        ...

    def available(self) -> bool:
        """False while calls would fail fast (the circuit breaker is open)."""
        ...

    async def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        """Best first, with the cached movies; None when the index has to be (re)built first."""
        ...

    async def top_index_ready(self) -> bool: ...

    async def rebuild_top_index(self, load_entries: Callable[[], Awaitable[Iterable[RankEntry]]]) -> int:
        """Replace the TopRated indexes with `await load_entries()`, called after the
        old ones are gone; returns how many entries it applied."""
        ...

    async def theaters_near(
        self, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[TheaterCandidate] | None:
        """Up to `count` theaters, nearest first; None when the index is missing."""
        ...

    async def geo_index_ready(self) -> bool: ...

    async def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None: ...

    async def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        """A token if this caller now holds the lock `name`, else None."""
        ...

    async def unlock(self, name: str, token: str) -> None: ...

    async def ping(self) -> None: ...

    async def start(self) -> None:
        """Start what the cache runs in the background (its near cache's invalidations)."""
        ...

    async def close(self) -> None: ...


class ServiceEvents(Protocol):
    """What the use cases report as they work (counted by `movieservice.metrics`)."""

    def cache_lookup(self, cache: str, result: str) -> None:
        """cache: movie, top_rated, geo; result: hit, miss, negative_hit, error."""
        ...

    def coalesced(self, how: str) -> None:
        """A miss that waited for another caller's read: in_process or lease."""
        ...

    def early_refresh(self) -> None: ...

    def fallback(self, rpc: str) -> None:
        """A read answered from the store because the cache was unavailable."""
        ...

    def cache_repair(self, result: str) -> None:
        """recorded or applied."""
        ...

    def index_rebuilt(self, index: str) -> None: ...

    def fill_lag(self, seconds: float) -> None:
        """From answering a miss to the movie being in the cache."""
        ...

    def fill(self, result: str) -> None:
        """A cache fill after a store read: applied, or refused (its lease was
        revoked by a write or lost with the cache's data, or a newer version
        was already there)."""
        ...

    def auth_failure(self, reason: str) -> None:
        """An Upsert refused before validation: missing, invalid, writes_disabled or rate_limited."""
        ...
