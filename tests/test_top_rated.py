"""TopRated: Redis sorted sets against the ranking computed independently from the data."""

from __future__ import annotations

import base64
import json
import threading

import grpc
import pytest
import redis

from movieservice.proto.movies.v1 import movies_pb2
from tests.support.reference import expected_ranking
from tests.support.rpc import assert_invalid, rpc_error


def all_pages(stub, genre: str = "", page_size: int = 0) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        response = stub.TopRated(movies_pb2.TopRatedRequest(genre=genre, page_size=page_size, page_token=token))
        ids += [movie.id for movie in response.movies]
        token = response.next_page_token
        if not token:
            return ids


@pytest.mark.parametrize(
    "genre",
    [pytest.param("", marks=pytest.mark.slow), "Drama", "film-noir", "COMEDY", "Western"],  # "": every movie
)
def test_paging_visits_every_ranked_movie_once_in_rank_order(stub, settings, genre):
    expected = expected_ranking(settings_direct_url(settings), settings.mongo_db, genre)
    assert expected, "the data should have ranked movies in this genre"
    seen = all_pages(stub, genre, page_size=37)
    assert len(seen) == len(set(seen)), "a movie appeared on two pages"
    assert seen == expected


def test_pages_hold_whole_movies(stub):
    first = stub.TopRated(movies_pb2.TopRatedRequest(page_size=3)).movies
    for movie in first:
        assert movie == stub.Get(movies_pb2.GetRequest(id=movie.id)).movie


def test_default_and_maximum_page_size(stub):
    assert len(stub.TopRated(movies_pb2.TopRatedRequest()).movies) == 10
    assert len(stub.TopRated(movies_pb2.TopRatedRequest(page_size=100_000)).movies) == 100


def test_unknown_genre_is_an_empty_page(stub):
    response = stub.TopRated(movies_pb2.TopRatedRequest(genre="No Such Genre"))
    assert list(response.movies) == [] and response.next_page_token == ""


def test_negative_page_size_is_invalid(stub):
    assert_invalid(rpc_error(stub.TopRated, movies_pb2.TopRatedRequest(page_size=-1)), "page_size")


@pytest.mark.parametrize("token", ["garbage", "eyJ4IjoxfQ", "!!!"])
def test_malformed_page_token_is_invalid(stub, token):
    error = rpc_error(stub.TopRated, movies_pb2.TopRatedRequest(page_token=token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in error.details()


def test_an_altered_page_token_is_invalid(stub):
    token = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_size=2)).next_page_token
    body, _, mac = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["s"] = 0.0  # jump to the end of the ranking
    altered = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    error = rpc_error(stub.TopRated, movies_pb2.TopRatedRequest(genre="Drama", page_token=f"{altered}.{mac}"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("page_token: is not a token this service issued")


def test_page_token_of_another_genre_is_invalid(stub):
    token = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_size=2)).next_page_token
    error = rpc_error(stub.TopRated, movies_pb2.TopRatedRequest(genre="Comedy", page_token=token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "page_token: belongs to another genre; start again without it"


def test_missing_index_is_rebuilt_for_concurrent_readers(stub, settings, redis_client: redis.Redis):
    before = all_pages(stub, page_size=100)
    keys = list(redis_client.scan_iter("movieservice:top:*"))
    assert keys
    redis_client.delete(*keys)
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(all_pages(stub, page_size=100))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [before] * 8
    assert redis_client.exists("movieservice:top:all")


def test_served_from_mongodb_while_redis_is_down(stub, redis_proxy):
    expected = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_size=25))
    with redis_proxy.refusing():
        during = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_size=25), timeout=20)
        assert during.movies == expected.movies
        later = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_token=during.next_page_token), timeout=20)
    after = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_token=expected.next_page_token))
    assert later.movies == after.movies


def settings_direct_url(settings) -> str:
    """The proxied MongoDB URL works as well for reading the reference data."""
    return settings.mongo_url
