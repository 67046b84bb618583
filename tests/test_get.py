"""Get: cache-aside over a real Redis and FerretDB, through a real gRPC channel."""

from __future__ import annotations

import time

import grpc
import pytest
import redis

from movieservice.proto.movies.v1 import movies_pb2
from tests.support.proxy import FaultProxy
from tests.support.rpc import assert_invalid, rpc_error

KEY_PREFIX = b"movieservice:movie:"


def wait_until_cached(client: redis.Redis, movie_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.exists(KEY_PREFIX + movie_id.encode()):
        assert time.monotonic() < deadline, f"movie {movie_id} was never cached"
        time.sleep(0.01)


def test_get_returns_the_movie(stub, seeded_ids):
    movie_id = seeded_ids[0]
    response = stub.Get(movies_pb2.GetRequest(id=movie_id))
    assert response.movie.id == movie_id
    assert response.movie.title


def test_second_get_is_served_from_redis_while_mongodb_is_unreachable(stub, seeded_ids, redis_client, mongo_proxy):
    cached_id, uncached_id = seeded_ids[1:3]
    first = stub.Get(movies_pb2.GetRequest(id=cached_id))
    wait_until_cached(redis_client, cached_id)
    with mongo_proxy.refusing():
        second = stub.Get(movies_pb2.GetRequest(id=cached_id), timeout=10)
        assert second == first
        # The same call for a movie that is not cached needs MongoDB, and fails.
        error = rpc_error(stub.Get, movies_pb2.GetRequest(id=uncached_id), timeout=10)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "MongoDB is unavailable" in error.details()


def test_a_miss_populates_the_cache_with_the_stored_bytes(stub, seeded_ids, redis_client):
    movie_id = seeded_ids[3]
    redis_client.delete(KEY_PREFIX + movie_id.encode())
    response = stub.Get(movies_pb2.GetRequest(id=movie_id))
    wait_until_cached(redis_client, movie_id)
    cached = redis_client.hget(KEY_PREFIX + movie_id.encode(), "b")
    assert movies_pb2.Movie.FromString(cached) == response.movie


def test_uppercase_ids_name_the_same_movie(stub, seeded_ids):
    movie_id = seeded_ids[0]
    assert stub.Get(movies_pb2.GetRequest(id=movie_id.upper())).movie.id == movie_id


def test_unknown_id_is_not_found(stub):
    error = rpc_error(stub.Get, movies_pb2.GetRequest(id="0" * 24))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"movie {'0' * 24} not found"


@pytest.mark.parametrize("bad_id", ["", "xyz", "573a1390f29313caabcd42e", "573a1390f29313caabcd42e8a", "g" * 24])
def test_malformed_id_is_invalid_argument_naming_the_field(stub, bad_id):
    assert_invalid(rpc_error(stub.Get, movies_pb2.GetRequest(id=bad_id)), "id")


def test_deadline_exceeded_when_mongodb_is_slow(stub, seeded_ids, mongo_proxy: FaultProxy):
    movie_id = seeded_ids[4]
    with mongo_proxy.delaying(1.5):
        error = rpc_error(stub.Get, movies_pb2.GetRequest(id=movie_id), timeout=0.3)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The service is not stuck afterwards.
    assert stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie.id == movie_id
