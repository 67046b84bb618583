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
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

try:  # redis-py >= 7: its maintenance notifications need RESP3; the tracking connection is RESP2
    from redis.maint_notifications import MaintNotificationsConfig as _MaintNotificationsConfig
except ImportError:  # pragma: no cover
    _MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from movieservice.breaker import BreakerState, CircuitBreaker
from movieservice.cache.near import NearCache
from movieservice.metrics import BREAKER_STATE, DEPENDENCY_ERRORS, DEPENDENCY_SECONDS
from movieservice.proto.movies.v1.movies_pb2 import Theater
from movieservice.service.ports import (
    CachedMovie,
    CacheUnavailable,
    RankedId,
    RankEntry,
    StoredMovie,
    TheaterCandidate,
    TopCursor,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

# Store a movie entry unconditionally: KEYS[1] the entry; ARGV[1] version,
# ARGV[2] body (empty: the movie does not exist, a negative entry of version -1
# without a "b" field), ARGV[4] its TTL (ms), ARGV[5] when it expires (ms since
# the epoch) and ARGV[6] how long the store read took (ms), for XFetch.
_STORE_MOVIE = """
redis.call('DEL', KEYS[1])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[5], 'd', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 'e', ARGV[5], 'd', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Cache what a store read returned, unless the cached copy or the index
# (KEYS[2], field ARGV[3]) already knows a newer version. An equal version may
# refresh the entry (it holds the same movie).
_PUT_MOVIE = (
    """
local v = tonumber(ARGV[1])
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '-2')
local known = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '-2')
if cached > v or known > v then return 0 end
"""
    + _STORE_MOVIE
)

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
_NAIVE_PUT_MOVIE = _STORE_MOVIE

# One page of a ranking after a (score, id) cursor, in (score, id) order, with
# each movie's cached copy (false when not cached): flat (id, score, movie).
_TOP_PAGE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local limit = tonumber(ARGV[4])
local page = {}
if ARGV[2] == '' then
  page = redis.call('ZRANGE', KEYS[2], 0, limit - 1, 'WITHSCORES')
else
  local s0 = tonumber(ARGV[2])
  local id0 = ARGV[3]
  local offset = 0
  while #page < 2 * limit do
    local batch = redis.call('ZRANGE', KEYS[2], ARGV[2], '+inf', 'BYSCORE', 'LIMIT', offset, limit, 'WITHSCORES')
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      if tonumber(batch[i + 1]) > s0 or batch[i] > id0 then
        page[#page + 1] = batch[i]
        page[#page + 1] = batch[i + 1]
        if #page >= 2 * limit then break end
      end
    end
    offset = offset + limit
  end
end
local out = {}
for i = 1, #page, 2 do
  out[#out + 1] = page[i]
  out[#out + 1] = page[i + 1]
  out[#out + 1] = redis.call('HGET', ARGV[5] .. page[i], 'b')
end
return out
"""

