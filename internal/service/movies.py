"""MovieService: the four RPCs, written against the Cache and Store interfaces.

Reads try the cache first and fall back to the store when the cache misses or
is unavailable; writes go to the store (the source of truth) and then to the
cache before they are acknowledged.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import NoReturn, TypeVar

import grpc

from movieservice.metrics import (
    CACHE_LOOKUPS,
    CACHE_REPAIRS,
    COALESCED,
    EARLY_REFRESHES,
    FALLBACKS,
    FILL_LAG_SECONDS,
    INDEX_REBUILDS,
)
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from movieservice.proto.movies.v1.movies_pb2 import Movie
from movieservice.service import wire
from movieservice.service.errors import abort, abort_invalid
from movieservice.service.flights import SingleFlight
from movieservice.service.geo import distances_km
from movieservice.service.paging import InvalidPageToken, decode_page_token, encode_page_token
from movieservice.service.ports import (
    Cache,
    CachedMovie,
    CacheUnavailable,
    DependencyError,
    RankedId,
    RankEntry,
    Store,
    StoredMovie,
    StoreTimeout,
    StoreUnavailable,
    TheaterCandidate,
    TopCursor,
)
from movieservice.service.ranking import Ranking, genre_key
from movieservice.service.validation import (
    DEFAULT_LIMIT,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RADIUS_KM,
    MAX_LIMIT,
    MAX_PAGE_SIZE,
    check_genre,
    check_movie_id,
    check_nearby,
    check_page_size,
    check_upsert,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TOP_INDEX_LOCK = "top-index"
GEO_INDEX_LOCK = "geo-index"
# Rebuilding an index reads a whole collection: allow it more than one request's time.
REBUILD_TIMEOUT_SECONDS = 120.0
_POLL_SECONDS = 0.05
# Redis computes GEO distances on a sphere of radius 6372.797 km, 0.03% larger
# than the mean radius the service reports distances on; search a little wider
# and keep exactly what the service's own formula puts inside the radius.
_GEO_RADIUS_SLACK = 1.001
_GEO_EXTRA_CANDIDATES = 16
_FILL_POLL_SECONDS = 0.005
_REPAIR_RETRY_SECONDS = 0.1


class MovieService(movies_pb2_grpc.MovieServiceServicer):
    def __init__(
        self,
        cache: Cache,
        store: Store,
        *,
        populate: Executor,
        ranking: Ranking | None = None,
        auth_token: str = "",
        request_timeout_seconds: float = 5.0,
        fill_lease_seconds: float = 2.0,
        repair_interval_seconds: float = 1.0,
        fill_delay_seconds: float = 0.0,
    ) -> None:
        self._cache = cache
        self._store = store
        self._populate = populate
        self._ranking = ranking or Ranking()
        self._auth_token = auth_token.encode()
        self._request_timeout = request_timeout_seconds
        self._lease_seconds = fill_lease_seconds
        self._repair_interval = repair_interval_seconds
        # Test hook: widens the window between reading the store and filling
        # the cache, so that the consistency checker can provoke the races.
        self._fill_delay = fill_delay_seconds
        self._loads: SingleFlight[Movie | None] = SingleFlight()
        self._batch_loads: SingleFlight[dict[str, StoredMovie]] = SingleFlight()
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()
        self._repair_wakeup = threading.Event()
        self._lookups = {
            (cache_name, result): CACHE_LOOKUPS.labels(cache_name, result)
            for cache_name in ("movie", "top_rated", "geo")
            for result in ("hit", "miss", "negative_hit", "error")
        }
        # Before Redis is trusted again after an outage, apply the writes it missed.
        cache.set_recovery_hook(self.apply_cache_repairs)

    # Get: cache-aside

    def Get(self, request: movies_pb2.GetRequest, context: grpc.ServicerContext) -> bytes:
        """The serialized GetResponse: a cache hit answers with the cached bytes
        as they are, without parsing or re-serializing the movie (register Get
        with an identity response serializer, as internal/server.py does)."""
        problems = check_movie_id("id", request.id)
        if problems:
            abort_invalid(context, problems)
        movie_id = request.id.lower()
        try:
            cached = self._cache.get_movie(movie_id)
        except CacheUnavailable:
            # No coalescing here: a shared read that began before a write the
            # cache could not record might be older than that write.
            self._lookups["movie", "error"].inc()
            FALLBACKS.labels("Get").inc()
            stored = self._from_store(context, self._store.get_movie, movie_id)
            return self._movie_response(context, movie_id, stored.movie if stored else None)
        if cached is None:
            self._lookups["movie", "miss"].inc()
            return self._movie_response(context, movie_id, self._load(context, movie_id))
        if cached.refresh_early:
            self._refresh_soon(movie_id)
        if cached.data is None:
            self._lookups["movie", "negative_hit"].inc()
            return self._movie_response(context, movie_id, None)
        self._lookups["movie", "hit"].inc()
        return wire.get_response(cached.data)

    @staticmethod
    def _movie_response(context: grpc.ServicerContext, movie_id: str, movie: Movie | None) -> bytes:
        if movie is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"movie {movie_id} not found")
        return movies_pb2.GetResponse(movie=movie).SerializeToString()

    def _load(self, context: grpc.ServicerContext, movie_id: str) -> Movie | None:
        """Read a missed movie once for all concurrent callers of this process."""
        timeout = self._timeout(context)
        try:
            movie, shared = self._run_store_call(
                context, lambda: self._loads.run(movie_id, lambda: self._load_once(movie_id, timeout), timeout)
            )
        except TimeoutError:
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded waiting for the movie")
        if shared:
            COALESCED.labels("in_process").inc()
        return movie

    def _load_once(self, movie_id: str, timeout: float) -> Movie | None:
        """Read the store unless another process holds the fill lease for this
        movie, in which case wait (briefly) for its fill instead."""
        token = None
        try:
            token = self._cache.try_lock(f"fill:{movie_id}", self._lease_seconds)
            # With the lease, look again: the previous holder may have filled
            # the entry between this caller's miss and now.
            filled = (
                self._cache.get_movie(movie_id)
                if token is not None
                else self._wait_for_fill(movie_id, min(timeout, self._lease_seconds))
            )
            if filled is not None:
                if token is not None:
                    self._cache.unlock(f"fill:{movie_id}", token)
                COALESCED.labels("lease").inc()
                return None if filled.data is None else Movie.FromString(filled.data)
        except CacheUnavailable:
            pass
        epoch = self._cache.recovery_epoch()
        started = time.monotonic()
        stored = self._store.get_movie(movie_id, timeout)
        answered = time.monotonic()
        self._populate.submit(self._fill, movie_id, stored, epoch, answered - started, token, answered)
        return stored.movie if stored is not None else None

    def _wait_for_fill(self, movie_id: str, seconds: float) -> CachedMovie | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(_FILL_POLL_SECONDS)
            cached = self._cache.get_movie(movie_id)
            if cached is not None:
                return cached
        return None

    def _fill(
        self,
        movie_id: str,
        stored: StoredMovie | None,
        epoch: int,
        load_seconds: float,
        lease: str | None,
        answered: float,
    ) -> None:
        if self._fill_delay:
            time.sleep(self._fill_delay)
        try:
            self._cache.put_movie(movie_id, stored, load_seconds, epoch)
            FILL_LAG_SECONDS.observe(time.monotonic() - answered)
            if lease is not None:
                self._cache.unlock(f"fill:{movie_id}", lease)
        except CacheUnavailable as error:
            log.debug("could not cache movie %s: %s", movie_id, error)

    def _refresh_soon(self, movie_id: str) -> None:
        """Reload a hot movie before its entry expires (XFetch), once at a time."""
        with self._refreshing_lock:
            if movie_id in self._refreshing:
                return
            self._refreshing.add(movie_id)
        self._populate.submit(self._refresh, movie_id)

    def _refresh(self, movie_id: str) -> None:
        try:
            epoch = self._cache.recovery_epoch()
            started = time.monotonic()
            stored = self._store.get_movie(movie_id, self._request_timeout)
            self._cache.put_movie(movie_id, stored, time.monotonic() - started, epoch)
            EARLY_REFRESHES.inc()
        except DependencyError as error:
            log.debug("early refresh of %s failed: %s", movie_id, error)
        finally:
            with self._refreshing_lock:
                self._refreshing.discard(movie_id)

    # Upsert: write-through

    def Upsert(self, request: movies_pb2.UpsertRequest, context: grpc.ServicerContext) -> movies_pb2.UpsertResponse:
        self._require_writer(context)
        problems = check_upsert(request.movie, request.HasField("movie"))
        if problems:
            abort_invalid(context, problems)
        movie = Movie()
        movie.CopyFrom(request.movie)
        movie.id = movie.id.lower()
        outcome = self._from_store(context, self._store.upsert_movie, movie)
        stored = outcome.stored
        try:
            self._cache.write_movie(stored, self._ranking.entry(stored))
        except CacheUnavailable as error:
            # MongoDB has the write; the cache may still hold the old movie.
            # Record that durably before acknowledging, so that every server
            # process repairs the cache before trusting it again.
            self._from_store(context, self._store.record_cache_repair, stored.movie.id)
            CACHE_REPAIRS.labels("recorded").inc()
            self._repair_wakeup.set()
            log.warning("movie %s written; cache update deferred: %s", stored.movie.id, error)
        log.info("upsert movie=%s version=%d created=%s", stored.movie.id, stored.version, outcome.created)
        return movies_pb2.UpsertResponse(movie=stored.movie, created=outcome.created)

    def apply_cache_repairs(self) -> int:
        """Apply to the cache the current version of every movie whose write
        could not reach it; returns how many. Raises DependencyError."""
        repairs = self._store.cache_repairs(self._request_timeout)
        for repair in repairs:
            stored = self._store.get_movie(repair.movie_id, self._request_timeout)
            if stored is not None:
                self._cache.write_movie(stored, self._ranking.entry(stored))
            self._store.clear_cache_repair(repair, self._request_timeout)
            CACHE_REPAIRS.labels("applied").inc()
        if repairs:
            log.info("applied %d deferred cache updates", len(repairs))
        return len(repairs)

    def run_repair_loop(self, stop: threading.Event) -> None:
        """Until `stop`: apply deferred cache updates, at once after a failed
        write, else every repair interval (writes made elsewhere).

        The loop outlives any error: a repair that fails is retried, since the
        to-do list in MongoDB still holds it.
        """
        while not stop.is_set():
            self._repair_wakeup.wait(self._repair_interval)
            self._repair_wakeup.clear()
            if stop.is_set():
                return
            try:
                if self._cache.available():
                    self.apply_cache_repairs()
            except DependencyError as error:
                log.debug("deferred cache updates not applied yet: %s", error)
                stop.wait(_REPAIR_RETRY_SECONDS)
                self._repair_wakeup.set()
            except Exception:
                log.exception("deferred cache updates failed; retrying in %.0f s", self._repair_interval)

    def wake_repair_loop(self) -> None:
        """Make the repair loop look at its stop event now rather than at its next interval."""
        self._repair_wakeup.set()

    def _require_writer(self, context: grpc.ServicerContext) -> None:
        if not self._auth_token:
            abort(context, grpc.StatusCode.PERMISSION_DENIED, "writes are disabled: the server has no AUTH_TOKEN")
        header = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token:
            abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "Upsert needs the metadata 'authorization: Bearer <token>'",
            )
        if not hmac.compare_digest(token.strip().encode(), self._auth_token):
            abort(context, grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")

    # TopRated: sorted sets kept current by writes

    def TopRated(self, request: movies_pb2.TopRatedRequest, context: grpc.ServicerContext) -> bytes:
        """The serialized TopRatedResponse, assembled from the cached movies' bytes."""
        problems = check_page_size(request.page_size) + check_genre(request.genre)
        if problems:
            abort_invalid(context, problems)
        genre = genre_key(request.genre)
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        cursor = None
        if request.page_token:
            try:
                cursor = decode_page_token(request.page_token, genre)
            except InvalidPageToken as error:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"page_token: {error}")
        # One more than asked for tells whether there is a next page.
        ranked = self._top_page(context, genre, cursor, page_size + 1)
        page = ranked[:page_size]
        next_token = ""
        if len(ranked) > page_size:
            last = page[-1]
            next_token = encode_page_token(genre, TopCursor(score=last.score, movie_id=last.movie_id))
        return wire.top_rated_response(self._page_movies(context, page), next_token)

    def _top_page(
        self, context: grpc.ServicerContext, genre: str, cursor: TopCursor | None, limit: int
    ) -> list[RankedId]:
        try:
            ranked = self._cache.top_page(genre, cursor, limit)
            self._lookups["top_rated", "miss" if ranked is None else "hit"].inc()
            if ranked is None:
                self._ensure_index(context, TOP_INDEX_LOCK, self._cache.top_index_ready, self._rebuild_top)
                ranked = self._cache.top_page(genre, cursor, limit)
        except CacheUnavailable:
            self._lookups["top_rated", "error"].inc()
            FALLBACKS.labels("TopRated").inc()
            return self._top_page_from_store(context, genre, cursor, limit)
        if ranked is None:
            abort(context, grpc.StatusCode.UNAVAILABLE, "the TopRated index is being rebuilt; retry")
        return ranked

    def _rebuild_top(self) -> None:
        count = self._cache.rebuild_top_index(
            lambda: [self._ranking.entry(s) for s in self._store.movie_ratings(REBUILD_TIMEOUT_SECONDS)]
        )
        INDEX_REBUILDS.labels("top_rated").inc()
        log.info("rebuilt the TopRated index: %d movies", count)

    def _top_page_from_store(
        self, context: grpc.ServicerContext, genre: str, cursor: TopCursor | None, limit: int
    ) -> list[RankedId]:
        entries = [self._ranking.entry(s) for s in self._from_store(context, self._store.movie_ratings)]
        return top_page_of(entries, genre, cursor, limit)

    def _page_movies(self, context: grpc.ServicerContext, page: Sequence[RankedId]) -> list[bytes]:
        """The serialized movies of `page`, in order: cached ones as they are,
        the others read from the store (and cached in the background)."""
        found = {entry.movie_id: entry.data for entry in page if entry.data is not None}
        missing = [entry.movie_id for entry in page if entry.data is None]
        if missing:
            # A page without any cached movie came from the store because the
            # cache is down: no coalescing then (see Get).
            cache_ok = len(missing) < len(page) or self._cache.available()
            epoch = self._cache.recovery_epoch()
            started = time.monotonic()
            timeout = self._timeout(context)

            def load() -> dict[str, StoredMovie]:
                return self._store.get_movies(missing, timeout)

            # Concurrent requests for the same page (everyone's first page
            # after the cache lost it) share one store read.
            stored, shared = self._run_store_call(
                context, lambda: self._batch_loads.run(tuple(missing), load) if cache_ok else (load(), False)
            )
            answered = time.monotonic()
            if shared:
                COALESCED.labels("in_process").inc()
            for movie_id, item in stored.items():
                found[movie_id] = item.movie.SerializeToString()
                if not shared:
                    self._populate.submit(self._fill, movie_id, item, epoch, answered - started, None, answered)
        return [data for entry in page if (data := found.get(entry.movie_id)) is not None]

    # Nearby: a GEO index built from the theaters collection

    def Nearby(self, request: movies_pb2.NearbyRequest, context: grpc.ServicerContext) -> bytes:
        """The serialized NearbyResponse, assembled from the cached theaters' bytes."""
        problems = check_nearby(request.latitude, request.longitude, request.radius_km, request.limit)
        if problems:
            abort_invalid(context, problems)
        radius = request.radius_km or DEFAULT_RADIUS_KM
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        candidates = self._theaters_near(
            context,
            request.latitude,
            request.longitude,
            radius * _GEO_RADIUS_SLACK + 0.01,
            limit + _GEO_EXTRA_CANDIDATES,
        )
        return wire.nearby_response(nearest(candidates, request.latitude, request.longitude, radius, limit))

    def _theaters_near(
        self, context: grpc.ServicerContext, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[TheaterCandidate]:
        try:
            found = self._cache.theaters_near(latitude, longitude, radius_km, count)
            self._lookups["geo", "miss" if found is None else "hit"].inc()
            if found is None:
                self._ensure_index(context, GEO_INDEX_LOCK, self._geo_index_ready, self._rebuild_geo)
                found = self._cache.theaters_near(latitude, longitude, radius_km, count)
        except CacheUnavailable:
            self._lookups["geo", "error"].inc()
            FALLBACKS.labels("Nearby").inc()
            return [
                TheaterCandidate(t.theater_id, t.latitude, t.longitude, t.SerializeToString())
                for t in self._from_store(context, self._store.theaters)
            ]
        if found is None:
            abort(context, grpc.StatusCode.UNAVAILABLE, "the theater index is being rebuilt; retry")
        return found

    def _geo_index_ready(self) -> bool:
        return self._cache.theaters_near(0.0, 0.0, 1.0, 1) is not None

    def _rebuild_geo(self) -> None:
        theaters = self._store.theaters(REBUILD_TIMEOUT_SECONDS)
        self._cache.rebuild_geo_index(theaters)
        INDEX_REBUILDS.labels("geo").inc()
        log.info("rebuilt the theater index: %d theaters", len(theaters))

    # Index rebuilds: one process rebuilds, the others wait for it

    def _ensure_index(
        self,
        context: grpc.ServicerContext | None,
        lock: str,
        is_ready: Callable[[], bool],
        rebuild: Callable[[], None],
    ) -> None:
        deadline = time.monotonic() + (self._timeout(context) if context else REBUILD_TIMEOUT_SECONDS)
        while True:
            token = self._cache.try_lock(lock, REBUILD_TIMEOUT_SECONDS)
            if token is not None:
                try:
                    if not is_ready():
                        self._run_store_call(context, rebuild)
                finally:
                    self._cache.unlock(lock, token)
                return
            if is_ready() or time.monotonic() >= deadline:
                return
            time.sleep(_POLL_SECONDS)

    def warm_up(self) -> None:
        """Build missing indexes now rather than on the first request."""
        for lock, is_ready, rebuild in (
            (TOP_INDEX_LOCK, self._cache.top_index_ready, self._rebuild_top),
            (GEO_INDEX_LOCK, self._geo_index_ready, self._rebuild_geo),
        ):
            try:
                if not is_ready():
                    self._ensure_index(None, lock, is_ready, rebuild)
            except Exception as error:  # noqa: BLE001 - warm-up is best effort
                log.warning("index warm-up (%s) failed: %s", lock, error)

    # Calls to the dependencies

    def _timeout(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._request_timeout
        if remaining <= 0:
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        return min(remaining, self._request_timeout)

    def _from_store(self, context: grpc.ServicerContext, call: Callable[..., T], *args: object) -> T:
        return self._run_store_call(context, lambda: call(*args, self._timeout(context)))

    def _run_store_call(self, context: grpc.ServicerContext | None, call: Callable[[], T]) -> T:
        try:
            return call()
        except StoreUnavailable as error:
            log.warning("store unavailable: %s", error.__cause__ or error)
            self._abort_or_raise(context, grpc.StatusCode.UNAVAILABLE, str(error), error)
        except StoreTimeout as error:
            self._abort_or_raise(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(error), error)

    @staticmethod
    def _abort_or_raise(
        context: grpc.ServicerContext | None, code: grpc.StatusCode, message: str, error: Exception
    ) -> NoReturn:
        if context is None:
            raise error
        abort(context, code, message)


def top_page_of(entries: Sequence[RankEntry], genre: str, cursor: TopCursor | None, limit: int) -> list[RankedId]:
    """A TopRated page computed in memory, in the index's order (score desc, id asc)."""
    ranked = sorted(
        ((e.score, e.movie_id) for e in entries if e.score is not None and (not genre or genre in e.genres)),
        key=lambda item: (-item[0], item[1]),
    )
    if cursor is not None:
        ranked = [r for r in ranked if (-r[0], r[1]) > (-cursor.score, cursor.movie_id)]
    return [RankedId(movie_id=movie_id, score=score) for score, movie_id in ranked[:limit]]


def nearest(
    theaters: Sequence[TheaterCandidate], latitude: float, longitude: float, radius_km: float, limit: int
) -> list[tuple[bytes, float]]:
    """(theater, distance) within `radius_km`, nearest first (ties by theater id), at most `limit`."""
    distances = distances_km(latitude, longitude, [(t.latitude, t.longitude) for t in theaters])
    within = zip(distances, theaters, strict=True)
    scored = sorted((distance, t.theater_id, t.data) for distance, t in within if distance <= radius_km)
    return [(data, distance) for distance, _, data in scored[:limit]]
