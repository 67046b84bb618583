"""Upsert: write-through to FerretDB then Redis, validation, authentication."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from movieservice.proto.movies.v1.movies_pb2 import Imdb, Movie, Tomatoes, TomatoesRating
from tests.conftest import WRITER, serve_in_process
from tests.support.rpc import assert_invalid, rpc_error


def new_movie(**fields: object) -> Movie:
    movie = Movie(title="A Test Movie", year=1999, genres=["Drama"], imdb=Imdb(rating=7.0, votes=1200, id=42))
    for name, value in fields.items():
        if isinstance(value, (Imdb, Tomatoes, Timestamp)):
            getattr(movie, name).CopyFrom(value)
        elif isinstance(value, list):
            del getattr(movie, name)[:]
            getattr(movie, name).extend(value)
        else:
            setattr(movie, name, value)
    return movie


def upsert(stub, movie: Movie, **kwargs) -> movies_pb2.UpsertResponse:
    return stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=WRITER, **kwargs)


def test_empty_id_creates_a_movie_that_get_returns(stub):
    response = upsert(stub, new_movie(plot="A plot.", cast=["A", "B"]))
    assert response.created
    assert len(response.movie.id) == 24
    assert response.movie.lastupdated, "the server sets lastupdated"
    assert stub.Get(movies_pb2.GetRequest(id=response.movie.id)).movie == response.movie


def test_given_id_replaces_the_movie_and_removes_fields_it_no_longer_has(stub):
    created = upsert(stub, new_movie(plot="first", rated="PG")).movie
    replacement = new_movie(id=created.id, title="Second title")
    response = upsert(stub, replacement)
    assert not response.created
    got = stub.Get(movies_pb2.GetRequest(id=created.id)).movie
    assert got.title == "Second title"
    assert not got.HasField("plot") and not got.HasField("rated")


def test_given_unknown_id_creates_that_movie(stub):
    movie_id = "65a1b2c3d4e5f60718293a4b"
    response = upsert(stub, new_movie(id=movie_id.upper()))
    assert response.created and response.movie.id == movie_id
    assert stub.Get(movies_pb2.GetRequest(id=movie_id)).movie.title == "A Test Movie"


def test_output_only_fields_are_ignored(stub):
    response = upsert(stub, new_movie(lastupdated="1999-01-01 00:00:00.000000000", year_text="1999x"))
    assert response.movie.lastupdated != "1999-01-01 00:00:00.000000000"
    assert not response.movie.HasField("year_text")


@pytest.mark.slow
def test_get_after_upsert_never_returns_the_old_movie(stub, redis_client: redis.Redis):
    """Many rounds of write-then-read while other clients keep reading (and
    repopulating the cache from misses) the same movie."""
    movie_id = upsert(stub, new_movie(title="round 0")).movie.id
    key = f"movieservice:movie:{movie_id}"
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            redis_client.delete(key)  # force misses that race with the writes
            stub.Get(movies_pb2.GetRequest(id=movie_id))

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for round_number in range(1, 100):
            upsert(stub, new_movie(id=movie_id, title=f"round {round_number}"))
            for _ in range(2):
                got = stub.Get(movies_pb2.GetRequest(id=movie_id)).movie
                assert got.title == f"round {round_number}"
    finally:
        stop.set()
        for thread in readers:
            thread.join()


def test_a_rating_change_moves_the_movie_in_top_rated(stub):
    movie = upsert(stub, new_movie(title="Best Ever", genres=["Testgenre"], imdb=Imdb(rating=9.9, votes=10**7))).movie
    top = stub.TopRated(movies_pb2.TopRatedRequest(page_size=1)).movies
    assert top[0].id == movie.id and top[0].title == "Best Ever"

    upsert(stub, new_movie(id=movie.id, title="Fallen", genres=["Othergenre"], imdb=Imdb(rating=1.0, votes=10**7)))
    assert stub.TopRated(movies_pb2.TopRatedRequest(page_size=1)).movies[0].id != movie.id
    assert stub.TopRated(movies_pb2.TopRatedRequest(genre="testgenre")).movies == []
    assert [m.title for m in stub.TopRated(movies_pb2.TopRatedRequest(genre="Othergenre")).movies] == ["Fallen"]

    upsert(stub, new_movie(id=movie.id, title="Unrated", genres=["Othergenre"], imdb=Imdb(votes=10)))
    assert stub.TopRated(movies_pb2.TopRatedRequest(genre="Othergenre")).movies == []


@pytest.mark.parametrize(
    ("movie", "field"),
    [
        (new_movie(title=""), "movie.title"),
        (new_movie(title="   "), "movie.title"),
        (new_movie(year=1500), "movie.year"),
        (new_movie(year=3000), "movie.year"),
        (new_movie(id="not-an-id"), "movie.id"),
        (new_movie(imdb=Imdb(rating=11)), "movie.imdb.rating"),
        (new_movie(imdb=Imdb(rating=-0.5)), "movie.imdb.rating"),
        (new_movie(imdb=Imdb(rating=math.nan)), "movie.imdb.rating"),
        (new_movie(imdb=Imdb(rating=math.inf)), "movie.imdb.rating"),
        (new_movie(imdb=Imdb(votes=-1)), "movie.imdb.votes"),
        (new_movie(tomatoes=Tomatoes(viewer=TomatoesRating(rating=math.nan))), "movie.tomatoes.viewer.rating"),
        (new_movie(tomatoes=Tomatoes(critic=TomatoesRating(meter=101))), "movie.tomatoes.critic.meter"),
        (new_movie(runtime=-5), "movie.runtime"),
        (new_movie(metacritic=101), "movie.metacritic"),
        (new_movie(released=Timestamp(seconds=-(10**12))), "movie.released"),
        (Movie(title="no genres is fine", genres=["Drama", ""]), "movie.genres[1]"),
        (new_movie(genres=["Drama\nInjected"]), "movie.genres[0]"),
    ],
)
def test_invalid_movies_are_rejected_naming_the_field(stub, movie, field):
    assert_invalid(rpc_error(upsert, stub, movie), field)


def test_missing_movie_is_invalid(stub):
    error = rpc_error(stub.Upsert, movies_pb2.UpsertRequest(), metadata=WRITER)
    assert_invalid(error, "movie")


def test_several_problems_are_all_reported(stub):
    error = rpc_error(upsert, stub, new_movie(title="", year=1, imdb=Imdb(rating=42)))
    for field in ("movie.title", "movie.year", "movie.imdb.rating"):
        assert_invalid(error, field)


def test_nothing_is_written_when_validation_fails(stub, seeded_ids):
    movie_id = seeded_ids[10]
    before = stub.Get(movies_pb2.GetRequest(id=movie_id)).movie
    rpc_error(upsert, stub, new_movie(id=movie_id, title="changed", year=1))
    assert stub.Get(movies_pb2.GetRequest(id=movie_id)).movie == before


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "Upsert needs the metadata 'authorization: Bearer <token>'"),
        ((("authorization", "Bearer wrong-token"),), "the bearer token is not valid"),
        ((("authorization", "Basic dGVzdC10b2tlbg=="),), "Upsert needs the metadata 'authorization: Bearer <token>'"),
    ],
)
def test_unauthenticated_writes_are_rejected_and_not_written(stub, metadata, message):
    movie = new_movie(id="65a1b2c3d4e5f60718293a4c")
    error = rpc_error(stub.Upsert, movies_pb2.UpsertRequest(movie=movie), metadata=metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == message
    assert rpc_error(stub.Get, movies_pb2.GetRequest(id=movie.id)).code() == grpc.StatusCode.NOT_FOUND


def test_writes_are_refused_when_the_server_has_no_token(settings, server_loop):
    no_token = serve_in_process(server_loop, replace(settings, auth_token=""))
    try:
        with grpc.insecure_channel(no_token.target) as channel:
            error = rpc_error(
                movies_pb2_grpc.MovieServiceStub(channel).Upsert,
                movies_pb2.UpsertRequest(movie=new_movie()),
                metadata=WRITER,
            )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == "writes are disabled: the server has no AUTH_TOKEN"
    finally:
        no_token.stop(None)


def test_upsert_fails_with_unavailable_when_mongodb_is_down_and_writes_nothing(stub, mongo_proxy):
    movie = new_movie(id="65a1b2c3d4e5f60718293a4d")
    with mongo_proxy.refusing():
        error = rpc_error(upsert, stub, movie, timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "MongoDB is unavailable"
    assert rpc_error(stub.Get, movies_pb2.GetRequest(id=movie.id)).code() == grpc.StatusCode.NOT_FOUND


def test_upsert_succeeds_when_redis_is_down_and_reads_see_it(stub, redis_proxy):
    movie_id = upsert(stub, new_movie(title="before the outage")).movie.id
    stub.Get(movies_pb2.GetRequest(id=movie_id))
    with redis_proxy.refusing():
        upsert(stub, new_movie(id=movie_id, title="during the outage"), timeout=10)
        assert stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie.title == "during the outage"
