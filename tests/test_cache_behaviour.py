"""Cache mechanisms against real Redis and FerretDB, counting the MongoDB
commands that really went over the wire (read by the proxy, not mocked)."""

from __future__ import annotations

import math
import random
import threading
import time

import grpc
import pytest
import redis
from bson import ObjectId

from movieservice.cache import xfetch
from movieservice.cache.redis_cache import redis_pool
from movieservice.proto.movies.v1 import movies_pb2
from tests.conftest import WRITER
from tests.support.proxy import FaultProxy
from tests.support.rpc import rpc_error

PREFIX = "movieservice:movie:"


def reads_of(tap, movie_id: str) -> int:
    return tap.count("find", "movies", filter={"_id": ObjectId(movie_id)})


def wait_for_key(client: redis.Redis, key: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.exists(key):
        assert time.monotonic() < deadline, f"{key} never appeared"
        time.sleep(0.005)


def test_repeated_gets_of_a_missing_id_read_mongodb_once(stub, mongo_proxy: FaultProxy, redis_client):
    missing = str(ObjectId())
    mongo_proxy.tap.reset()
    assert rpc_error(stub.Get, movies_pb2.GetRequest(id=missing)).code() == grpc.StatusCode.NOT_FOUND
    wait_for_key(redis_client, PREFIX + missing)
    for _ in range(20):
        error = rpc_error(stub.Get, movies_pb2.GetRequest(id=missing))
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, f"movie {missing} not found")
    assert reads_of(mongo_proxy.tap, missing) == 1
    # Negative entries are short-lived (NEGATIVE_TTL_SECONDS, 10 s by default, +-10%).
    assert 0 < redis_client.pttl(PREFIX + missing) <= 11_000


def test_creating_a_negatively_cached_movie_is_visible_at_once(stub, redis_client):
    missing = str(ObjectId())
    rpc_error(stub.Get, movies_pb2.GetRequest(id=missing))
    wait_for_key(redis_client, PREFIX + missing)
    stub.Upsert(movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=missing, title="Now it exists")), metadata=WRITER)
    assert stub.Get(movies_pb2.GetRequest(id=missing)).movie.title == "Now it exists"


def test_concurrent_gets_of_a_cold_id_read_mongodb_once(stub, seeded_ids, mongo_proxy: FaultProxy, redis_client):
    """500 concurrent Gets of one cold id, with every MongoDB command delayed
    by 20 ms as across a real network: exactly one read reaches MongoDB."""
    movie_id = seeded_ids[200]
    redis_client.delete(PREFIX + movie_id)
    mongo_proxy.tap.reset()
    with mongo_proxy.delaying(0.02):
        calls = [stub.Get.future(movies_pb2.GetRequest(id=movie_id), timeout=30) for _ in range(500)]
        results = [call.result() for call in calls]
    assert {r.movie.id for r in results} == {movie_id}
    reads = reads_of(mongo_proxy.tap, movie_id)
    assert reads == 1, f"{reads} reads reached MongoDB"


def test_ttls_carry_jitter(stub, seeded_ids, redis_client):
    ids = seeded_ids[300:380]
    for movie_id in ids:
        redis_client.delete(PREFIX + movie_id)
        stub.Get(movies_pb2.GetRequest(id=movie_id))
    for movie_id in ids:
        wait_for_key(redis_client, PREFIX + movie_id)
    ttls = [redis_client.pttl(PREFIX + movie_id) / 1000 for movie_id in ids]
    assert all(3600 * 0.9 - 60 <= ttl <= 3600 * 1.1 for ttl in ttls)
    assert max(ttls) - min(ttls) > 3600 * 0.1, "entries loaded together must not expire together"


def test_a_hot_entry_near_expiry_is_refreshed_early(stub, seeded_ids, mongo_proxy: FaultProxy, redis_client):
    movie_id = seeded_ids[400]
    key = PREFIX + movie_id
    stub.Get(movies_pb2.GetRequest(id=movie_id))
    wait_for_key(redis_client, key)
    # Pretend the entry expires in 50 ms and took a second to load: XFetch
    # then refreshes on (almost) every hit.
    soon = int(time.time() * 1000) + 50
    redis_client.hset(key, mapping={"e": soon, "d": 1000})
    mongo_proxy.tap.reset()
    for _ in range(20):
        assert stub.Get(movies_pb2.GetRequest(id=movie_id)).movie.id == movie_id
    deadline = time.monotonic() + 5
    while int(redis_client.hget(key, "e")) == soon:
        assert time.monotonic() < deadline, "the entry was never refreshed"
        time.sleep(0.01)
    assert int(redis_client.hget(key, "e")) > soon + 3000 * 1000
    assert 1 <= reads_of(mongo_proxy.tap, movie_id) <= 3, "refreshes are coalesced"


def test_xfetch_refreshes_more_often_the_nearer_the_expiry():
    now = time.time() * 1000
    random.seed(7)

    def rate(expiry_in_ms: float, delta_ms: float = 100) -> float:
        expiry, delta = str(now + expiry_in_ms).encode(), str(delta_ms).encode()
        hits = sum(xfetch.refresh_early(expiry, delta, now) for _ in range(2000))
        return hits / 2000

    assert rate(3_600_000) == 0
    assert rate(-1) == 1
    # P(refresh) = exp(-time_left / delta) for beta = 1.
    assert rate(100) == pytest.approx(math.exp(-1), abs=0.05)
    assert rate(300) == pytest.approx(math.exp(-3), abs=0.03)
    assert xfetch.refresh_early(None, None) is False


def test_missing_top_rated_index_is_rebuilt_once_for_concurrent_readers(stub, mongo_proxy: FaultProxy, redis_client):
    stub.TopRated(movies_pb2.TopRatedRequest(page_size=1))  # built once...
    redis_client.delete(*redis_client.scan_iter("movieservice:top:*"))  # ...and lost
    mongo_proxy.tap.reset()
    barrier = threading.Barrier(16)
    pages: list[list[str]] = []
    errors: list[grpc.RpcError] = []

    def read() -> None:
        barrier.wait()
        try:
            pages.append([m.id for m in stub.TopRated(movies_pb2.TopRatedRequest(page_size=20), timeout=60).movies])
        except grpc.RpcError as error:
            errors.append(error)

    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(pages) == 16 and all(page == pages[0] for page in pages)
    full_scans = mongo_proxy.tap.count("find", "movies", filter={})
    assert full_scans == 1, f"the index was rebuilt {full_scans} times"


def test_redis_replies_are_parsed_by_hiredis(redis_process):
    """Without hiredis redis-py falls back to its Python parser, silently: a
    TopRated page then costs ~1.6 times the CPU (BENCHMARKS.md). The service's
    connections are made by redis_pool (and its commands packed by hiredis)."""
    connection = redis_pool(f"redis://127.0.0.1:{redis_process.port}/0", 0.5).make_connection()
    assert type(connection._parser).__name__ == "_AsyncHiredisParser"
