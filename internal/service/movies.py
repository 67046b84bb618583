"""MovieService: the four RPCs, written against the Cache and Store interfaces.

Reads try the cache first and fall back to the store when the cache misses or
is unavailable; writes go to the store (the source of truth) and then to the
cache before they are acknowledged.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import NoReturn, TypeVar

import grpc

from internal.service.errors import abort, abort_invalid
from internal.service.geo import haversine_km
from internal.service.paging import InvalidPageToken, decode_page_token, encode_page_token
from internal.service.ports import (
    Cache,
    CacheUnavailable,
    RankedId,
    RankEntry,
    Store,
    StoredMovie,
    StoreTimeout,
    StoreUnavailable,
    TopCursor,
)
from internal.service.ranking import Ranking, genre_key
from internal.service.validation import (
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
from movies.v1 import movies_pb2, movies_pb2_grpc
from movies.v1.movies_pb2 import Movie, Theater

log = logging.getLogger(__name__)

A = TypeVar("A")
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
    ) -> None:
        self._cache = cache
        self._store = store
        self._populate = populate
        self._ranking = ranking or Ranking()
        self._auth_token = auth_token.encode()
        self._request_timeout = request_timeout_seconds

    # Get: cache-aside

    def Get(self, request: movies_pb2.GetRequest, context: grpc.ServicerContext) -> movies_pb2.GetResponse:
        problems = check_movie_id("id", request.id)
        if problems:
            abort_invalid(context, problems)
        movie_id = request.id.lower()
        data = self._cached(self._cache.get_movie, movie_id)
        if data is not None:
            return movies_pb2.GetResponse(movie=Movie.FromString(data))
        stored = self._from_store(context, self._store.get_movie, movie_id)
        if stored is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"movie {movie_id} not found")
        self._populate.submit(self._put_quietly, stored)
        return movies_pb2.GetResponse(movie=stored.movie)

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
        try:
            self._cache.write_movie(outcome.stored, self._ranking.entry(outcome.stored))
        except CacheUnavailable as error:
            # The store has the write. Reads fall back to the store while the
            # cache is unreachable.
            log.warning("movie %s written but not cached: %s", outcome.stored.movie.id, error)
        log.info(
            "upsert movie=%s version=%d created=%s",
            outcome.stored.movie.id,
            outcome.stored.version,
            outcome.created,
        )
        return movies_pb2.UpsertResponse(movie=outcome.stored.movie, created=outcome.created)

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

    def TopRated(
        self, request: movies_pb2.TopRatedRequest, context: grpc.ServicerContext
    ) -> movies_pb2.TopRatedResponse:
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
        movies = self._movies_by_id(context, [entry.movie_id for entry in page])
        return movies_pb2.TopRatedResponse(movies=movies, next_page_token=next_token)

    def _top_page(
        self, context: grpc.ServicerContext, genre: str, cursor: TopCursor | None, limit: int
    ) -> list[RankedId]:
        try:
            ranked = self._cache.top_page(genre, cursor, limit)
            if ranked is None:
                self._ensure_index(context, TOP_INDEX_LOCK, self._cache.top_index_ready, self._rebuild_top)
                ranked = self._cache.top_page(genre, cursor, limit)
        except CacheUnavailable as error:
            log.warning("TopRated from the store: %s", error)
            return self._top_page_from_store(context, genre, cursor, limit)
        if ranked is None:
            abort(context, grpc.StatusCode.UNAVAILABLE, "the TopRated index is being rebuilt; retry")
        return ranked

    def _rebuild_top(self) -> None:
        entries = [self._ranking.entry(s) for s in self._store.movie_ratings(REBUILD_TIMEOUT_SECONDS)]
        self._cache.rebuild_top_index(entries)
        log.info("rebuilt the TopRated index: %d movies", len(entries))

    def _top_page_from_store(
        self, context: grpc.ServicerContext, genre: str, cursor: TopCursor | None, limit: int
    ) -> list[RankedId]:
        entries = [self._ranking.entry(s) for s in self._from_store(context, self._store.movie_ratings)]
        return top_page_of(entries, genre, cursor, limit)

    def _movies_by_id(self, context: grpc.ServicerContext, movie_ids: Sequence[str]) -> list[Movie]:
        cached = self._cached(self._cache.get_movies, movie_ids) or [None] * len(movie_ids)
        found = {i: Movie.FromString(data) for i, data in zip(movie_ids, cached, strict=True) if data is not None}
        missing = [i for i in movie_ids if i not in found]
        if missing:
            stored = self._from_store(context, self._store.get_movies, missing)
            for movie_id, item in stored.items():
                found[movie_id] = item.movie
                self._populate.submit(self._put_quietly, item)
        return [found[i] for i in movie_ids if i in found]

    # Nearby: a GEO index built from the theaters collection

    def Nearby(self, request: movies_pb2.NearbyRequest, context: grpc.ServicerContext) -> movies_pb2.NearbyResponse:
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
        return movies_pb2.NearbyResponse(
            theaters=nearest(candidates, request.latitude, request.longitude, radius, limit)
        )

    def _theaters_near(
        self, context: grpc.ServicerContext, latitude: float, longitude: float, radius_km: float, count: int
    ) -> list[Theater]:
        try:
            found = self._cache.theaters_near(latitude, longitude, radius_km, count)
            if found is None:
                self._ensure_index(context, GEO_INDEX_LOCK, self._geo_index_ready, self._rebuild_geo)
                found = self._cache.theaters_near(latitude, longitude, radius_km, count)
        except CacheUnavailable as error:
            log.warning("Nearby from the store: %s", error)
            return self._from_store(context, self._store.theaters)
        if found is None:
            abort(context, grpc.StatusCode.UNAVAILABLE, "the theater index is being rebuilt; retry")
        return found

    def _geo_index_ready(self) -> bool:
        return self._cache.theaters_near(0.0, 0.0, 1.0, 1) is not None

    def _rebuild_geo(self) -> None:
        theaters = self._store.theaters(REBUILD_TIMEOUT_SECONDS)
        self._cache.rebuild_geo_index(theaters)
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

    @staticmethod
    def _cached(call: Callable[[A], T], argument: A) -> T | None:
        try:
            return call(argument)
        except CacheUnavailable as error:
            log.warning("cache read failed, using the store: %s", error)
            return None

    def _put_quietly(self, stored: StoredMovie) -> None:
        try:
            self._cache.put_movie(stored)
        except CacheUnavailable as error:
            log.debug("could not cache movie %s: %s", stored.movie.id, error)


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
    theaters: Sequence[Theater], latitude: float, longitude: float, radius_km: float, limit: int
) -> list[movies_pb2.NearbyTheater]:
    """The theaters within `radius_km`, nearest first (ties by theater id), at most `limit`."""
    scored = sorted(
        ((haversine_km(latitude, longitude, t.latitude, t.longitude), t.theater_id, t) for t in theaters),
        key=lambda item: (item[0], item[1]),
    )
    return [movies_pb2.NearbyTheater(theater=t, distance_km=d) for d, _, t in scored if d <= radius_km][:limit]
