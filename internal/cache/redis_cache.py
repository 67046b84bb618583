"""RedisCache: the `Cache` interface on Redis.

Keys (all under a configurable prefix, default "movieservice:"):
  movie:<id>           hash {v: version, b: serialized Movie, e: expiry (ms since
                       the epoch), d: how long the store read took (ms)}, with a
                       TTL; no "b" and v = -1 for a movie known not to exist
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

import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from internal.breaker import BreakerState, CircuitBreaker
from internal.metrics import BREAKER_STATE, DEPENDENCY_ERRORS, DEPENDENCY_SECONDS
from internal.service.ports import (
    CachedMovie,
    CacheUnavailable,
    RankedId,
    RankEntry,
    StoredMovie,
    TopCursor,
)
from movies.v1.movies_pb2 import Theater

T = TypeVar("T")
log = logging.getLogger(__name__)

# Cache what a store read returned, unless the cached copy or the index
# already knows a newer version. An equal version may refresh the entry (it
# holds the same movie). ARGV[2] empty: the movie does not exist (a negative
# entry, version -1, no "b" field).
_PUT_MOVIE = """
local v = tonumber(ARGV[1])
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '-2')
local known = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '-2')
if cached > v or known > v then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[5], 'd', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 'e', ARGV[5], 'd', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Apply one movie version: replace its cached copy (when ARGV[6] is not empty
# and nothing newer is cached or indexed) and its TopRated entries (when the
# indexes hold an older version). Writes, repairs and rebuilds may therefore
# arrive in any order and the newest version still wins.
_INDEX_MOVIE = """
local id = ARGV[1]
local v = tonumber(ARGV[2])
local known = tonumber(redis.call('HGET', KEYS[1], id) or '-2')
local applied = 0
if ARGV[6] ~= '' and known <= v then
  local cached = tonumber(redis.call('HGET', KEYS[4], 'v') or '-2')
  if cached < v then
    redis.call('DEL', KEYS[4])
    redis.call('HSET', KEYS[4], 'v', ARGV[2], 'b', ARGV[6], 'e', ARGV[8], 'd', '0')
    redis.call('PEXPIRE', KEYS[4], ARGV[7])
    applied = 1
  end
end
if known >= v then return applied end
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
return 1
"""

# The naive cache-aside the versioned scripts replace, kept only so that the
# consistency checker can show it finds the races they prevent
# (CACHE_CONSISTENCY=naive): fills overwrite unconditionally, writes delete
# the cached copy and overwrite index entries in arrival order.
_NAIVE_PUT_MOVIE = """
redis.call('DEL', KEYS[1])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[5], 'd', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 'e', ARGV[5], 'd', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
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
# Entries live MOVIE_TTL_SECONDS +- 10% so that entries loaded together do not expire together.
_TTL_JITTER = 0.1
# XFetch's beta: above 1 favours earlier refreshes.
_XFETCH_BETA = 1.0


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "movieservice:",
        movie_ttl_seconds: float = 3600.0,
        negative_ttl_seconds: float = 10.0,
        top_index_tag: str = "v1",
        timeout_seconds: float = 0.5,
        breaker_reset_seconds: float = 1.0,
        naive: bool = False,
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
        self._ttl_ms = movie_ttl_seconds * 1000
        self._negative_ttl_ms = negative_ttl_seconds * 1000
        self._tag = top_index_tag
        self._naive = naive
        self._put_movie = self._redis.register_script(_NAIVE_PUT_MOVIE if naive else _PUT_MOVIE)
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
        # Any Redis error opens the breaker: calls then fail fast (the service
        # reads the store), and before the cache is used again the recovery
        # hook reconciles writes that could not reach it.
        self._recovery_hook: Callable[[], object] | None = None
        self._breaker = CircuitBreaker(
            "redis",
            failure_threshold=1,
            reset_seconds=breaker_reset_seconds,
            probe=self._probe,
            on_change=_report_breaker,
        )
        _report_breaker("redis", self._breaker.state)
        self._latency = {
            op: DEPENDENCY_SECONDS.labels("redis", op)
            for op in ("get", "get_many", "put", "write", "top_page", "nearby", "rebuild", "lock", "ping")
        }

    def _movie_key(self, movie_id: str) -> str:
        return f"{self._prefix}movie:{movie_id}"

    def _run(self, operation: str, call: Callable[[], T], *, always_try: bool = False) -> T:
        """Run one Redis operation through the breaker, timed, with errors translated.

        `always_try` attempts the call even while the breaker is open.
        """
        if not self._breaker.allow() and not always_try:
            DEPENDENCY_ERRORS.labels("redis", "circuit_open").inc()
            raise CacheUnavailable("Redis is unavailable (circuit breaker open)")
        started = time.perf_counter()
        started_at = self._breaker.now()
        try:
            result = call()
        except RedisError as error:
            self._breaker.failure(started_at)
            kind = "timeout" if isinstance(error, RedisTimeoutError) else "unavailable"
            DEPENDENCY_ERRORS.labels("redis", kind).inc()
            raise CacheUnavailable(f"Redis is unavailable: {type(error).__name__}") from error
        self._latency[operation].observe(time.perf_counter() - started)
        return result

    def _probe(self) -> None:
        self._redis.ping()
        if self._recovery_hook is not None:
            self._recovery_hook()

    def set_recovery_hook(self, hook: Callable[[], object]) -> None:
        self._recovery_hook = hook

    def available(self) -> bool:
        return self._breaker.allow()

    # Movies

    def get_movie(self, movie_id: str) -> CachedMovie | None:
        values: list[bytes | None] = self._run(
            "get",
            lambda: self._redis.hmget(self._movie_key(movie_id), "v", "b", "e", "d"),  # type: ignore[arg-type,return-value]
        )
        version, data, expiry_ms, delta_ms = values
        if version is None:
            return None
        return CachedMovie(data=data, refresh_early=_xfetch(expiry_ms, delta_ms))

    def get_movies(self, movie_ids: Sequence[str]) -> list[bytes | None]:
        if not movie_ids:
            return []

        def fetch() -> list[bytes | None]:
            pipe = self._redis.pipeline(transaction=False)
            for movie_id in movie_ids:
                pipe.hget(self._movie_key(movie_id), "b")
            return list(pipe.execute())

        return self._run("get_many", fetch)

    def recovery_epoch(self) -> int:
        return self._breaker.recoveries

    def put_movie(self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int) -> bool:
        ttl_ms = (self._ttl_ms if stored is not None else self._negative_ttl_ms) * random.uniform(
            1 - _TTL_JITTER, 1 + _TTL_JITTER
        )
        args: list[bytes | int] = [
            stored.version if stored is not None else -1,
            stored.movie.SerializeToString() if stored is not None else b"",
            movie_id.encode(),
            int(ttl_ms),
            int(time.time() * 1000 + ttl_ms),
            int(load_seconds * 1000) or 1,
        ]

        def put() -> object:
            # Read before the cache last recovered from an outage: the writes
            # it missed may be newer, and their fences may be gone with a
            # restarted Redis. Drop it.
            if read_epoch != self._breaker.recoveries:
                return 0
            return self._put_movie(keys=[self._movie_key(movie_id), self._top_version], args=args)

        return bool(self._run("put", put))

    def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        data = stored.movie.SerializeToString()
        if self._naive:
            self._run("write", lambda: self._redis.delete(self._movie_key(rank.movie_id)), always_try=True)
            data = b""
        # Tried even while the breaker is open: if Redis answers after all, the
        # write lands (with its version fence) instead of waiting for a repair.
        self._run(
            "write",
            lambda: self._index_movie(keys=self._index_keys(rank.movie_id), args=self._index_args(rank, data)),
            always_try=True,
        )

    def _index_keys(self, movie_id: str) -> list[str]:
        return [self._top_version, self._top_genres, self._top_all, self._movie_key(movie_id)]

    def _index_args(self, rank: RankEntry, data: bytes) -> list[Any]:
        score = "" if rank.score is None else repr(-rank.score)
        genres = "\n".join(rank.genres)
        ttl_ms = self._ttl_ms * random.uniform(1 - _TTL_JITTER, 1 + _TTL_JITTER)
        expiry_ms = int(time.time() * 1000 + ttl_ms)
        return [rank.movie_id, rank.version, score, genres, self._top_genre_prefix, data, int(ttl_ms), expiry_ms]

    # TopRated

    def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        """`genre` as RankEntry.genres has it (normalized); empty for all movies."""
        key = self._top_genre_prefix + genre if genre else self._top_all
        args: list[Any] = ["", "", limit] if after is None else [repr(-after.score), after.movie_id, limit]
        flat = self._run("top_page", lambda: self._top_page(keys=[self._top_ready, key], args=[self._tag, *args]))
        if flat is None:
            return None
        return [RankedId(movie_id=flat[i].decode(), score=-float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def top_index_ready(self) -> bool:
        return bool(self._run("top_page", lambda: self._redis.get(self._top_ready)) == self._tag.encode())

    def rebuild_top_index(self, load_entries: Callable[[], Iterable[RankEntry]]) -> int:
        """Rebuild from scratch. `load_entries` reads the store only after the
        old index is gone, so every write is either in that snapshot or applied
        after it, and versions order the two (see _INDEX_MOVIE)."""

        def rebuild() -> int:
            stale = [self._top_ready, self._top_version, self._top_genres, self._top_all]
            stale += list(self._redis.scan_iter(match=self._top_genre_prefix + "*", count=1000))
            self._redis.delete(*stale)
            return 0

        self._run("rebuild", rebuild)
        entries = list(load_entries())

        def apply() -> int:
            pipe = self._redis.pipeline(transaction=False)
            for count, rank in enumerate(entries, 1):
                self._index_movie(keys=self._index_keys(rank.movie_id), args=self._index_args(rank, b""), client=pipe)
                if count % _REBUILD_BATCH == 0:
                    pipe.execute()
            pipe.execute()
            self._redis.set(self._top_ready, self._tag)
            return len(entries)

        return self._run("rebuild", apply)

    # Nearby

    def theaters_near(self, latitude: float, longitude: float, radius_km: float, count: int) -> list[Theater] | None:
        values = self._run(
            "nearby",
            lambda: self._nearby(
                keys=[self._geo, self._geo_details, self._geo_ready],
                args=[repr(longitude), repr(latitude), repr(radius_km), count],
            ),
        )
        if values is None:
            return None
        return [Theater.FromString(value) for value in values if value is not None]

    def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        def rebuild() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._geo, self._geo_details, self._geo_ready)
            for theater in theaters:
                member = str(theater.theater_id)
                pipe.geoadd(self._geo, (theater.longitude, theater.latitude, member))
                pipe.hset(self._geo_details, member, theater.SerializeToString())
            pipe.set(self._geo_ready, "1")
            pipe.execute()

        self._run("rebuild", rebuild)

    # Coordination and lifecycle

    def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        token = secrets.token_hex(8)
        key = f"{self._prefix}lock:{name}"
        acquired = self._run("lock", lambda: self._redis.set(key, token, nx=True, px=int(ttl_seconds * 1000)))
        return token if acquired else None

    def unlock(self, name: str, token: str) -> None:
        self._run("lock", lambda: self._unlock(keys=[f"{self._prefix}lock:{name}"], args=[token]))

    def clear(self) -> int:
        """Delete every key under the prefix (after reseeding the store)."""

        def clear() -> int:
            keys = list(self._redis.scan_iter(match=self._prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                self._redis.unlink(*keys[start : start + 1000])
            return len(keys)

        return self._run("rebuild", clear)

    def ping(self) -> None:
        """Check Redis itself, whatever the breaker says; a failure opens the breaker.

        Raises CacheUnavailable when Redis does not answer or the breaker stays
        open (the recovery hook failed).
        """
        try:
            self._redis.ping()
        except RedisError as error:
            self._breaker.trip()
            raise CacheUnavailable(f"Redis is unavailable: {type(error).__name__}") from error
        if not self._breaker.allow():
            raise CacheUnavailable("Redis answers, but the cache is not in use yet (recovering)")

    def close(self) -> None:
        self._redis.close()


def _xfetch(expiry_ms: bytes | None, delta_ms: bytes | None, now_ms: float | None = None) -> bool:
    """Probabilistic early expiration (Vattani, Chierichetti, Lowenstein, VLDB 2015).

    Refresh when now - delta * beta * ln(U) >= expiry, U uniform in (0, 1]:
    the closer to expiry and the costlier the reload (delta), the likelier.
    """
    if expiry_ms is None or delta_ms is None:
        return False
    delta = float(delta_ms)
    if delta <= 0:
        return False
    if now_ms is None:
        now_ms = time.time() * 1000
    return now_ms - delta * _XFETCH_BETA * math.log(1.0 - random.random()) >= float(expiry_ms)


def _report_breaker(name: str, state: BreakerState) -> None:
    BREAKER_STATE.labels(name).set(int(state))
    if state is BreakerState.OPEN:
        log.warning("%s circuit breaker open: serving from the store until it recovers", name)
    elif state is BreakerState.CLOSED:
        log.info("%s circuit breaker closed", name)
