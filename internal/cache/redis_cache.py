"""RedisCache: the `Cache` interface on Redis.

Keys (all under a configurable prefix, default "movieservice:"):
  movie:<id>           hash {v: version, b: serialized Movie}, with a TTL
  top:version          hash id -> last version applied to the indexes (no TTL)
  top:genres           hash id -> the genres (lowercase, "\\n"-separated) it is indexed under
  top:all              sorted set of ranked movies, score = -rank score (best first)
  top:genre:<genre>    the same, per lowercase genre
  top:ready            the ranking tag the indexes were built with
  geo:theaters         GEO set of theater ids; geo:theater hash id -> serialized Theater
  geo:ready            set when both geo keys are complete
  lock:<name>          short-lived locks (index rebuilds)

Index keys have no TTL: run Redis with `maxmemory-policy volatile-lru` (or
volatile-lfu) so that only movie copies are evicted under memory pressure.

Every write is a Lua script that checks versions, so a slow writer holding an
old version can never replace a newer copy or index entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from internal.service.ports import (
    CacheUnavailable,
    RankedId,
    RankEntry,
    StoredMovie,
    TopCursor,
)
from movies.v1.movies_pb2 import Theater

# Cache a movie copy unless the copy or the index already knows a newer version.
_PUT_MOVIE = """
local v = tonumber(ARGV[1])
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
local known = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '-1')
if cached >= v or known > v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Apply one movie version to the TopRated indexes and, when ARGV[6] is not
# empty, replace its cached copy. Versions at or below the last applied one
# are ignored, so writes and rebuilds may arrive in any order.
_INDEX_MOVIE = """
local id = ARGV[1]
local v = tonumber(ARGV[2])
local known = tonumber(redis.call('HGET', KEYS[1], id) or '-1')
if known >= v then return 0 end
redis.call('HSET', KEYS[1], id, ARGV[2])
local old = redis.call('HGET', KEYS[2], id)
if old then
  for g in string.gmatch(old, '[^\\n]+') do redis.call('ZREM', ARGV[5] .. g, id) end
end
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[2], id)
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], id)
  if ARGV[4] ~= '' then
    for g in string.gmatch(ARGV[4], '[^\\n]+') do redis.call('ZADD', ARGV[5] .. g, ARGV[3], id) end
    redis.call('HSET', KEYS[2], id, ARGV[4])
  end
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[4], 'v', ARGV[2], 'b', ARGV[6])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
return 1
"""

# One page of a ranking after a (score, id) cursor, in (score, id) order.
_TOP_PAGE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local limit = tonumber(ARGV[4])
if ARGV[2] == '' then
  return redis.call('ZRANGE', KEYS[2], 0, limit - 1, 'WITHSCORES')
