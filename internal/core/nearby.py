"""Nearby: theaters near a point, from a GEO index in the cache that is
rebuilt from the store's theaters when missing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from movieservice.core.background import Background
from movieservice.core.deadline import Deadline
from movieservice.core.errors import InvalidArgument, Unavailable
from movieservice.core.geo import distances_km
from movieservice.core.indexes import Indexes
from movieservice.core.ports import Cache, CacheUnavailable, ServiceEvents, Store, TheaterCandidate
from movieservice.core.store_calls import store_errors
from movieservice.core.validation import DEFAULT_LIMIT, DEFAULT_RADIUS_KM, MAX_LIMIT, check_nearby

# Redis computes GEO distances on a sphere of radius 6372.797 km, 0.03% larger
# than the mean radius the service reports distances on; search a little wider
# and keep exactly what the service's own formula puts inside the radius.
_GEO_RADIUS_SLACK = 1.001
_GEO_EXTRA_CANDIDATES = 16


class NearbyTheater(NamedTuple):
    data: bytes  # the serialized Theater
    distance_km: float


class NearbyTheaters:
    def __init__(
        self, cache: Cache, store: Store, events: ServiceEvents, indexes: Indexes, background: Background
    ) -> None:
        self._cache = cache
        self._store = store
        self._events = events
        self._indexes = indexes
        self._background = background

    async def search(
        self, latitude: float, longitude: float, radius_km: float, limit: int, deadline: Deadline
    ) -> list[NearbyTheater]:
        """Theaters within `radius_km` (0: the default), nearest first, at most
        `limit` (0: the default). InvalidArgument, Unavailable, DeadlineExceeded."""
        problems = check_nearby(latitude, longitude, radius_km, limit)
        if problems:
            raise InvalidArgument(problems)
        radius = radius_km or DEFAULT_RADIUS_KM
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        candidates = await self._candidates(
            latitude, longitude, radius * _GEO_RADIUS_SLACK + 0.01, limit + _GEO_EXTRA_CANDIDATES, deadline
        )
        return nearest(candidates, latitude, longitude, radius, limit)

    async def _candidates(
        self, latitude: float, longitude: float, radius_km: float, count: int, deadline: Deadline
    ) -> list[TheaterCandidate]:
        try:
            found = await self._cache.theaters_near(latitude, longitude, radius_km, count)
            self._events.cache_lookup("geo", "miss" if found is None else "hit")
            if found is None:
                await self._background.finish(self._indexes.ensure_geo(deadline))
                found = await self._cache.theaters_near(latitude, longitude, radius_km, count)
        except CacheUnavailable:
            self._events.cache_lookup("geo", "error")
            self._events.fallback("Nearby")
            with store_errors():
                theaters = await self._store.theaters(deadline.timeout())
            return [TheaterCandidate(t.theater_id, t.latitude, t.longitude, t.SerializeToString()) for t in theaters]
        if found is None:
            raise Unavailable("the theater index is being rebuilt; retry")
        return found


def nearest(
    theaters: Sequence[TheaterCandidate], latitude: float, longitude: float, radius_km: float, limit: int
) -> list[NearbyTheater]:
    """Theaters within `radius_km`, nearest first (ties by theater id), at most `limit`."""
    distances = distances_km(latitude, longitude, [(t.latitude, t.longitude) for t in theaters])
    within = zip(distances, theaters, strict=True)
    scored = sorted((distance, t.theater_id, t.data) for distance, t in within if distance <= radius_km)
    return [NearbyTheater(data, distance) for distance, _, data in scored[:limit]]
