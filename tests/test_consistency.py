"""The consistency checker against two server processes, with the race windows
widened on purpose, and with Redis and MongoDB failing under load.

First the checker is shown to work: against deliberately naive cache-aside it
finds stale reads. Then the real mode must show none, also while Redis is
killed, paused, or MongoDB is stopped, and the service must recover by itself.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import grpc
import pymongo
import pytest

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.support.checker import ConsistencyChecker
from tests.support.stack import AUTH_TOKEN, DATABASE, Stack, variant

pytestmark = pytest.mark.slow

# Entries expire quickly (so reads keep missing) and every cache fill waits
# 200 ms after its store read: the window in which a write can overtake it.
RACE_WINDOWS = {"MOVIE_TTL_SECONDS": "1"}
DELAYED_FILLS = variant("delayed-fills", "0.2")


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    running = Stack(tmp_path).start()
    yield running
    running.close()


def movie_ids(stack: Stack, count: int = 6) -> list[str]:
    with pymongo.MongoClient(stack.mongo_url) as client:
        return sorted(str(doc["_id"]) for doc in client[DATABASE].movies.find({}, {"_id": 1}))[:count]


def checker(stack: Stack, services, **options) -> ConsistencyChecker:
    return ConsistencyChecker([s.target for s in services], movie_ids(stack), AUTH_TOKEN, **options)


def test_the_checker_finds_the_races_of_naive_cache_aside(stack):
    services = stack.serve(2, argv=variant("naive"), **RACE_WINDOWS)
    report = checker(stack, services).run(8)
    assert report.reads > 100 and report.writes > 30, report
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}
    print(f"naive: {report.reads} reads, {report.writes} writes, {len(report.stale)} stale")
    assert len(report.stale) > 0, "the checker missed the stale-set race of naive cache-aside"


def test_no_stale_reads_with_versioned_writes_two_processes(stack):
    services = stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)
    report = checker(stack, services).run(8)
    print(f"versioned: {report.reads} reads, {report.writes} writes, {len(report.stale)} stale")
    assert report.reads > 300 and report.writes > 30, report
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}
    assert report.stale == []


def cached_movies(stack: Stack) -> int:
    import redis

    with redis.Redis(port=stack.redis.port) as client:
        return sum(1 for _ in client.scan_iter("movieservice:movie:*"))


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)


def test_redis_killed_and_restarted_under_load(stack):
    services = stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)

    def outage() -> None:
        time.sleep(2)
        stack.redis.kill()
        time.sleep(3)
        stack.restart_redis()

    report = checker(stack, services).run(12, during=outage)
    assert report.stale == []
    # Reads fell back to MongoDB and writes deferred their cache updates: clients saw no error.
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}, report
    # Recovered by itself: the cache fills again.
    with grpc.insecure_channel(services[0].target) as channel:
        stub = movies_pb2_grpc.MovieServiceStub(channel)
        wait_for(lambda: [stub.Get(movies_pb2.GetRequest(id=m)) for m in movie_ids(stack)] and cached_movies(stack) > 0,
                 what="refilling the restarted Redis")  # fmt: skip


def test_redis_paused_under_load(stack):
    services = stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)

    def pause() -> None:
        time.sleep(2)
        stack.redis.process.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        stack.redis.process.send_signal(signal.SIGCONT)

    report = checker(stack, services).run(12, during=pause)
    assert report.stale == []
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}, report


def test_redis_silently_losing_its_data_under_load(stack):
    """FLUSHALL on a live Redis (an operator, `movieservice seed` on a shared
    Redis, a failover behind a proxy): no connection error tells the service,
    and the version fences vanish with the data. A fill must still not land a
    movie older than a write acknowledged before the loss."""
    import redis

    services = stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)
    flushes = 0

    def lose_data() -> None:
        nonlocal flushes
        with redis.Redis(port=stack.redis.port) as client:
            for _ in range(40):
                time.sleep(0.25)
                client.flushall()
                flushes += 1

    report = checker(stack, services, write_pause=0.1).run(12, during=lose_data)
    print(f"flushed {flushes} times: {report.reads} reads, {report.writes} writes, {len(report.stale)} stale")
    assert report.reads > 300 and report.writes > 30, report
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}, report
    assert report.stale == []


def test_redis_evicting_any_key_under_memory_pressure(stack):
    """`maxmemory-policy allkeys-random` with too little memory: fences and
    leases are evicted like any other key, with no error to tell."""
    import redis

    services = stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)
    with redis.Redis(port=stack.redis.port) as client:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "allkeys-random")
        client.config_set("maxmemory", str(used + 16 * 1024))
        try:
            report = checker(stack, services, write_pause=0.1).run(12)
            evicted = int(client.info("stats")["evicted_keys"])
        finally:
            client.config_set("maxmemory", "0")
    print(f"evicted {evicted} keys: {report.reads} reads, {report.writes} writes, {len(report.stale)} stale")
    assert evicted > 20, "the memory limit did not make Redis evict"
    assert report.reads > 300 and report.writes > 30, report
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}, report
    assert report.stale == []


def test_writes_during_a_redis_outage_leave_nothing_stale_behind(stack):
    """Redis keeps its data through the outage (a network cut, not a restart):
    the copies it holds from before must not be served after it is back."""
    services = stack.serve(2)
    movie = movie_ids(stack)[0]
    stubs = [movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(s.target)) for s in services]
    metadata = (("authorization", f"Bearer {AUTH_TOKEN}"),)
    for stub in stubs:
        stub.Get(movies_pb2.GetRequest(id=movie))
    wait_for(lambda: cached_movies(stack) > 0, what="caching the movie")
    stack.redis.process.send_signal(signal.SIGSTOP)
    try:
        stubs[0].Upsert(
            movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=movie, title="written during the outage")),
            metadata=metadata,
            timeout=10,
        )
        assert stubs[1].Get(movies_pb2.GetRequest(id=movie), timeout=10).movie.title == "written during the outage"
    finally:
        stack.redis.process.send_signal(signal.SIGCONT)
    for _ in range(50):
        for stub in stubs:
            assert stub.Get(movies_pb2.GetRequest(id=movie), timeout=10).movie.title == "written during the outage"
        time.sleep(0.05)


def test_a_writer_killed_between_store_and_cache_leaves_no_lasting_stale_copy(stack):
    """The writing process dies after MongoDB took the write and before Redis
    got it: the intent it recorded first comes due (after the write's timeout,
    1 s here, and a 2 s margin) and the other process repairs the cache, where
    the old copy would otherwise live for its TTL (an hour)."""
    [survivor] = stack.serve(1, REQUEST_TIMEOUT_SECONDS="1")
    [dying] = stack.serve(1, argv=variant("dies-on-write"), REQUEST_TIMEOUT_SECONDS="1")
    movie = movie_ids(stack)[0]
    reader = movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(survivor.target))
    old_title = reader.Get(movies_pb2.GetRequest(id=movie), timeout=10).movie.title
    wait_for(lambda: cached_movies(stack) > 0, what="caching the movie")
    writer = movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(dying.target))
    with pytest.raises(grpc.RpcError) as died:
        writer.Upsert(
            movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=movie, title="written; then its writer died")),
            metadata=(("authorization", f"Bearer {AUTH_TOKEN}"),),
            timeout=10,
        )
    assert died.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dying.process.wait(10) == 17
    with pymongo.MongoClient(stack.mongo_url) as client:
        assert client[DATABASE].movies.find_one({"title": "written; then its writer died"}) is not None
    # The window: the cache still has the old copy...
    assert reader.Get(movies_pb2.GetRequest(id=movie), timeout=10).movie.title == old_title
    # ...for seconds, not an hour.
    wait_for(
        lambda: reader.Get(movies_pb2.GetRequest(id=movie), timeout=10).movie.title == "written; then its writer died",
        what="the dead writer's intent coming due and being applied",
    )


def test_mongodb_stopped_and_restarted_under_load(stack):
    services = stack.serve(2)
    ids = movie_ids(stack)
    cached, uncached = ids[0], ids[-1]
    outage_results: dict[str, object] = {}

    def outage() -> None:
        time.sleep(2)
        with grpc.insecure_channel(services[1].target) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            stub.Get(movies_pb2.GetRequest(id=cached), timeout=10)
            stack.stop_mongo()
            time.sleep(0.5)
            outage_results["hit"] = stub.Get(movies_pb2.GetRequest(id=cached), timeout=10).movie.id
            try:
                stub.Get(movies_pb2.GetRequest(id=str(pymongo.collection.ObjectId())), timeout=10)
            except grpc.RpcError as error:
                outage_results["miss"] = (error.code(), error.details())
            time.sleep(2)
        stack.start_mongo()

    report = ConsistencyChecker([s.target for s in services], ids[1:-1], AUTH_TOKEN).run(12, during=outage)
    assert report.stale == []
    assert outage_results["hit"] == cached, "cache hits are served while MongoDB is down"
    assert outage_results["miss"] == (grpc.StatusCode.UNAVAILABLE, "MongoDB is unavailable")
    # Only two outcomes: served, or UNAVAILABLE (never a hang, INTERNAL or UNKNOWN).
    assert set(report.read_codes) <= {"OK", "UNAVAILABLE"} and set(report.write_codes) <= {"OK", "UNAVAILABLE"}
    assert report.write_codes["UNAVAILABLE"] > 0, "writes failed while MongoDB was down"
    # Recovered by itself.
    with grpc.insecure_channel(services[0].target) as channel:
        stub = movies_pb2_grpc.MovieServiceStub(channel)
        wait_for(
            lambda: _upsert_works(stub, uncached),
            what="writes succeeding again after MongoDB came back",
        )


def _upsert_works(stub, movie_id: str) -> bool:
    try:
        stub.Upsert(
            movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=movie_id, title="after the outage")),
            metadata=(("authorization", f"Bearer {AUTH_TOKEN}"),),
            timeout=5,
        )
    except grpc.RpcError:
        return False
    return stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=5).movie.title == "after the outage"


def test_near_cache_reads_its_own_writes_and_bounds_staleness_elsewhere(stack):
    """NEAR_CACHE_SIZE trades the strict guarantee for hits without a Redis round
    trip: the server that took a write never serves the older version; another
    server may, until Redis' invalidation message reaches it."""
    services = stack.serve(2, argv=DELAYED_FILLS, NEAR_CACHE_SIZE="1000", **RACE_WINDOWS)
    report = ConsistencyChecker([s.target for s in services], movie_ids(stack), AUTH_TOKEN, pin_writers=True).run(8)
    assert report.reads > 300 and report.writes > 30, report
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}
    assert [s for s in report.stale if s.same_server] == []
    elsewhere = [s.lag_seconds for s in report.stale]
    print(f"near cache: {report.reads} reads, {len(elsewhere)} stale on the other server, "
          f"max lag {max(elsewhere, default=0) * 1000:.1f} ms")  # fmt: skip
    assert max(elsewhere, default=0) < 0.25, "invalidations took longer than the documented bound"


