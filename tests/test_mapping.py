"""Document <-> protobuf mapping on the quirks of the real collection (unit tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId
from google.protobuf.timestamp_pb2 import Timestamp

from movieservice.proto.movies.v1.movies_pb2 import Imdb, Movie
from movieservice.store.mapping import document_to_movie, document_to_theater, movie_to_document
from movieservice.store.seed import parse_documents
from movieservice.store.synthetic import movie_lines, theater_lines

OID = ObjectId("573a1390f29313caabcd42e8")


def test_empty_strings_in_numeric_fields_are_absent():
    movie = document_to_movie({"_id": OID, "title": "La nao capitana", "imdb": {"rating": "", "votes": "", "id": 39}})
    assert not movie.imdb.HasField("rating") and not movie.imdb.HasField("votes")
    assert movie.imdb.id == 39


def test_numeric_strings_are_parsed():
    movie = document_to_movie({"_id": OID, "title": "t", "imdb": {"rating": "7.5", "votes": "1,2"}, "runtime": "90"})
    assert movie.imdb.rating == 7.5 and not movie.imdb.HasField("votes") and movie.runtime == 90


def test_string_years_keep_their_text():
    movie = document_to_movie({"_id": OID, "title": "t", "year": "1995è"})
    assert (movie.year, movie.year_text) == (1995, "1995è")
    assert not document_to_movie({"_id": OID, "title": "t", "year": 1995}).HasField("year_text")


def test_both_extended_json_date_forms_load_as_the_same_instant():
    (doc,) = parse_documents(['{"_id": {"$oid": "573a1390f29313caabcd42e8"}, "title": "t",'
                              ' "released": {"$date": {"$numberLong": "-2085523200000"}},'
                              ' "tomatoes": {"lastUpdated": {"$date": "2015-08-08T19:16:10Z"}}}'])  # fmt: skip
    movie = document_to_movie(doc)
    assert movie.released.ToMilliseconds() == -2085523200000
    assert movie.tomatoes.last_updated.ToDatetime(tzinfo=UTC) == datetime(2015, 8, 8, 19, 16, 10, tzinfo=UTC)


def test_canonical_extended_json_loads_like_relaxed():
    canonical = ('{"_id": {"$oid": "573a1390f29313caabcd42e8"}, "title": "t", "year": {"$numberInt": "1903"},'
                 ' "imdb": {"rating": {"$numberDouble": "7.4"}, "votes": {"$numberLong": "9847"}}}')  # fmt: skip
    relaxed = ('{"_id": {"$oid": "573a1390f29313caabcd42e8"}, "title": "t", "year": 1903,'
               ' "imdb": {"rating": 7.4, "votes": 9847}}')  # fmt: skip
    assert document_to_movie(next(parse_documents([canonical]))) == document_to_movie(next(parse_documents([relaxed])))


def test_missing_fields_stay_absent():
    movie = document_to_movie({"_id": OID, "title": "t"})
    for name in (
        "plot",
        "fullplot",
        "rated",
        "poster",
        "type",
        "runtime",
        "metacritic",
        "released",
        "imdb",
        "tomatoes",
    ):
        assert not movie.HasField(name), name


def test_written_documents_use_canonical_types():
    movie = Movie(
        title="t", year=2001, imdb=Imdb(rating=8.0, votes=10), released=Timestamp(seconds=-86400, nanos=123456789)
    )
    doc = movie_to_document(movie)
    assert doc["released"] == datetime(1969, 12, 31, 0, 0, 0, 123000, tzinfo=UTC)
    assert doc["imdb"] == {"rating": 8.0, "votes": 10}
    assert "plot" not in doc and "tomatoes" not in doc


def test_synthetic_data_has_the_quirks_and_maps_back_and_forth():
    docs = list(parse_documents(movie_lines(3000, seed=5)))
    assert len({doc["_id"] for doc in docs}) == 3000
    assert any(doc["imdb"]["rating"] == "" for doc in docs)
    assert any(isinstance(doc["year"], str) for doc in docs)
    assert any("poster" not in doc for doc in docs)
    assert any(doc.get("released") and doc["released"].year < 1970 for doc in docs)
    for doc in docs:
        movie = document_to_movie(doc)
        again = document_to_movie({"_id": doc["_id"], **movie_to_document(movie)})
        movie.ClearField("year_text")
        assert again == movie


def test_synthetic_generation_is_deterministic():
    assert list(movie_lines(50, seed=3)) == list(movie_lines(50, seed=3))
    assert list(movie_lines(50, seed=3)) != list(movie_lines(50, seed=4))


def test_theaters_map_with_optional_street2():
    docs = list(parse_documents(theater_lines(200)))
    theaters = [document_to_theater(doc) for doc in docs]
    assert any(t.address.HasField("street2") for t in theaters)
    assert any(not t.address.HasField("street2") for t in theaters)
    assert all(-90 <= t.latitude <= 90 and -180 <= t.longitude <= 180 for t in theaters)
    assert theaters[0].longitude == docs[0]["location"]["geo"]["coordinates"][0]
