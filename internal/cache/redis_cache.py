"""RedisCache: the `Cache` port on Redis (the key schema is in keys.py, the
Lua scripts in lua/, the near cache in near.py and tracking.py).

Every write is a Lua script that checks versions, so a slow writer holding an
old version can never replace a newer copy or index entry. Every call goes
through a circuit breaker: any Redis error opens it, calls then fail at once
(the service reads the store), and before the cache is used again the
recovery hook (the service's cache repairs) reconciles the writes it missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from movieservice import tracing
from movieservice.breaker import BreakerState, CircuitBreaker
from movieservice.cache import scripts, xfetch
from movieservice.cache.keys import Keys
from movieservice.cache.near import NearCache
from movieservice.cache.pipelining import AutoPipeline
from movieservice.cache.tracking import InvalidationListener
from movieservice.core.ports import (
    CachedMovie,
    CacheUnavailable,
    RankedId,
    RankEntry,
    StoredMovie,
    TheaterCandidate,
    TopCursor,
)
from movieservice.core.tracing import FILL_REASON
from movieservice.metrics import DependencyMetrics
from movieservice.proto.movies.v1.movies_pb2 import Theater

T = TypeVar("T")
log = logging.getLogger(__name__)

_REBUILD_BATCH = 500
# Values of geo:theater: exact latitude and longitude, then the serialized
# Theater. geo:ready holds _GEO_FORMAT; an index in another format is rebuilt.
_COORDINATES = struct.Struct("<dd")
_GEO_FORMAT = "coordinates+theater/1"
# Entries live MOVIE_TTL_SECONDS +- 10% so that entries loaded together do not expire together.
_TTL_JITTER = 0.1
OPERATIONS = (
    "get", "put", "write", "top_page", "top_ready", "nearby", "geo_ready", "rebuild", "lease", "release",
    "lock", "unlock", "clear", "ping",
)  # fmt: skip
# The command each operation sends, naming its span (as opentelemetry-instrumentation-redis
# names a command's): scripts by EVALSHA and the script's name; "rebuild" and "clear" send
# several kinds of command (SCAN, DEL or UNLINK, scripts, MULTI/EXEC) and keep their own name.
COMMANDS = {
    "get": "HMGET", "put": "EVALSHA put_movie", "write": "EVALSHA write_movie", "top_page": "EVALSHA top_page",
    "top_ready": "GET", "nearby": "EVALSHA nearby", "geo_ready": "GET", "rebuild": "rebuild", "lease": "SET",
    "release": "EVALSHA unlock", "lock": "SET", "unlock": "EVALSHA unlock", "clear": "clear", "ping": "PING",
}  # fmt: skip


def redis_pool(url: str, timeout_seconds: float, **options: Any) -> aioredis.ConnectionPool:
    """Connections to `url` as the service uses them: short timeouts and a
    single attempt, since a slow or dead Redis must not multiply the latency of
    every call (the service falls back to the store instead)."""
    return aioredis.ConnectionPool.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        # RESP2: replies in the order of the commands and nothing else (no pushes).
        protocol=2,
        **options,
    )


def tls_options(ca_file: str = "", cert_file: str = "", key_file: str = "") -> dict[str, str]:
    """redis-py's options of a rediss:// connection: the CA bundle the server's
    certificate must chain to (empty: the system's), and the client certificate
    and key for a Redis that asks for one. The server's name is checked too."""
    files = {"ssl_ca_certs": ca_file, "ssl_certfile": cert_file, "ssl_keyfile": key_file}
    return {option: path for option, path in files.items() if path}


class RedisCache:
    def __init__(
        self,
        url: str,
        metrics: DependencyMetrics,
        *,
        key_prefix: str = "movieservice:",
        movie_ttl_seconds: float = 3600.0,
        negative_ttl_seconds: float = 10.0,
        top_index_tag: str = "v1",
        timeout_seconds: float = 0.5,
        breaker_reset_seconds: float = 1.0,
        near_cache_size: int = 0,
        near_cache_ttl_seconds: float = 30.0,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        """`tls`: `tls_options(...)` for a rediss:// `url`; every connection (the
        commands' and the near cache's invalidations') uses them."""
        self._timeout_seconds = timeout_seconds
        self._execute = self._connect(url, timeout_seconds, tls or {})
        self.keys = self._key_schema(key_prefix)
        self._ttl_ms = movie_ttl_seconds * 1000
        self._negative_ttl_ms = negative_ttl_seconds * 1000
        self._tag = top_index_tag
        self._metrics = metrics
        self._latency = {op: metrics.latency("redis", op) for op in OPERATIONS}
        self._recovery_hook: Callable[[], Awaitable[object]] | None = None
        self._breaker = CircuitBreaker(
            "redis",
            failure_threshold=1,
            reset_seconds=breaker_reset_seconds,
            probe=self._probe,
            on_change=self._breaker_changed,
        )
        metrics.breaker_state("redis", self._breaker.state)
        # None while traces are off: then `_run` costs one comparison more, nothing else.
        self._tracer = tracing.active().library_tracer(__name__)
        self._span_attributes = _connection_attributes(self._connection_options())
        self._near: NearCache | None = None
        self._listener: InvalidationListener | None = None
        if near_cache_size > 0:
            self._near = NearCache(near_cache_size, near_cache_ttl_seconds)
            self._listener = InvalidationListener(
                url, timeout_seconds, self.keys.movie_prefix, self._near, self._breaker_closed, tls=tls
            )

    def _connect(self, url: str, timeout_seconds: float, tls: Mapping[str, Any]) -> scripts.Execute:
        """The clients; returns how a command is sent (`execute(*args)` -> reply)."""
        self._pool = redis_pool(url, timeout_seconds, **tls)
        self._redis = AutoPipeline(self._pool.make_connection, timeout_seconds=timeout_seconds)
        return self._redis.execute

    def _connection_options(self) -> Mapping[str, Any]:
        return self._pool.connection_kwargs

    @staticmethod
    def _key_schema(prefix: str) -> Keys:
        return Keys(prefix)

    async def _disconnect(self) -> None:
        await self._redis.close()
        await self._pool.aclose()

    async def start(self) -> None:
        """Start receiving invalidations for the near cache (when there is one)."""
        if self._listener is not None:
            self._listener.start()

    async def _run(self, operation: str, call: Callable[[], Awaitable[T]], *, always_try: bool = False) -> T:
        """Run one Redis operation through the breaker, timed, with errors translated.

        `always_try` attempts the call even while the breaker is open.
        """
        if not always_try and not self._breaker.allow():
            self._metrics.error("redis", "circuit_open")
            raise CacheUnavailable("Redis is unavailable (circuit breaker open)")
        if self._tracer is not None and is_instrumentation_enabled() and not tracing.active().unsampled_parent():
            return await self._run_traced(operation, call)
        started = time.perf_counter()
        started_at = self._breaker.now()
        try:
            result = await call()
        except RedisError as error:
            raise self._failed(operation, started, started_at, error) from error
        self._latency[operation].observe(time.perf_counter() - started)
        return result

    async def _run_traced(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """`_run` with a client span around the operation: the auto-pipeline
        (pipelining.py) sends the commands itself, below redis-py's client, so
        opentelemetry-instrumentation-redis never sees them. Attributes as that
        instrumentation sets them (its default, pre-1.26 semantic conventions),
        plus the operation's name as the metrics label it."""
        command = COMMANDS[operation]
        span = self._tracer.start_span(command, kind=SpanKind.CLIENT, attributes=self._span_attributes)
        if span.is_recording():
            span.set_attribute("db.operation", command.split()[0])
            span.set_attribute("db.statement", command)
            span.set_attribute("movieservice.redis.operation", operation)
        try:
            return await self._run_timed(operation, call)
        except CacheUnavailable as error:
            cause = error.__cause__ or error
            span.record_exception(cause)
            span.set_status(Status(StatusCode.ERROR, f"{type(cause).__name__}: {cause}"))
            span.set_attribute("error.type", type(cause).__qualname__)
            raise
        finally:
            span.end()

    async def _run_timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        # What `_run` does inline when traces are off: a coroutine more on every
        # Redis call would be a cost of its own on the tracing-off path.
        started = time.perf_counter()
        started_at = self._breaker.now()
        try:
            result = await call()
        except RedisError as error:
            raise self._failed(operation, started, started_at, error) from error
        self._latency[operation].observe(time.perf_counter() - started)
        return result

    def _failed(self, operation: str, started: float, started_at: float, error: RedisError) -> CacheUnavailable:
        """Account for a failed Redis operation (its time, the breaker, the error
        metric); the error to raise in its place."""
        self._latency[operation].observe(time.perf_counter() - started)
        self._breaker.failure(started_at)
        kind = "timeout" if isinstance(error, RedisTimeoutError) else "unavailable"
        self._metrics.error("redis", kind)
        return CacheUnavailable(f"Redis is unavailable: {type(error).__name__}")

    async def _probe(self) -> None:
        # Bounded even if a reply were lost for good: an endless probe would
        # keep the breaker half-open, and Redis unused, for ever.
        async with asyncio.timeout(4 * self._timeout_seconds):
            await self._ping_servers()
        if self._recovery_hook is not None:
            await self._recovery_hook()

    async def _ping_servers(self) -> None:
        await self._execute("PING")

    def set_recovery_hook(self, hook: Callable[[], Awaitable[object]]) -> None:
        self._recovery_hook = hook

    def available(self) -> bool:
        return self._breaker.allow()

    def recovery_epoch(self) -> int:
        return self._breaker.recoveries

    # Movies

    async def get_movie(self, movie_id: str) -> CachedMovie | None:
        near = self._near
        if near is not None and near.enabled:
            entry: tuple[bytes | None, bytes | None, bytes | None] | None = near.get(movie_id)
            if entry is not None:
                return CachedMovie(entry[0], xfetch.refresh_early(entry[1], entry[2]), near=True)
            sequence = near.sequence
        version, data, expiry_ms, load_ms = await self._run(
            "get", lambda: self._execute("HMGET", self.keys.movie(movie_id), "v", "b", "e", "d")
        )
        if version is None:
            return None
        if near is not None and near.enabled:
            near.put(movie_id, (data, expiry_ms, load_ms), sequence)
        return CachedMovie(data=data, refresh_early=xfetch.refresh_early(expiry_ms, load_ms))

    async def lease_fill(self, movie_id: str, ttl_seconds: float) -> str | None:
        return await self._acquire("lease", self.keys.fill_lease(movie_id), ttl_seconds)

    async def release_fill(self, movie_id: str, lease: str) -> None:
        await self._release("release", self.keys.fill_lease(movie_id), lease)

    async def put_movie(
        self, movie_id: str, stored: StoredMovie | None, load_seconds: float, read_epoch: int, lease: str
    ) -> bool:
        # Read before the cache last recovered from an outage: the writes it
        # missed may be newer, and their fences may be gone with a restarted
        # Redis. Drop it. (The lease is gone too, in that case, unless the
        # outage was a network cut: this check covers that one.)
        if read_epoch != self._breaker.recoveries:
            self._fill_refused("cache_recovered")
            return False
        ttl_ms = (self._ttl_ms if stored is not None else self._negative_ttl_ms) * _jitter()
        written = await self._run(
            "put",
            lambda: scripts.PUT_MOVIE.run(
                self._execute,
                entry=self.keys.movie(movie_id),
                versions=self.keys.fence(movie_id),
                lease=self.keys.fill_lease(movie_id),
                token=lease,
                version=stored.version if stored is not None else -1,
                body=stored.data if stored is not None else b"",
                movie_id=movie_id,
                ttl_ms=int(ttl_ms),
                expires_at_ms=int(time.time() * 1000 + ttl_ms),
                load_ms=int(load_seconds * 1000) or 1,
            ),
        )
        if written != 1:
            # put_movie.lua: 0 when the lease is gone, -1 when a newer version is known.
            self._fill_refused("lease_lost" if written == 0 else "newer_version_cached")
        return bool(written == 1)

    def _fill_refused(self, reason: str) -> None:
        """Why a fill was refused, on the current span (the use case's fill span)."""
        if self._tracer is not None:
            trace.get_current_span().set_attribute(FILL_REASON, reason)

    async def write_movie(self, stored: StoredMovie, rank: RankEntry) -> None:
        # Tried even while the breaker is open: if Redis answers after all, the
        # write lands (with its version fence) instead of waiting for a repair.
        await self._run("write", lambda: self._write_movie(rank, stored.data), always_try=True)
        if self._near is not None:
            # This process reads its own writes: its copy goes before the ack,
            # not when Redis' invalidation message arrives.
            self._near.invalidate([rank.movie_id])

    def _write_movie(self, rank: RankEntry, body: bytes) -> Awaitable[Any]:
        """The write script for `rank` (and the movie's `body`; empty: the indexes only)."""
        ttl_ms = self._ttl_ms * _jitter()
        return scripts.WRITE_MOVIE.run(
            self._execute,
            versions=self.keys.top_version,
            genres_of=self.keys.top_genres,
            ranked=self.keys.top_all,
            entry=self.keys.movie(rank.movie_id),
            lease=self.keys.fill_lease(rank.movie_id),
            movie_id=rank.movie_id,
            version=rank.version,
            score="" if rank.score is None else repr(-rank.score),
            genres="\n".join(rank.genres),
            genre_prefix=self.keys.top_genre_prefix,
            body=body,
            ttl_ms=int(ttl_ms),
            expires_at_ms=int(time.time() * 1000 + ttl_ms),
        )

    # TopRated

    async def top_page(self, genre: str, after: TopCursor | None, limit: int) -> list[RankedId] | None:
        """`genre` as RankEntry.genres has it (normalized); empty for all movies."""
        flat = await self._run(
            "top_page",
            lambda: scripts.TOP_PAGE.run(
                self._execute,
                ready=self.keys.top_ready,
                ranking=self.keys.top_genre(genre) if genre else self.keys.top_all,
                tag=self._tag,
                after_score="" if after is None else repr(-after.score),
                after_id="" if after is None else after.movie_id,
                limit=limit,
                movie_prefix=self.keys.movie_prefix,
            ),
        )
        if flat is None:
            return None
        # (id, score, movie) triples; positional: on every TopRated call.
        return [
            RankedId(movie_id.decode(), -float(score), data or None)
            for movie_id, score, data in zip(flat[0::3], flat[1::3], flat[2::3], strict=True)
        ]

    async def top_index_ready(self) -> bool:
        return bool(
            await self._run("top_ready", lambda: self._execute("GET", self.keys.top_ready)) == self._tag.encode()
        )

    async def rebuild_top_index(self, load_entries: Callable[[], Awaitable[Iterable[RankEntry]]]) -> int:
        """Rebuild from scratch. `load_entries` reads the store only after the
        old index is gone, so every write is either in that snapshot or applied
        after it, and versions order the two (see lua/write_movie.lua)."""
        stale = self.keys.top_indexes() + await self._run(
            "rebuild", lambda: self._scan(self.keys.top_genre_prefix + "*")
        )
        await self._run("rebuild", lambda: self._execute("DEL", *stale))
        entries = list(await load_entries())

        async def apply() -> None:
            for start in range(0, len(entries), _REBUILD_BATCH):
                await asyncio.gather(*(self._write_movie(r, b"") for r in entries[start : start + _REBUILD_BATCH]))
            await self._execute("SET", self.keys.top_ready, self._tag)

        await self._run("rebuild", apply)
        return len(entries)

    async def _scan(self, match: str) -> list[bytes]:
        found: list[bytes] = []
        cursor = b"0"
        while True:
            cursor, keys = await self._execute("SCAN", cursor, "MATCH", match, "COUNT", 1000)
            found += keys
            if cursor in (0, b"0"):
                return found

    # Nearby

    async def theaters_near(
        self, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[TheaterCandidate] | None:
        values = await self._run(
            "nearby",
            lambda: scripts.NEARBY.run(
                self._execute,
                theaters=self.keys.geo,
                details=self.keys.geo_details,
                ready=self.keys.geo_ready,
                longitude=repr(longitude),
                latitude=repr(latitude),
                radius_km=repr(radius_km),
                count=count,
                format=_GEO_FORMAT,
            ),
        )
        if values is None:
            return None
        return [_candidate(values[i], values[i + 1]) for i in range(0, len(values), 2) if values[i + 1]]

    async def geo_index_ready(self) -> bool:
        return bool(
            await self._run("geo_ready", lambda: self._execute("GET", self.keys.geo_ready)) == _GEO_FORMAT.encode()
        )

    async def rebuild_geo_index(self, theaters: Sequence[Theater]) -> None:
        locations, details = geo_entries(theaters)
        commands: list[tuple[Any, ...]] = [("DEL", self.keys.geo, self.keys.geo_details, self.keys.geo_ready)]
        if theaters:
            commands += [("GEOADD", self.keys.geo, *locations), ("HSET", self.keys.geo_details, *details)]
        commands.append(("SET", self.keys.geo_ready, _GEO_FORMAT))

        async def rebuild() -> None:
            # MULTI/EXEC: readers see the old index or the new one, never a part.
            # The commands are queued in one synchronous step, so no other
            # caller's command can land between MULTI and EXEC on the shared
            # connection.
            replies = await asyncio.gather(
                self._execute("MULTI"), *(self._execute(*c) for c in commands), self._execute("EXEC")
            )
            if replies[-1] is None:
                raise RedisError("the theater index transaction was aborted")

        await self._run("rebuild", rebuild)

    # Coordination and lifecycle

    async def try_lock(self, name: str, ttl_seconds: float) -> str | None:
        return await self._acquire("lock", self.keys.lock(name), ttl_seconds)

    async def unlock(self, name: str, token: str) -> None:
        await self._release("unlock", self.keys.lock(name), token)

    async def _acquire(self, operation: str, key: str, ttl_seconds: float) -> str | None:
        """A random token if `key` was free and now holds it (for `ttl_seconds`), else None."""
        token = secrets.token_hex(8)
        acquired = await self._run(
            operation, lambda: self._execute("SET", key, token, "NX", "PX", int(ttl_seconds * 1000))
        )
        return token if acquired else None

    async def _release(self, operation: str, key: str, token: str) -> None:
        """Delete `key` if it still holds `token` (a lease or lock that expired meanwhile may be someone else's)."""
        await self._run(operation, lambda: scripts.UNLOCK.run(self._execute, lock=key, token=token))

    async def clear(self) -> int:
        """Delete every key under the prefix (after reseeding the store)."""

        async def clear() -> int:
            keys = await self._scan(self.keys.prefix + "*")
            for start in range(0, len(keys), 1000):
                await self._execute("UNLINK", *keys[start : start + 1000])
            return len(keys)

        return await self._run("clear", clear)

    async def ping(self) -> None:
        """Check Redis itself, whatever the breaker says; a failure opens the breaker.

        Raises CacheUnavailable when Redis does not answer or the breaker stays
        open (the recovery hook failed).
        """
        started = time.perf_counter()
        try:
            await self._ping_servers()
        except RedisError as error:
            self._breaker.trip()
            self._metrics.error("redis", "unavailable")
            raise CacheUnavailable(f"Redis is unavailable: {type(error).__name__}") from error
        finally:
            self._latency["ping"].observe(time.perf_counter() - started)
        if not self._breaker.allow():
            raise CacheUnavailable("Redis answers, but the cache is not in use yet (recovering)")

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self._breaker.close()
        await self._disconnect()

    # Near cache

    def _breaker_closed(self) -> bool:
        return self._breaker.state is BreakerState.CLOSED

    def _breaker_changed(self, name: str, state: BreakerState) -> None:
        self._metrics.breaker_state(name, state)
        if state is BreakerState.OPEN:
            log.warning("%s circuit breaker open: serving from the store until it recovers", name)
        elif state is BreakerState.CLOSED:
            log.info("%s circuit breaker closed", name)
        # While Redis is out, writes elsewhere cannot reach it (nor send
        # invalidations): drop the near copies; they come back with Redis.
        if self._near is not None and state is not BreakerState.CLOSED:
            self._near.disable()


def _connection_attributes(options: Mapping[str, Any]) -> dict[str, Any]:
    """The span attributes of the server `options` (a redis-py pool's connection_kwargs) name."""
    if "path" in options:
        peer: dict[str, Any] = {"net.peer.name": options["path"], "net.transport": "other"}
    else:
        peer = {
            "net.peer.name": options.get("host", "localhost"),
            "net.peer.port": int(options.get("port", 6379)),
            "net.transport": "ip_tcp",
        }
    return {"db.system": "redis", "db.redis.database_index": int(options.get("db") or 0), **peer}


def geo_entries(theaters: Sequence[Theater]) -> tuple[list[Any], list[Any]]:
    """The theater index's GEOADD arguments (longitude, latitude, member) and
    its details hash's (member, coordinates + the serialized Theater)."""
    locations: list[Any] = []
    details: list[Any] = []
    for theater in theaters:
        member = str(theater.theater_id)
        locations += [theater.longitude, theater.latitude, member]
        details += [member, _COORDINATES.pack(theater.latitude, theater.longitude) + theater.SerializeToString()]
    return locations, details


def _jitter() -> float:
    return random.uniform(1 - _TTL_JITTER, 1 + _TTL_JITTER)


def _candidate(member: bytes, value: bytes) -> TheaterCandidate:
    latitude, longitude = _COORDINATES.unpack_from(value)
    return TheaterCandidate(int(member), latitude, longitude, value[_COORDINATES.size :])
