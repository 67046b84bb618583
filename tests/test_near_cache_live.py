"""The near cache (NEAR_CACHE_SIZE > 0) against a real Redis: hits without a
Redis round trip, invalidation by Redis' own tracking messages, read-your-writes,
and switching itself off when the invalidation connection breaks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest
import redis

from movieservice.app import App
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import WRITER, serve_in_process

PREFIX = "near:"


@pytest.fixture(scope="module")
def near_settings(settings):
    return replace(settings, redis_key_prefix=PREFIX, near_cache_size=1000, near_cache_ttl_seconds=60)


@pytest.fixture(scope="module")
def two_servers(near_settings, server_loop) -> Iterator[list[tuple[App, movies_pb2_grpc.MovieServiceStub]]]:
    running = [serve_in_process(server_loop, near_settings) for _ in range(2)]
    for served in running:
        wait_until(lambda a=served.app: a.cache._near.enabled, "the near cache to switch on")
    yield [(served.app, movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(served.target))) for served in running]
    for served in running:
        served.stop(None)


def hmget_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def wait_until(condition, what: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"waited too long for {what}"
        time.sleep(0.001)
    return time.monotonic() - started


def test_hits_are_served_from_memory(two_servers, seeded_ids, redis_client):
    (application, stub), _ = two_servers
    movie_id = seeded_ids[50]
    stub.Get(movies_pb2.GetRequest(id=movie_id))  # miss: MongoDB, then the cache is filled
    wait_until(lambda: redis_client.exists(f"{PREFIX}movie:{movie_id}"), "the fill")
    # A Redis hit puts it in memory (again, if the fill's own invalidation message
    # arrived just after and removed it).
    for _ in range(2):  # the second time after the fill's invalidation has surely arrived
        wait_until(
            lambda: stub.Get(movies_pb2.GetRequest(id=movie_id)) and application.cache._near.get(movie_id) is not None,
            "the near cache to hold the movie",
        )
        time.sleep(0.3)
    before = hmget_calls(redis_client)
    for _ in range(50):
        assert stub.Get(movies_pb2.GetRequest(id=movie_id)).movie.id == movie_id
    assert hmget_calls(redis_client) == before, "near-cache hits must not reach Redis"


def test_a_write_on_one_server_invalidates_the_others_copy(two_servers, seeded_ids, redis_client):
    (_, writer), (_, reader) = two_servers
    movie_id = seeded_ids[51]
    reader.Get(movies_pb2.GetRequest(id=movie_id))
    wait_until(lambda: redis_client.exists(f"{PREFIX}movie:{movie_id}"), "the fill")
    reader.Get(movies_pb2.GetRequest(id=movie_id))
    writer.Upsert(
        movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=movie_id, title="Changed elsewhere")), metadata=WRITER
    )
    lag = wait_until(
        lambda: reader.Get(movies_pb2.GetRequest(id=movie_id)).movie.title == "Changed elsewhere", "the invalidation"
    )
    assert lag < 0.25


def test_the_writing_server_reads_its_own_writes(two_servers):
    (_, stub), _ = two_servers
    movie_id = stub.Upsert(movies_pb2.UpsertRequest(movie=movies_pb2.Movie(title="r0")), metadata=WRITER).movie.id
    for round_number in range(1, 60):
        stub.Get(movies_pb2.GetRequest(id=movie_id))
        stub.Upsert(
            movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=movie_id, title=f"r{round_number}")), metadata=WRITER
        )
        assert stub.Get(movies_pb2.GetRequest(id=movie_id)).movie.title == f"r{round_number}"


def test_a_lost_invalidation_connection_switches_the_near_cache_off(two_servers, seeded_ids, redis_client):
    (application, stub), _ = two_servers
    movie_id = seeded_ids[52]
    stub.Get(movies_pb2.GetRequest(id=movie_id))
    wait_until(lambda: redis_client.exists(f"{PREFIX}movie:{movie_id}"), "the fill")
    stub.Get(movies_pb2.GetRequest(id=movie_id))
    redis_client.client_kill_filter(_type="pubsub")
    wait_until(lambda: not application.cache._near.enabled or len(application.cache._near) == 0, "switching off")
    # Whatever it held is gone; it comes back once the connection is re-established.
    wait_until(lambda: application.cache._near.enabled, "switching back on")
    before = hmget_calls(redis_client)
    stub.Get(movies_pb2.GetRequest(id=movie_id))
    assert hmget_calls(redis_client) == before + 1, "the first hit after reconnecting goes to Redis"
