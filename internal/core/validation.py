"""Request validation. Each problem names the request field it is about.

Field paths follow the request messages (e.g. `movie.imdb.rating`), as
`google.rpc.BadRequest` field violations do.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from movieservice.core.errors import Violation
from movieservice.proto.movies.v1.movies_pb2 import Movie

# Matched against the whole string (fullmatch): "$" would let a trailing newline through.
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
MIN_YEAR, MAX_YEAR = 1870, 2100
MAX_GENRE = 64
# Every text of an Upsert's movie, at most this many bytes (UTF-8). The
# largest in the real sample_mflix data are well inside: a 76-byte title, a
# 1,979-byte full plot, a 164-byte poster URL (README: "Limits").
TEXT_LIMITS: dict[str, int] = {
    "title": 1_000,
    "plot": 4_000,
    "fullplot": 20_000,
    "rated": 32,
    "poster": 2_048,
    "type": 32,
    "awards.text": 1_000,
    "tomatoes.production": 1_000,
    "tomatoes.website": 2_048,
    "tomatoes.consensus": 4_000,
    "tomatoes.box_office": 64,
}
# Every list: at most so many entries of at most so many bytes each (the real
# data's longest: 25 writers, the longest entry a 97-byte writer credit).
LIST_LIMITS: dict[str, tuple[int, int]] = {
    "genres": (20, MAX_GENRE),
    "cast": (100, 200),
    "directors": (100, 200),
    "writers": (100, 200),
    "languages": (50, 64),
    "countries": (50, 64),
}
# Set by the server, so refused when longer than the server would write them.
OUTPUT_TEXT_LIMITS: dict[str, int] = {"lastupdated": 64, "year_text": 32}
# An upper bound on a valid movie's serialized size: every text and list
# entry at its limit (with its tag and length), plus the numbers and dates.
MAX_MOVIE_BYTES = (
    sum(limit + 4 for limit in (TEXT_LIMITS | OUTPUT_TEXT_LIMITS).values())
    + sum(entries * (limit + 3) for entries, limit in LIST_LIMITS.values())
    + 26  # the id
    + 1_024  # numbers, dates and the messages around them
)
# C0 and C1 control characters other than tab and newline.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MAX_RADIUS_KM = 1000.0
DEFAULT_RADIUS_KM = 10.0
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
# The range of dates a BSON date and a protobuf Timestamp can both hold.
_MIN_SECONDS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
_MAX_SECONDS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


def check_movie_id(field: str, value: str) -> list[Violation]:
    if not value:
        return [Violation(field, "is required")]
    if not OBJECT_ID.fullmatch(value):
        return [Violation(field, "must be 24 hexadecimal digits (a MongoDB ObjectId)")]
    return []


def check_upsert(movie: Movie | None) -> list[Violation]:
    """The problems of an Upsert's movie (None: the request had none)."""
    if movie is None:
        return [Violation("movie", "is required")]
    problems: list[Violation] = []
    if movie.id and not OBJECT_ID.fullmatch(movie.id):
        problems.append(Violation("movie.id", "must be empty (to create) or 24 hexadecimal digits"))
    if not movie.title.strip():
        problems.append(Violation("movie.title", "is required"))
    if movie.year and not MIN_YEAR <= movie.year <= MAX_YEAR:
        problems.append(Violation("movie.year", f"must be 0 (unknown) or between {MIN_YEAR} and {MAX_YEAR}"))
    _check_number(problems, movie, "runtime", "movie.runtime", 0, 100_000)
    _check_number(problems, movie, "metacritic", "movie.metacritic", 0, 100)
    _check_number(problems, movie, "num_mflix_comments", "movie.num_mflix_comments", 0, 2**31 - 1)
    if movie.HasField("imdb"):
        _check_number(problems, movie.imdb, "rating", "movie.imdb.rating", 0, 10)
        _check_number(problems, movie.imdb, "votes", "movie.imdb.votes", 0, 2**31 - 1)
        _check_number(problems, movie.imdb, "id", "movie.imdb.id", 0, 2**31 - 1)
    if movie.HasField("awards"):
        _check_number(problems, movie.awards, "wins", "movie.awards.wins", 0, 100_000)
        _check_number(problems, movie.awards, "nominations", "movie.awards.nominations", 0, 100_000)
    if movie.HasField("tomatoes"):
        tomatoes = movie.tomatoes
        for name, top in (("viewer", 5), ("critic", 10)):
            if tomatoes.HasField(name):
                rating = getattr(tomatoes, name)
                path = f"movie.tomatoes.{name}"
                _check_number(problems, rating, "rating", f"{path}.rating", 0, top)
                _check_number(problems, rating, "num_reviews", f"{path}.num_reviews", 0, 2**31 - 1)
                _check_number(problems, rating, "meter", f"{path}.meter", 0, 100)
        _check_number(problems, tomatoes, "fresh", "movie.tomatoes.fresh", 0, 2**31 - 1)
        _check_number(problems, tomatoes, "rotten", "movie.tomatoes.rotten", 0, 2**31 - 1)
        for name in ("dvd", "last_updated"):
            if tomatoes.HasField(name):
                _check_timestamp(problems, getattr(tomatoes, name), f"movie.tomatoes.{name}")
    if movie.HasField("released"):
        _check_timestamp(problems, movie.released, "movie.released")
    _check_texts(problems, movie)
    _check_lists(problems, movie)
    return problems


