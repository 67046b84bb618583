"""The cache's behaviour on one redis-server and on a real Redis Cluster (3
masters with a replica each, started by the session's fixture): the same
tests, over a real gRPC channel, counting the MongoDB commands on the wire.

On the cluster every script must touch one hash slot (the server refuses
anything else with CROSSSLOT), so each passing script is also a check of the
key schema's hash tags.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pymongo
import pytest
import redis
from bson import ObjectId
from prometheus_client import CollectorRegistry
from redis.cluster import RedisCluster

from movieservice.cache.cluster import RedisClusterCache
from movieservice.cache.keys import ClusterKeys, Keys
from movieservice.core.ports import CacheUnavailable, StoredMovie
from movieservice.core.ranking import Ranking
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from movieservice.proto.movies.v1.movies_pb2 import Movie
from tests.conftest import WRITER, serve_in_process
from tests.support.inprocess import ServedApp
from tests.support.reference import all_theaters, brute_force_nearby, expected_ranking
from tests.support.rpc import rpc_error
from tests.test_nearby import query_points
from tests.test_top_rated import all_pages, settings_direct_url

PREFIX = "movieservice:"


@dataclass
class Backend:
    name: str
    served: ServedApp
    stub: movies_pb2_grpc.MovieServiceStub
    keys: Keys
    # Clients of each master (one for a single node).
    masters: Callable[[], list[redis.Redis]]
    client: Any  # redis.Redis or redis.cluster.RedisCluster: reads any key

    def wait_for_key(self, key: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.exists(key):
            assert time.monotonic() < deadline, f"{key} never appeared"
            time.sleep(0.005)

    def flush(self) -> None:
        for client in self.masters():
            client.flushall()


@pytest.fixture(scope="module", params=["redis", "cluster"])
def backend(request, settings, server_loop, redis_process) -> Iterator[Backend]:
    if request.param == "redis":
        single = redis.Redis(port=redis_process.port)
        client: Any = single
        keys = Keys(PREFIX)
        service_settings = settings

        def masters() -> list[redis.Redis]:
            return [single]
    else:
        cluster = request.getfixturevalue("redis_cluster_processes")
        client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        keys = ClusterKeys(PREFIX)
        service_settings = replace(settings, redis_url=cluster.url, redis_cluster=True)

        def masters() -> list[redis.Redis]:
            return [redis.Redis(port=node.port) for node in cluster.primaries()]

    for master in masters():
        master.flushall()
    served = serve_in_process(server_loop, service_settings)
    channel = grpc.insecure_channel(served.target)
    yield Backend(request.param, served, movies_pb2_grpc.MovieServiceStub(channel), keys, masters, client)
    channel.close()
    served.stop()
    client.close()


def reads_of(tap, movie_id: str) -> int:
    return tap.count("find", "movies", filter={"_id": ObjectId(movie_id)})


def test_a_miss_reads_mongodb_once_and_later_gets_hit(backend: Backend, seeded_ids, mongo_proxy):
    movie_id = seeded_ids[11]
    mongo_proxy.tap.reset()
    first = backend.stub.Get(movies_pb2.GetRequest(id=movie_id)).movie
    backend.wait_for_key(backend.keys.movie(movie_id))
    for _ in range(20):
        assert backend.stub.Get(movies_pb2.GetRequest(id=movie_id)).movie == first
    assert reads_of(mongo_proxy.tap, movie_id) == 1


def test_a_missing_id_is_cached_as_missing_until_created(backend: Backend, mongo_proxy):
    missing = str(ObjectId())
    mongo_proxy.tap.reset()
    for _ in range(10):
        assert rpc_error(backend.stub.Get, movies_pb2.GetRequest(id=missing)).code() == grpc.StatusCode.NOT_FOUND
        backend.wait_for_key(backend.keys.movie(missing))
    assert reads_of(mongo_proxy.tap, missing) == 1
    movie = movies_pb2.Movie(id=missing, title="Now it exists")
    backend.stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=WRITER)
    assert backend.stub.Get(movies_pb2.GetRequest(id=missing)).movie.title == "Now it exists"


def test_an_upsert_is_visible_at_once(backend: Backend, mongo_proxy):
    created = backend.stub.Upsert(
        movies_pb2.UpsertRequest(movie=movies_pb2.Movie(title="round 0")), metadata=WRITER
    ).movie
    backend.stub.Get(movies_pb2.GetRequest(id=created.id))
    backend.wait_for_key(backend.keys.movie(created.id))
    for round_ in range(1, 30):
        movie = movies_pb2.Movie(id=created.id, title=f"round {round_}")
        backend.stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=WRITER)
        assert backend.stub.Get(movies_pb2.GetRequest(id=created.id)).movie.title == f"round {round_}"
    # From the cache, not the store: the writes replaced the cached copy.
    mongo_proxy.tap.reset()
    backend.stub.Get(movies_pb2.GetRequest(id=created.id))
    assert reads_of(mongo_proxy.tap, created.id) == 0


def test_concurrent_gets_of_a_cold_id_read_mongodb_once(backend: Backend, seeded_ids, mongo_proxy):
    movie_id = seeded_ids[222]
    mongo_proxy.tap.reset()
    with mongo_proxy.delaying(0.02):
        calls = [backend.stub.Get.future(movies_pb2.GetRequest(id=movie_id), timeout=30) for _ in range(300)]
        assert {call.result().movie.id for call in calls} == {movie_id}
    assert reads_of(mongo_proxy.tap, movie_id) == 1


def test_a_write_revokes_the_fill_lease_of_a_read_that_began_before_it(backend: Backend, seeded_ids):
    """The lease a miss takes before its store read, and the write that
    overtakes it: the fill is refused, and the written movie stays."""
    movie_id = seeded_ids[333]
    cache = backend.served.app.cache
    epoch = cache.recovery_epoch()
    lease = backend.served.run(cache.lease_fill(movie_id, 2.0))
    assert lease is not None
    assert backend.served.run(cache.lease_fill(movie_id, 2.0)) is None, "a second caller got the lease"
    old = backend.stub.Get(movies_pb2.GetRequest(id=movie_id)).movie  # from the store: the lease is taken
    written = movies_pb2.Movie()
    written.CopyFrom(old)
    written.title = f"{old.title} (rewritten)"
    backend.stub.Upsert(movies_pb2.UpsertRequest(movie=written), metadata=WRITER)
    stale = StoredMovie(movie=old, version=0)
    assert backend.served.run(cache.put_movie(movie_id, stale, 0.01, epoch, lease)) is False
    assert backend.stub.Get(movies_pb2.GetRequest(id=movie_id)).movie.title == written.title


@pytest.mark.slow
@pytest.mark.parametrize("genre", ["Drama", "Western"])
def test_top_rated_pages_match_the_ranking_computed_from_the_data(backend: Backend, settings, genre):
    expected = expected_ranking(settings_direct_url(settings), settings.mongo_db, genre)
    assert expected
    assert all_pages(backend.stub, genre, page_size=37) == expected


@pytest.mark.slow
def test_an_upsert_moves_a_movie_between_genre_rankings(backend: Backend, settings):
    """One write, several sorted sets (on a cluster, several slots): it leaves
    the rankings of the genres it lost and enters the new ones at once."""
    mark = uuid.uuid4().hex[:8]
    one, two, three = f"one-{mark}", f"two-{mark}", f"three}}{mark}"  # a brace in a genre, on purpose
    direct = settings_direct_url(settings)

    def upsert(movie_id: str, genres: list[str], rating: float | None) -> str:
        movie = movies_pb2.Movie(id=movie_id, title=f"ranked {mark}", genres=genres)
        if rating is not None:
            movie.imdb.rating, movie.imdb.votes = rating, 1_000_000
        return str(backend.stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=WRITER).movie.id)

    def check(genres: list[str]) -> None:
        for genre in (one, two, three):
            ranked = all_pages(backend.stub, genre)
            assert ranked == expected_ranking(direct, settings.mongo_db, genre), genre
            assert (movie_id in ranked) == (genre in genres), genre
        best = backend.stub.TopRated(movies_pb2.TopRatedRequest(page_size=1)).movies[0].id
        assert (best == movie_id) == bool(genres)  # 9.x with a million votes leads the whole ranking

    movie_id = upsert("", [one, two], 9.9)
    try:
        check([one, two])
        upsert(movie_id, [two, three], 9.8)
        check([two, three])
        upsert(movie_id, [three], None)  # no rating: in no ranking
        check([])
        upsert(movie_id, [one], 9.7)
        check([one])
    finally:
        with pymongo.MongoClient(direct) as client:
            client[settings.mongo_db].movies.delete_one({"_id": ObjectId(movie_id)})


def test_nearby_matches_brute_force_haversine(backend: Backend, settings):
    theaters = all_theaters(settings.mongo_url, settings.mongo_db)
    for lat, lon, radius, limit in query_points(theaters, count=40):
        response = backend.stub.Nearby(
            movies_pb2.NearbyRequest(latitude=lat, longitude=lon, radius_km=radius, limit=limit)
        )
        expected = brute_force_nearby(theaters, lat, lon, radius, limit)
        assert [t.theater.theater_id for t in response.theaters] == [theater_id for theater_id, _ in expected]


@pytest.mark.slow
def test_indexes_lost_with_the_data_are_rebuilt(backend: Backend, settings):
    """FLUSHALL on every master: the next TopRated and Nearby rebuild their
    indexes (finding the old keys by SCAN on every master)."""
    backend.flush()
    expected = expected_ranking(settings_direct_url(settings), settings.mongo_db, "Drama")
    assert all_pages(backend.stub, "Drama", page_size=100) == expected
    assert backend.stub.Nearby(movies_pb2.NearbyRequest(latitude=44.85, longitude=-93.24, radius_km=50)).theaters


def test_clear_deletes_every_key_of_the_service_on_every_master(backend: Backend, seeded_ids):
    for movie_id in seeded_ids[:30]:
        backend.stub.Get(movies_pb2.GetRequest(id=movie_id))
    backend.stub.TopRated(movies_pb2.TopRatedRequest(genre="Comedy"))
    backend.wait_for_key(backend.keys.movie(seeded_ids[29]))
    other = "someone-else:key"
    backend.client.set(other, "kept")
    cleared = backend.served.run(backend.served.app.cache.clear())
    assert cleared > 30
    assert [key for client in backend.masters() for key in client.scan_iter(PREFIX + "*")] == []
    assert backend.client.get(other) == b"kept"


def test_a_get_hit_sends_one_redis_command(backend: Backend, seeded_ids):
    """The hit path: one HMGET per Get, nothing else (counted by Redis itself,
    INFO commandstats, on every master)."""
    movie_id = seeded_ids[44]
    backend.stub.Get(movies_pb2.GetRequest(id=movie_id))
    backend.wait_for_key(backend.keys.movie(movie_id))
    masters = backend.masters()  # connected before the count starts
    for client in masters:
        client.config_resetstat()
    for _ in range(50):
        backend.stub.Get(movies_pb2.GetRequest(id=movie_id))
    calls: dict[str, int] = {}
    for client in masters:
        for name, stats in client.info("commandstats").items():
            calls[name] = calls.get(name, 0) + int(stats["calls"])
    # Health checks PING on their own schedule; INFO and CONFIG are this test's;
    # replicas send their masters REPLCONF ACK every second.
    ours = ("cmdstat_ping", "cmdstat_info", "cmdstat_config|resetstat", "cmdstat_replconf")
    assert {name: count for name, count in calls.items() if name not in ours} == {"cmdstat_hmget": 50}


def test_each_script_s_keys_share_one_slot(redis_cluster_processes):
    """Asked of the cluster itself (CLUSTER KEYSLOT), for awkward names too."""
    keys = ClusterKeys(PREFIX)
    with redis.Redis(port=redis_cluster_processes.nodes[0].port) as node:

        def slots(*names: str) -> set[int]:
            return {node.cluster("KEYSLOT", name) for name in names}

        for movie_id in ("573a1390f29313caabcd42e8", str(ObjectId())):
            movie_keys = (
                keys.movie(movie_id),
                keys.fill_lease(movie_id),
                keys.fence(movie_id),
                keys.genres_of(movie_id),
            )
            assert len(slots(*movie_keys)) == 1
        for genre in ("drama", "}", "a}b", "{x}", "film-noir"):
            ranking = keys.top_genre(genre)
            assert len(slots(ranking, keys.ranking_versions(ranking))) == 1, genre
        assert len(slots(keys.top_all, keys.ranking_versions(keys.top_all))) == 1
        assert len(slots(keys.geo, keys.geo_details, keys.geo_ready)) == 1


def test_a_connection_closed_under_a_write_is_redis_unavailable_then_replaced(redis_cluster_processes, server_loop):
    """On uvloop, writing to a connection whose transport has closed raises
    RuntimeError, not the ConnectionError redis-py handles (a master killed under
    load did that to an Upsert: INTERNAL). The write must count as Redis being
    unavailable (the use case records its repair), and the connection must not
    stay in the pool: the next write goes through."""
    metrics = Metrics(CollectorRegistry()).dependencies
    url = f"redis://127.0.0.1:{redis_cluster_processes.nodes[0].port}/0"
    cache = RedisClusterCache(url, metrics, key_prefix="closed:", breaker_reset_seconds=0.05)
    movie_id = str(ObjectId())

    def written(version: int) -> None:
        stored = StoredMovie(Movie(id=movie_id, title=f"v{version}", genres=["Drama"]), version)
        server_loop.run(cache.write_movie(stored, Ranking().entry(stored)))

    async def close_the_slot_s_connections() -> int:
        node = cache._cluster.get_node_from_key(cache.keys.movie(movie_id))
        closed = 0
        for connection in node._connections:
            if connection._writer is not None:
                connection._writer.transport.close()
                closed += 1
        await asyncio.sleep(0.01)  # the transports' connection_lost runs
        return closed

    try:
        written(1)
        assert server_loop.run(close_the_slot_s_connections()) > 0
        with pytest.raises(CacheUnavailable):
            written(2)
        deadline = time.monotonic() + 5
        while True:
            try:
                written(3)
                break
            except CacheUnavailable:
                assert time.monotonic() < deadline, "the closed connection was never replaced"
                time.sleep(0.1)
        with RedisCluster(host="127.0.0.1", port=redis_cluster_processes.nodes[0].port) as client:
            assert client.hget(cache.keys.movie(movie_id), "v") == b"3"
    finally:
        server_loop.run(cache.close())
