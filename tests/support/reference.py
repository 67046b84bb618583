"""Reference implementations the tests compare the service against.

Written from the definitions in the README, deliberately without importing
the service's own code.
"""

from __future__ import annotations

import math
from typing import Any

import pymongo

MIN_VOTES = 1000.0
PRIOR_RATING = 6.5
EARTH_RADIUS_KM = 6371.0088


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def expected_ranking(mongo_url: str, database: str, genre: str = "") -> list[str]:
    """Ids of the ranked movies, best first: weighted rating desc, then id asc."""
    ranked: list[tuple[float, str]] = []
    with pymongo.MongoClient(mongo_url) as client:
        for doc in client[database].movies.find({}, {"imdb": 1, "genres": 1}):
            imdb = doc.get("imdb") or {}
            rating = _number(imdb.get("rating"))
            if rating is None:
                continue
            if genre and genre.lower() not in {g.strip().lower() for g in doc.get("genres") or []}:
                continue
            votes = max(int(_number(imdb.get("votes")) or 0), 0)
            score = (votes * rating + MIN_VOTES * PRIOR_RATING) / (votes + MIN_VOTES)
            ranked.append((score, str(doc["_id"])))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return [movie_id for _, movie_id in ranked]


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def all_theaters(mongo_url: str, database: str) -> list[tuple[int, float, float]]:
    """(theaterId, latitude, longitude) of every theater."""
    with pymongo.MongoClient(mongo_url) as client:
        return [
            (int(doc["theaterId"]), doc["location"]["geo"]["coordinates"][1], doc["location"]["geo"]["coordinates"][0])
            for doc in client[database].theaters.find({})
        ]


def brute_force_nearby(
    theaters: list[tuple[int, float, float]], lat: float, lon: float, radius_km: float, limit: int
) -> list[tuple[int, float]]:
    within = [(haversine_km(lat, lon, t_lat, t_lon), theater_id) for theater_id, t_lat, t_lon in theaters]
    within = sorted(item for item in within if item[0] <= radius_km)
    return [(theater_id, distance) for distance, theater_id in within[:limit]]