def check_genre(genre: str) -> list[Violation]:
    if len(genre) > MAX_GENRE or not genre.isprintable():
        return [Violation("genre", f"must be printable and at most {MAX_GENRE} characters")]
    return []


def check_nearby(latitude: float, longitude: float, radius_km: float, limit: int) -> list[Violation]:
    problems: list[Violation] = []
    if not (math.isfinite(latitude) and -90 <= latitude <= 90):
        problems.append(Violation("latitude", "must be between -90 and 90 degrees"))
    if not (math.isfinite(longitude) and -180 <= longitude <= 180):
        problems.append(Violation("longitude", "must be between -180 and 180 degrees"))
    if not (math.isfinite(radius_km) and 0 <= radius_km <= MAX_RADIUS_KM):
        problems.append(
            Violation(
                "radius_km", f"must be greater than 0 and at most {MAX_RADIUS_KM:g} (0 means {DEFAULT_RADIUS_KM:g})"
            )
        )
    if limit < 0:
        problems.append(Violation("limit", f"must not be negative (0 means {DEFAULT_LIMIT})"))
    return problems


def check_page_size(page_size: int) -> list[Violation]:
    if page_size < 0:
        return [Violation("page_size", f"must not be negative (0 means {DEFAULT_PAGE_SIZE})")]
    return []


def _check_texts(problems: list[Violation], movie: Movie) -> None:
    for path, limit in (TEXT_LIMITS | OUTPUT_TEXT_LIMITS).items():
        owner, name = _field_owner(movie, path)
        if owner is not None:
            problem = _text_problem(getattr(owner, name), limit)
            if problem:
                problems.append(Violation(f"movie.{path}", problem))


def _check_lists(problems: list[Violation], movie: Movie) -> None:
    for name, (entries, limit) in LIST_LIMITS.items():
        values = getattr(movie, name)
        if len(values) > entries:
            problems.append(Violation(f"movie.{name}", f"must have at most {entries} entries"))
            continue
        for index, value in enumerate(values):
            problem = "must not be empty" if not value.strip() else _text_problem(value, limit)
            if not problem and name == "genres" and not value.isprintable():
                problem = "must be printable"  # a genre is also a TopRated query, where the same holds
            if problem:
                problems.append(Violation(f"movie.{name}[{index}]", problem))
                break  # one problem per list is enough to act on


def _field_owner(movie: Movie, path: str) -> tuple[object | None, str]:
    """The message holding `path`'s last field (None when a parent is absent)."""
    *parents, name = path.split(".")
    owner: object = movie
    for parent in parents:
        if not owner.HasField(parent):  # type: ignore[attr-defined]
            return None, name
        owner = getattr(owner, parent)
    return owner, name


def _text_problem(value: str, limit: int) -> str:
    if len(value) * 4 > limit and len(value.encode()) > limit:  # most texts are short: skip the encode
        return f"must be at most {limit} bytes (UTF-8)"
    if CONTROL_CHARACTERS.search(value):
        return "must not contain control characters (other than tab and newline)"
    return ""


def _check_number(problems: list[Violation], message: object, name: str, path: str, low: float, high: float) -> None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return
    value = getattr(message, name)
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(Violation(path, "must be a finite number"))
    elif not low <= value <= high:
        problems.append(Violation(path, f"must be between {low:g} and {high:g}"))


def _check_timestamp(problems: list[Violation], timestamp: Timestamp, path: str) -> None:
    if not (_MIN_SECONDS <= timestamp.seconds <= _MAX_SECONDS and 0 <= timestamp.nanos < 1_000_000_000):
        problems.append(Violation(path, "must be a valid date between years 1 and 9999"))