end
local s0 = tonumber(ARGV[2])
local id0 = ARGV[3]
local out = {}
local offset = 0
while true do
  local batch = redis.call('ZRANGE', KEYS[2], ARGV[2], '+inf', 'BYSCORE', 'LIMIT', offset, limit, 'WITHSCORES')
  if #batch == 0 then return out end
  for i = 1, #batch, 2 do
    if tonumber(batch[i + 1]) > s0 or batch[i] > id0 then
      out[#out + 1] = batch[i]
      out[#out + 1] = batch[i + 1]
      if #out >= 2 * limit then return out end
    end
  end
  offset = offset + limit
end
"""

_NEARBY = """
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
local ids = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
  'BYRADIUS', ARGV[3], 'km', 'ASC', 'COUNT', ARGV[4])
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REBUILD_BATCH = 500


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "movieservice:",
        movie_ttl_seconds: float = 3600.0,
        top_index_tag: str = "v1",
        timeout_seconds: float = 0.5,
        client: redis.Redis | None = None,
    ) -> None:
        self._redis: redis.Redis = client or redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            # One attempt: a slow or dead Redis must not multiply the latency
            # of every call; the service falls back to the store instead.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._prefix = key_prefix
        self._ttl_ms = int(movie_ttl_seconds * 1000)
        self._tag = top_index_tag
        self._put_movie = self._redis.register_script(_PUT_MOVIE)
        self._index_movie = self._redis.register_script(_INDEX_MOVIE)
        self._top_page = self._redis.register_script(_TOP_PAGE)
        self._nearby = self._redis.register_script(_NEARBY)
        self._unlock = self._redis.register_script(_UNLOCK)
        p = key_prefix
        self._top_version = p + "top:version"
        self._top_genres = p + "top:genres"
        self._top_all = p + "top:all"
        self._top_genre_prefix = p + "top:genre:"
        self._top_ready = p + "top:ready"
        self._geo = p + "geo:theaters"
        self._geo_details = p + "geo:theater"
        self._geo_ready = p + "geo:ready"

    def _movie_key(self, movie_id: str) -> str:
        return f"{self._prefix}movie:{movie_id}"

    # Movies

    def get_movie(self, movie_id: str) -> bytes | None:
        with _translated_errors():
            value: bytes | None = self._redis.hget(self._movie_key(movie_id), "b")  # type: ignore[assignment]
        return value

    def get_movies(self, movie_ids: Sequence[str]) -> list[bytes | None]:
        if not movie_ids:
            return []
        with _translated_errors():
            pipe = self._redis.pipeline(transaction=False)
            for movie_id in movie_ids:
                pipe.hget(self._movie_key(movie_id), "b")
            return list(pipe.execute())

    def put_movie(self, stored: StoredMovie) -> bool:
        movie_id = stored.movie.id
        with _translated_errors():
            written = self._put_movie(
                keys=[self._movie_key(movie_id), self._top_version],
                args=[stored.version, stored.movie.SerializeToString(), movie_id, self._ttl_ms],
            )
        return bool(written)

    def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        with _translated_errors():
            self._index_movie(
                keys=self._index_keys(rank.movie_id),
                args=self._index_args(rank, stored.movie.SerializeToString()),
            )

    def _index_keys(self, movie_id: str) -> list[str]:
        return [self._top_version, self._top_genres, self._top_all, self._movie_key(movie_id)]

    def _index_args(self, rank: RankEntry, data: bytes) -> list[Any]:
        score = "" if rank.score is None else repr(-rank.score)
        genres = "\n".join(rank.genres)
        return [rank.movie_id, rank.version, score, genres, self._top_genre_prefix, data, self._ttl_ms]

    # TopRated

    def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        """`genre` as RankEntry.genres has it (normalized); empty for all movies."""
        key = self._top_genre_prefix + genre if genre else self._top_all
        args: list[Any] = ["", "", limit] if after is None else [repr(-after.score), after.movie_id, limit]
        with _translated_errors():
            flat = self._top_page(keys=[self._top_ready, key], args=[self._tag, *args])
        if flat is None:
            return None
        return [RankedId(movie_id=flat[i].decode(), score=-float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def top_index_ready(self) -> bool:
        with _translated_errors():
            return bool(self._redis.get(self._top_ready) == self._tag.encode())

    def rebuild_top_index(self, entries: Iterable[RankEntry]) -> None:
        """Rebuild from scratch; concurrent writes stay correct (see _INDEX_MOVIE)."""
        with _translated_errors():
            stale = [self._top_ready, self._top_version, self._top_genres, self._top_all]
            stale += list(self._redis.scan_iter(match=self._top_genre_prefix + "*", count=1000))
            self._redis.delete(*stale)
            pipe = self._redis.pipeline(transaction=False)
            for count, rank in enumerate(entries, 1):
                self._index_movie(keys=self._index_keys(rank.movie_id), args=self._index_args(rank, b""), client=pipe)
                if count % _REBUILD_BATCH == 0:
                    pipe.execute()
            pipe.execute()
            self._redis.set(self._top_ready, self._tag)

    # Nearby

    def theaters_near(self, latitude: float, longitude: float, radius_km: float, count: int) -> list[Theater] | None:
        with _translated_errors():
            values = self._nearby(
                keys=[self._geo, self._geo_details, self._geo_ready],
                args=[repr(longitude), repr(latitude), repr(radius_km), count],
            )
        if values is None:
            return None
        return [Theater.FromString(value) for value in values if value is not None]

    def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        with _translated_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._geo, self._geo_details, self._geo_ready)
            for theater in theaters:
                member = str(theater.theater_id)
                pipe.geoadd(self._geo, (theater.longitude, theater.latitude, member))
                pipe.hset(self._geo_details, member, theater.SerializeToString())
            pipe.set(self._geo_ready, "1")
            pipe.execute()

    # Coordination and lifecycle

    def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        token = secrets.token_hex(8)
        with _translated_errors():
            acquired = self._redis.set(f"{self._prefix}lock:{name}", token, nx=True, px=int(ttl_seconds * 1000))
        return token if acquired else None

    def unlock(self, name: str, token: str) -> None:
        with _translated_errors():
            self._unlock(keys=[f"{self._prefix}lock:{name}"], args=[token])

    def clear(self) -> int:
        """Delete every key under the prefix (after reseeding the store)."""
        with _translated_errors():
            keys = list(self._redis.scan_iter(match=self._prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                self._redis.unlink(*keys[start : start + 1000])
        return len(keys)

    def ping(self) -> None:
        with _translated_errors():
            self._redis.ping()

    def close(self) -> None:
        self._redis.close()


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turn redis-py errors into CacheUnavailable."""
    try:
        yield
    except RedisError as error:
        raise CacheUnavailable(f"Redis is unavailable: {type(error).__name__}") from error
