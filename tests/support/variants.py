"""`movieservice serve` with a cache the tests choose, for the consistency
tests' server processes (the production settings know none of this):

    python -m tests.support.variants naive           # plain cache-aside, no version checks
    python -m tests.support.variants delayed-fills S # every fill waits S seconds after its store read
    python -m tests.support.variants dies-on-write   # the process exits at its first cache write

Both widen or open the races the consistency checker looks for: the naive
cache shows that the checker finds them, the delayed fills that the real
cache survives them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from movieservice.app import build_app, redis_cache
from movieservice.cache.redis_cache import RedisCache
from movieservice.config import load_settings
from movieservice.core.ports import (
    Cache,
    CachedMovie,
    RankedId,
    RankEntry,
    StoredMovie,
    TheaterCandidate,
    TopCursor,
)
from movieservice.grpcserver import server
from movieservice.logs import configure_logging
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1.movies_pb2 import Theater


class NaiveCache(RedisCache):
    """Cache-aside as it is often written: a fill overwrites whatever is
    cached, a write deletes the cached copy (and index entries follow in
    arrival order). Its races are the ones versions prevent."""

    async def put_movie(
        self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int, lease: str
    ) -> bool:
        # Store, whatever was cached, fenced or leased meanwhile (and end the lease).
        key = self.keys.movie(movie_id)
        version, body = (stored.version, stored.data) if stored is not None else (-1, b"")
        expires_at_ms = int(time.time() * 1000 + self._ttl_ms)
        await self._execute("DEL", key)
        await self._execute("HSET", key, "v", version, "b", body, "e", expires_at_ms, "d", 1)
        await self._execute("PEXPIRE", key, int(self._ttl_ms))
        await self._execute("DEL", self.keys.fill_lease(movie_id))
        return True

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        await self._execute("DEL", self.keys.movie(rank.movie_id))
        await self._write_movie(rank, b"")


class DiesOnWrite(RedisCache):
    """A process that ends (as if killed) after the store took a write and
    before the cache got it."""

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        os._exit(17)


class DelayedFills:
    """A cache whose fills wait `seconds` between the store read and the cache
    write: the window in which a concurrent write can overtake a miss."""

    def __init__(self, cache: Cache, seconds: float) -> None:
        self._cache = cache
        self._seconds = seconds

    async def put_movie(
        self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int, lease: str
    ) -> bool:
        await asyncio.sleep(self._seconds)
        return await self._cache.put_movie(movie_id, stored, load_seconds, read_epoch, lease)

    # Everything else as the wrapped cache does it.
    async def get_movie(self, movie_id: str) -> CachedMovie | None:
        return await self._cache.get_movie(movie_id)

    def recovery_epoch(self) -> int:
        return self._cache.recovery_epoch()

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        await self._cache.write_movie(stored, rank)

    def set_recovery_hook(self, hook: Callable[[], Awaitable[object]]) -> None:
        self._cache.set_recovery_hook(hook)

    def available(self) -> bool:
        return self._cache.available()

    async def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        return await self._cache.top_page(genre, after, limit)

    async def top_index_ready(self) -> bool:
        return await self._cache.top_index_ready()

    async def rebuild_top_index(self, load_entries: Callable[[], Awaitable[Iterable[RankEntry]]]) -> int:
        return await self._cache.rebuild_top_index(load_entries)

    async def theaters_near(
        self, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[TheaterCandidate] | None:
        return await self._cache.theaters_near(latitude, longitude, radius_km, count)

    async def geo_index_ready(self) -> bool:
        return await self._cache.geo_index_ready()

    async def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        await self._cache.rebuild_geo_index(theaters)

    async def lease_fill(self, movie_id: str, ttl_seconds: float) -> str | None:
        return await self._cache.lease_fill(movie_id, ttl_seconds)

    async def release_fill(self, movie_id: str, lease: str) -> None:
        await self._cache.release_fill(movie_id, lease)

    async def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        return await self._cache.try_lock(name, ttl_seconds)

    async def unlock(self, name: str, token: str) -> None:
        await self._cache.unlock(name, token)

    async def ping(self) -> None:
        await self._cache.ping()

    async def start(self) -> None:
        await self._cache.start()

    async def close(self) -> None:
        await self._cache.close()


def main(argv: Sequence[str]) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)

    def build(config: Any) -> Any:
        metrics = Metrics(grpc_buckets=config.grpc_histogram_buckets)
        if argv[0] == "naive":
            cache: Cache = NaiveCache(
                config.redis_url, metrics.dependencies, key_prefix=config.redis_key_prefix,
                movie_ttl_seconds=config.movie_ttl_seconds, negative_ttl_seconds=config.negative_ttl_seconds,
            )  # fmt: skip
        elif argv[0] == "dies-on-write":
            cache = DiesOnWrite(config.redis_url, metrics.dependencies, key_prefix=config.redis_key_prefix)
        elif argv[0] == "delayed-fills":
            cache = DelayedFills(redis_cache(config, metrics), float(argv[1]))
        else:
            raise SystemExit(f"unknown variant {argv[0]!r}")
        return build_app(config, metrics=metrics, cache=cache)

    return server.serve(settings, build=build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
