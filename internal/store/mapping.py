"""Mapping between `sample_mflix` documents and the API's protobuf messages.

Real documents have quirks that the mapping absorbs instead of failing on:
- numbers written as "" (`imdb.rating`, `imdb.votes`): the field is absent;
- numbers written as numeric strings: parsed;
- `year` as a string such as "1995è": `year` gets its leading digits and
  `year_text` the string as stored;
- dates as BSON dates (either Extended JSON form loads as one), or as strings;
- any field missing.
Writes store the canonical form: numbers as numbers, dates as BSON dates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from google.protobuf.timestamp_pb2 import Timestamp

from movieservice.proto.movies.v1.movies_pb2 import Address, Awards, Imdb, Movie, Theater, Tomatoes, TomatoesRating

# The document field that holds the write version (see Store).
VERSION_FIELD = "_v"

# Top-level movie fields this mapping owns: a replace removes any of them
# that the new movie does not have.
MOVIE_FIELDS = (
    "title", "year", "plot", "fullplot", "genres", "runtime", "cast", "directors", "writers",
    "languages", "countries", "released", "rated", "awards", "imdb", "tomatoes", "metacritic",
    "poster", "type", "num_mflix_comments", "lastupdated",
)  # fmt: skip

_LIST_FIELDS = ("genres", "cast", "directors", "writers", "languages", "countries")
_OPTIONAL_STRINGS = ("plot", "fullplot", "rated", "poster", "type")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_LEADING_DIGITS = re.compile(r"\s*(\d{1,4})")
# The dataset's own format for `lastupdated`, e.g. "2015-08-13 00:27:59.177000000".
LASTUPDATED_FORMAT = "%Y-%m-%d %H:%M:%S.%f000"


def document_to_movie(doc: Mapping[str, Any]) -> Movie:
    movie = Movie(id=str(doc["_id"]))
    title = doc.get("title")
    movie.title = title if isinstance(title, str) else ("" if title is None else str(title))
    _map_year(doc.get("year"), movie)
    for name in _OPTIONAL_STRINGS:
        value = _string(doc.get(name))
        if value is not None:
            setattr(movie, name, value)
    for name in _LIST_FIELDS:
        getattr(movie, name).extend(_strings(doc.get(name)))
    _set_int(movie, "runtime", doc.get("runtime"))
    _set_int(movie, "metacritic", doc.get("metacritic"))
    _set_int(movie, "num_mflix_comments", doc.get("num_mflix_comments"))
    _set_timestamp(movie, "released", doc.get("released"))
    lastupdated = doc.get("lastupdated")
    if isinstance(lastupdated, datetime):
        movie.lastupdated = format_lastupdated(lastupdated)
    elif lastupdated is not None:
        movie.lastupdated = str(lastupdated)

    awards = doc.get("awards")
    if isinstance(awards, Mapping):
        target = Awards()
        _set_int(target, "wins", awards.get("wins"))
        _set_int(target, "nominations", awards.get("nominations"))
        text = _string(awards.get("text"))
        if text is not None:
            target.text = text
        movie.awards.CopyFrom(target)
    imdb = doc.get("imdb")
    if isinstance(imdb, Mapping):
        target_imdb = Imdb()
        _set_float(target_imdb, "rating", imdb.get("rating"))
        _set_int(target_imdb, "votes", imdb.get("votes"))
        _set_int(target_imdb, "id", imdb.get("id"))
        movie.imdb.CopyFrom(target_imdb)
    tomatoes = doc.get("tomatoes")
    if isinstance(tomatoes, Mapping):
        movie.tomatoes.CopyFrom(_tomatoes(tomatoes))
    return movie


def _map_year(value: Any, movie: Movie) -> None:
    number = _number(value)
    if number is not None and float(number).is_integer() and not isinstance(value, str):
        movie.year = int(number)
        return
    if value is None or value == "":
        return
    text = str(value)
    movie.year_text = text
    match = _LEADING_DIGITS.match(text)
    if match:
        movie.year = int(match.group(1))


def _tomatoes(doc: Mapping[str, Any]) -> Tomatoes:
    result = Tomatoes()
    for name in ("viewer", "critic"):
        sub = doc.get(name)
        if isinstance(sub, Mapping):
            rating = TomatoesRating()
            _set_float(rating, "rating", sub.get("rating"))
            _set_int(rating, "num_reviews", sub.get("numReviews"))
            _set_int(rating, "meter", sub.get("meter"))
            getattr(result, name).CopyFrom(rating)
    _set_int(result, "fresh", doc.get("fresh"))
    _set_int(result, "rotten", doc.get("rotten"))
    _set_timestamp(result, "dvd", doc.get("dvd"))
    _set_timestamp(result, "last_updated", doc.get("lastUpdated"))
    for proto_name, doc_name in (
        ("production", "production"),
        ("website", "website"),
        ("consensus", "consensus"),
        ("box_office", "boxOffice"),
    ):
        value = _string(doc.get(doc_name))
        if value is not None:
            setattr(result, proto_name, value)
    return result


def movie_to_document(movie: Movie) -> dict[str, Any]:
    """The document fields (without `_id`) that store `movie` canonically."""
    doc: dict[str, Any] = {"title": movie.title}
    if movie.year:
        doc["year"] = movie.year
    for name in _OPTIONAL_STRINGS:
        if movie.HasField(name):
            doc[name] = getattr(movie, name)
    for name in _LIST_FIELDS:
        values = list(getattr(movie, name))
        if values:
            doc[name] = values
    for name in ("runtime", "metacritic", "num_mflix_comments"):
        if movie.HasField(name):
            doc[name] = getattr(movie, name)
    if movie.HasField("released"):
        doc["released"] = timestamp_to_datetime(movie.released)
    if movie.lastupdated:
        doc["lastupdated"] = movie.lastupdated
    if movie.HasField("awards"):
        doc["awards"] = _present_fields(movie.awards, {"wins": "wins", "nominations": "nominations", "text": "text"})
    if movie.HasField("imdb"):
        doc["imdb"] = _present_fields(movie.imdb, {"rating": "rating", "votes": "votes", "id": "id"})
    if movie.HasField("tomatoes"):
        doc["tomatoes"] = _tomatoes_document(movie.tomatoes)
    return doc


def _tomatoes_document(tomatoes: Tomatoes) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name in ("viewer", "critic"):
        if tomatoes.HasField(name):
            doc[name] = _present_fields(
                getattr(tomatoes, name),
                {"rating": "rating", "num_reviews": "numReviews", "meter": "meter"},
            )
    doc.update(
        _present_fields(
            tomatoes,
            {
                "fresh": "fresh",
                "rotten": "rotten",
                "production": "production",
                "website": "website",
                "consensus": "consensus",
                "box_office": "boxOffice",
            },
        )
    )
    for proto_name, doc_name in (("dvd", "dvd"), ("last_updated", "lastUpdated")):
        if tomatoes.HasField(proto_name):
            doc[doc_name] = timestamp_to_datetime(getattr(tomatoes, proto_name))
    return doc


def _present_fields(message: Any, names: Mapping[str, str]) -> dict[str, Any]:
    return {doc_name: getattr(message, name) for name, doc_name in names.items() if message.HasField(name)}


def document_to_theater(doc: Mapping[str, Any]) -> Theater:
    location = doc.get("location") or {}
    address = location.get("address") or {}
    longitude, latitude = (location.get("geo") or {}).get("coordinates", (0.0, 0.0))[:2]
    theater = Theater(
        theater_id=int(doc["theaterId"]),
        address=Address(
            street1=str(address.get("street1", "")),
            city=str(address.get("city", "")),
            state=str(address.get("state", "")),
            zipcode=str(address.get("zipcode", "")),
        ),
        latitude=float(latitude),
        longitude=float(longitude),
    )
    if address.get("street2") is not None:
        theater.address.street2 = str(address["street2"])
    return theater


def format_lastupdated(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(LASTUPDATED_FORMAT)


def timestamp_to_datetime(timestamp: Timestamp) -> datetime:
    """A UTC datetime; BSON dates keep milliseconds, so finer digits are dropped."""
    return timestamp.ToDatetime(tzinfo=UTC).replace(microsecond=timestamp.nanos // 1_000_000 * 1000)


def is_object_id(value: str) -> bool:
    return ObjectId.is_valid(value) and len(value) == 24


def new_object_id() -> str:
    return str(ObjectId())


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else None
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        if not math.isfinite(parsed):
            return None
        return int(parsed) if parsed.is_integer() and "." not in value else parsed
    # bson Int64 / Decimal128 and similar numeric types
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _set_int(message: Any, name: str, value: Any) -> None:
    number = _number(value)
    if number is not None and float(number).is_integer() and _INT32_MIN <= number <= _INT32_MAX:
        setattr(message, name, int(number))


def _set_float(message: Any, name: str, value: Any) -> None:
    number = _number(value)
    if number is not None:
        setattr(message, name, float(number))


def _set_timestamp(message: Any, name: str, value: Any) -> None:
    moment = _datetime(value)
    if moment is not None:
        getattr(message, name).FromDatetime(moment)


def _datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _string(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _strings(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [item if isinstance(item, str) else str(item) for item in value if item is not None]
    if isinstance(value, str) and value:
        return [value]
    return []
