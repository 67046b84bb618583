"""`movieservice serve` with a cache the tests choose, for the consistency
tests' server processes (the production settings know none of this):

    python -m tests.support.variants naive           # plain cache-aside, no version checks
    python -m tests.support.variants delayed-fills S # every fill waits S seconds after its store read

Both widen or open the races the consistency checker looks for: the naive
cache shows that the checker finds them, the delayed fills that the real
cache survives them.
"""

from __future__ import annotations

import asyncio
import sys
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

    async def put_movie(self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int) -> bool:
        # Forget what the versioned script would compare with, then store.
        await self._execute("HDEL", self.keys.top_version, movie_id)
        await self._execute("DEL", self.keys.movie(movie_id))
        return await super().put_movie(movie_id, stored, load_seconds, read_epoch)

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        await self._execute("DEL", self.keys.movie(rank.movie_id))
        await self._write_movie(rank, b"")


class DelayedFills:
    """A cache whose fills wait `seconds` between the store read and the cache
    write: the window in which a concurrent write can overtake a miss."""

    def __init__(self, cache: Cache, seconds: float) -> None:
        self._cache = cache
        self._seconds = seconds

    async def put_movie(self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int) -> bool:
        await asyncio.sleep(self._seconds)
        return await self._cache.put_movie(movie_id, stored, load_seconds, read_epoch)

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
        elif argv[0] == "delayed-fills":
            cache = DelayedFills(redis_cache(config, metrics), float(argv[1]))
        else:
            raise SystemExit(f"unknown variant {argv[0]!r}")
        return build_app(config, metrics=metrics, cache=cache)

    return server.serve(settings, build=build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