@pytest.fixture
def cluster_stack(tmp_path) -> Iterator[Stack]:
    """The stack on a Redis Cluster: 3 masters with a replica each (REDIS_CLUSTER=1)."""
    running = Stack(tmp_path, cluster_mode=True).start()
    yield running
    running.close()


def cached_movies_on_cluster(stack: Stack) -> int:
    import redis

    count = 0
    for node in stack.cluster.primaries():
        with redis.Redis(port=node.port) as client:
            count += sum(1 for _ in client.scan_iter("movieservice:movie:*"))
    return count


def test_no_stale_reads_on_a_redis_cluster(cluster_stack):
    services = cluster_stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)
    report = checker(cluster_stack, services).run(8)
    print(f"cluster: {report.reads} reads, {report.writes} writes, {len(report.stale)} stale")
    assert report.reads > 300 and report.writes > 30, report
    assert set(report.read_codes) == {"OK"} and set(report.write_codes) == {"OK"}, report
    assert report.stale == []


def test_a_redis_cluster_master_killed_under_load(cluster_stack):
    """SIGKILL one master while two processes read and write: its replica is
    promoted, the service carries on (reads from MongoDB and writes recorded
    as repairs while the slot is out; UNAVAILABLE allowed but counted), and
    afterwards it uses the cluster again with no stale read."""
    cluster = cluster_stack.cluster
    services = cluster_stack.serve(2, argv=DELAYED_FILLS, **RACE_WINDOWS)
    failover: dict[str, float] = {}

    def kill_a_master() -> None:
        time.sleep(3)
        victim = cluster.kill_primary()
        killed = time.monotonic()
        cluster.wait_until_ok(30)
        failover["seconds"] = time.monotonic() - killed
        assert not victim.running and len(cluster.primaries()) == cluster.masters

    report = checker(cluster_stack, services).run(15, during=kill_a_master)
    logs = "".join(service.log.read_text() for service in services)
    opened, deferred = logs.count("circuit breaker open"), logs.count("cache update deferred")
    print(
        f"master killed: promoted after {failover['seconds']:.1f} s; {report.reads} reads {dict(report.read_codes)}, "
        f"{report.writes} writes {dict(report.write_codes)}, {len(report.stale)} stale; "
        f"breakers opened {opened} times, {deferred} cache writes deferred to repairs"
    )
    assert opened > 0, "the service never noticed the failover: the test did not exercise it"
    assert report.stale == []
    assert set(report.read_codes) <= {"OK", "UNAVAILABLE"} and set(report.write_codes) <= {"OK", "UNAVAILABLE"}
    assert report.reads > 300 and report.writes > 30, report
    # Afterwards: the cache is in use again (the copies come back) and nothing is stale.
    with grpc.insecure_channel(services[0].target) as channel:
        stub = movies_pb2_grpc.MovieServiceStub(channel)
        cluster.flushall()
        wait_for(
            lambda: (
                [stub.Get(movies_pb2.GetRequest(id=m)) for m in movie_ids(cluster_stack)]
                and cached_movies_on_cluster(cluster_stack) >= len(movie_ids(cluster_stack))
            ),
            what="the service filling the cluster again after the failover",
        )
    after = checker(cluster_stack, services).run(8)
    print(f"after the failover: {after.reads} reads, {after.writes} writes, {len(after.stale)} stale")
    assert after.reads > 300 and after.writes > 30, after
    assert set(after.read_codes) == {"OK"} and set(after.write_codes) == {"OK"}, after
    assert after.stale == []