# Theaters within a radius, nearest first (by Redis' own distance): flat (id,
# stored value), the value being 16 bytes of exact latitude and longitude, then
# the serialized Theater.
_NEARBY = """
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return false end
local ids = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
  'BYRADIUS', ARGV[3], 'km', 'ASC', 'COUNT', ARGV[4])
if #ids == 0 then return {} end
local values = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = values[i]
end
return out
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REBUILD_BATCH = 500
# Values of geo:theater: exact latitude and longitude, then the serialized
# Theater. geo:ready holds _GEO_FORMAT; an index in another format is rebuilt.
_COORDINATES = struct.Struct("<dd")
_GEO_FORMAT = "coordinates+theater/1"
# Entries live MOVIE_TTL_SECONDS +- 10% so that entries loaded together do not expire together.
_TTL_JITTER = 0.1
# XFetch's beta: above 1 favours earlier refreshes.
_XFETCH_BETA = 1.0
_XFETCH_HORIZON = 30


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
        near_cache_size: int = 0,
        near_cache_ttl_seconds: float = 30.0,
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
            on_change=self._breaker_changed,
        )
        _report_breaker("redis", self._breaker.state)
        self._movie_prefix = p + "movie:"
        self._near: NearCache | None = None
        self._stopping = threading.Event()
        if near_cache_size > 0:
            self._near = NearCache(near_cache_size, near_cache_ttl_seconds)
            threading.Thread(target=self._receive_invalidations, name="near-cache", daemon=True).start()
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
            self._latency[operation].observe(time.perf_counter() - started)
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
        near = self._near
        if near is not None and near.enabled:
            entry: tuple[bytes | None, float | None, float | None] | None = near.get(movie_id)
            if entry is not None:
                return CachedMovie(entry[0], _xfetch(entry[1], entry[2]))
            sequence = near.sequence
        values: list[bytes | None] = self._run(
            "get",
            lambda: self._redis.hmget(self._movie_key(movie_id), "v", "b", "e", "d"),  # type: ignore[arg-type,return-value]
        )
        version, data, expiry_ms, delta_ms = values
        if version is None:
            return None
        if near is not None and near.enabled:
            near.put(
                movie_id,
                (data, None if expiry_ms is None else float(expiry_ms), None if delta_ms is None else float(delta_ms)),
                sequence,
            )
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
        if self._near is not None:
            # This process reads its own writes: its copy goes before the ack,
            # not when Redis' invalidation message arrives.
            self._near.invalidate([rank.movie_id])

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
        flat = self._run(
            "top_page",
            lambda: self._top_page(keys=[self._top_ready, key], args=[self._tag, *args, self._movie_prefix]),
        )
        if flat is None:
            return None
        return [
            RankedId(movie_id=flat[i].decode(), score=-float(flat[i + 1]), data=flat[i + 2] or None)
            for i in range(0, len(flat), 3)
        ]

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

    def theaters_near(
        self, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[TheaterCandidate] | None:
        values = self._run(
            "nearby",
            lambda: self._nearby(
                keys=[self._geo, self._geo_details, self._geo_ready],
                args=[repr(longitude), repr(latitude), repr(radius_km), count, _GEO_FORMAT],
            ),
        )
        if values is None:
            return None
        return [_candidate(values[i], values[i + 1]) for i in range(0, len(values), 2) if values[i + 1]]

    def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        def rebuild() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._geo, self._geo_details, self._geo_ready)
            for theater in theaters:
                member = str(theater.theater_id)
                pipe.geoadd(self._geo, (theater.longitude, theater.latitude, member))
                value = _COORDINATES.pack(theater.latitude, theater.longitude) + theater.SerializeToString()
                pipe.hset(self._geo_details, member, value)
            pipe.set(self._geo_ready, _GEO_FORMAT)
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
        started = time.perf_counter()
        try:
            self._redis.ping()
        except RedisError as error:
            self._breaker.trip()
            DEPENDENCY_ERRORS.labels("redis", "unavailable").inc()
            raise CacheUnavailable(f"Redis is unavailable: {type(error).__name__}") from error
        finally:
            self._latency["ping"].observe(time.perf_counter() - started)
        if not self._breaker.allow():
            raise CacheUnavailable("Redis answers, but the cache is not in use yet (recovering)")

    def close(self) -> None:
        self._stopping.set()
        self._redis.close()

    # Near cache

    def _breaker_changed(self, name: str, state: BreakerState) -> None:
        _report_breaker(name, state)
        # While Redis is out, writes elsewhere cannot reach it (nor send
        # invalidations): drop the near copies; they come back with Redis.
        if self._near is not None and state is not BreakerState.CLOSED:
            self._near.disable()

    def _receive_invalidations(self) -> None:
        """Keep a RESP2 connection subscribed to Redis' invalidation messages
        for the movie keys; the near cache serves only while it is up."""
        assert self._near is not None
        while not self._stopping.is_set():
            connection = None
            try:
                connection = self._tracking_connection()
                while not self._stopping.is_set():
                    if self._breaker.state is BreakerState.CLOSED and not self._near.enabled:
                        self._near.enable()
                    if not connection.can_read(timeout=1.0):
                        continue
                    message = connection.read_response()
                    if isinstance(message, list) and message[0] == b"message":
                        keys = message[2]
                        self._near.invalidate(
                            None if keys is None else [k.decode().removeprefix(self._movie_prefix) for k in keys]
                        )
            except (RedisError, OSError) as error:
                log.debug("near cache invalidations interrupted: %s", error)
            finally:
                self._near.disable()
                if connection is not None:
                    connection.disconnect()
            self._stopping.wait(0.5)

    def _tracking_connection(self) -> Any:
        pool = self._redis.connection_pool
        options = dict(pool.connection_kwargs, protocol=2)
        if _MaintNotificationsConfig is not None:
            options["maint_notifications_config"] = _MaintNotificationsConfig(enabled=False)
        connection = pool.connection_class(**options)
        connection.connect()
        connection.send_command("CLIENT", "ID")
        client_id = connection.read_response()
        connection.send_command(
            "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX", self._movie_prefix
        )
        connection.read_response()
        connection.send_command("SUBSCRIBE", "__redis__:invalidate")
        connection.read_response()
        return connection


def _xfetch(expiry_ms: bytes | float | None, delta_ms: bytes | float | None, now_ms: float | None = None) -> bool:
    """Probabilistic early expiration (Vattani, Chierichetti, Lowenstein, VLDB 2015).

    Refresh when now - delta * beta * ln(U) >= expiry, U uniform in (0, 1]:
    the closer to expiry and the costlier the reload (delta), the likelier.
    """
    if expiry_ms is None or delta_ms is None:
        return False
    delta = float(delta_ms) * _XFETCH_BETA
    if delta <= 0:
        return False
    expiry = float(expiry_ms)
    if now_ms is None:
        now_ms = time.time() * 1000
    if now_ms < expiry - _XFETCH_HORIZON * delta:
        return False  # the probability is below e**-30: skip the random draw
    return now_ms - delta * math.log(1.0 - random.random()) >= expiry


def _candidate(member: bytes, value: bytes) -> TheaterCandidate:
    latitude, longitude = _COORDINATES.unpack_from(value)
    return TheaterCandidate(int(member), latitude, longitude, value[_COORDINATES.size :])


def _report_breaker(name: str, state: BreakerState) -> None:
    BREAKER_STATE.labels(name).set(int(state))
    if state is BreakerState.OPEN:
        log.warning("%s circuit breaker open: serving from the store until it recovers", name)
    elif state is BreakerState.CLOSED:
        log.info("%s circuit breaker closed", name)
