"""Synthetic `sample_mflix` data in the real schema, quirks included.

Produces Extended JSON text lines, as an export would, so that synthetic data
goes through exactly the same loading path as real data. The same seed gives
the same documents (and ids), so seeding twice is idempotent.

Quirks reproduced, at roughly the rates of the real collection:
`imdb.rating`/`imdb.votes` as "", `released` as `{"$date": ISO}` (from 1970)
or `{"$date": {"$numberLong": ms}}` (before), `lastupdated` as a plain
string, `year` as a string like "1995è", optional fields missing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

GENRES = (
    "Drama", "Comedy", "Romance", "Crime", "Thriller", "Action", "Adventure", "Documentary",
    "Horror", "Mystery", "Biography", "Family", "Fantasy", "Sci-Fi", "History", "Musical",
    "War", "Western", "Animation", "Music", "Short", "Sport", "Film-Noir",
)  # fmt: skip
WORDS = (
    "night", "river", "city", "shadow", "return", "last", "golden", "road", "heart", "storm",
    "secret", "silent", "lost", "king", "dream", "fire", "winter", "house", "star", "train",
)  # fmt: skip
NAMES = ("Ann", "Bob", "Carla", "Dev", "Eve", "Femi", "Gus", "Hana", "Ivo", "June", "Kai", "Lea")
SURNAMES = ("Moreau", "Okafor", "Smith", "Tanaka", "Ivanova", "Garcia", "Kowalski", "Nguyen")
RATED = ("G", "PG", "PG-13", "R", "NOT RATED", "APPROVED", "TV-G", "UNRATED", "PASSED")
CITIES = (("Bloomington", "MN"), ("Austin", "TX"), ("Portland", "OR"), ("Albany", "NY"), ("Tampa", "FL"))
# Continental US, Alaska, Hawaii: (lat_min, lat_max, lon_min, lon_max, weight)
REGIONS = ((25.0, 49.0, -124.5, -67.0, 96), (58.0, 64.9, -152.0, -141.0, 2), (19.0, 22.2, -160.0, -155.0, 2))


def _object_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def _date(moment: datetime) -> dict[str, Any]:
    if moment.year >= 1970:
        return {"$date": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}
    millis = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)
    return {"$date": {"$numberLong": str(millis)}}


def _person(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"


def movie_lines(count: int, seed: int = 1) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield json.dumps(_movie(rng), ensure_ascii=False)


def _movie(rng: random.Random) -> dict[str, Any]:
    year = rng.randint(1903, 2016)
    released = datetime(year, rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC)
    title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))).title()
    doc: dict[str, Any] = {
        "_id": {"$oid": _object_id(rng)},
        "title": title,
        "year": year if rng.random() > 0.001 else f"{year}è",
        "genres": rng.sample(GENRES, rng.randint(1, 3)),
        "runtime": rng.randint(5, 240),
        "cast": [_person(rng) for _ in range(rng.randint(1, 6))],
        "directors": [_person(rng)],
        "writers": [_person(rng) for _ in range(rng.randint(1, 3))],
        "countries": [rng.choice(("USA", "UK", "France", "Japan", "Italy"))],
        "languages": [rng.choice(("English", "French", "Japanese", "Italian"))],
        "awards": {"wins": (w := rng.randint(0, 5)), "nominations": (n := rng.randint(0, 5)),
                   "text": f"{w} wins & {n} nominations."},
        "lastupdated": (datetime(2015, 8, 1) + timedelta(seconds=rng.randint(0, 10**7))).strftime(
            "%Y-%m-%d %H:%M:%S.%f000"
        ),
        "type": "movie" if rng.random() > 0.05 else "series",
        "num_mflix_comments": rng.randint(0, 10),
    }  # fmt: skip
    if rng.random() < 0.002:
        doc["imdb"] = {"rating": "", "votes": "", "id": rng.randint(1, 9_999_999)}
    else:
        doc["imdb"] = {
            "rating": round(rng.uniform(1.5, 9.5), 1),
            "votes": int(rng.lognormvariate(7.2, 1.6)),
            "id": rng.randint(1, 9_999_999),
        }
    if rng.random() > 0.05:
        doc["plot"] = f"A story of {rng.choice(WORDS)} and {rng.choice(WORDS)}."
    if rng.random() > 0.07:
        doc["fullplot"] = f"A longer story of {rng.choice(WORDS)}, {rng.choice(WORDS)} and {rng.choice(WORDS)}."
    if rng.random() > 0.03:
        doc["released"] = _date(released)
    if rng.random() > 0.34:
        doc["rated"] = rng.choice(RATED)
    if rng.random() > 0.16:
        doc["poster"] = f"https://m.media-amazon.com/images/M/{_object_id(rng)}.jpg"
    if rng.random() < 0.05:
        doc["metacritic"] = rng.randint(20, 100)
    if rng.random() > 0.01:
        doc["tomatoes"] = {
            "viewer": {"rating": round(rng.uniform(1, 5), 1), "numReviews": rng.randint(0, 5000),
                       "meter": rng.randint(0, 100)},
            "lastUpdated": _date(datetime(2015, rng.randint(1, 9), rng.randint(1, 28), tzinfo=UTC)),
        }  # fmt: skip
        if rng.random() < 0.5:
            doc["tomatoes"].update(
                critic={"rating": round(rng.uniform(1, 10), 1), "numReviews": rng.randint(1, 300),
                        "meter": rng.randint(0, 100)},
                fresh=rng.randint(0, 200), rotten=rng.randint(0, 100),
            )  # fmt: skip
    return doc


# As many theaters as the real collection has.
MAX_THEATERS = 1564


def theater_lines(count: int, seed: int = 1) -> Iterator[str]:
    rng = random.Random(seed + 7919)
    weights = [region[4] for region in REGIONS]
    for index in range(count):
        lat_min, lat_max, lon_min, lon_max, _ = rng.choices(REGIONS, weights)[0]
        city, state = rng.choice(CITIES)
        address: dict[str, Any] = {
            "street1": f"{rng.randint(1, 9999)} {rng.choice(WORDS).title()} St",
            "city": city,
            "state": state,
            "zipcode": f"{rng.randint(10000, 99999)}",
        }
        if rng.random() < 0.35:
            address["street2"] = f"Suite {rng.randint(1, 500)}"
        doc = {
            "_id": {"$oid": _object_id(rng)},
            "theaterId": 1000 + index,
            "location": {
                "address": address,
                "geo": {
                    "type": "Point",
                    "coordinates": [round(rng.uniform(lon_min, lon_max), 6), round(rng.uniform(lat_min, lat_max), 6)],
                },
            },
        }
        yield json.dumps(doc)
