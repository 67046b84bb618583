"""The capacity rows: what the service needs at the full sample_mflix size
(about 23,500 movies) and at ten times that: how long seeding and the index
rebuilds take, and Redis memory per TopRated entry and per cached movie.
Each size gets a database of synthetic movies (the sample_mflix schema) and
a Redis of its own, so that Redis' memory counts only what that size put there."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import grpc
import redis

from movieservice.bench.latency import get_each
from movieservice.bench.load import LOAD_CORE
from movieservice.bench.session import Bench, answered, movie_ids, movie_service
from movieservice.devstack.processes import redis_server
from movieservice.devstack.stack import seed_database
from movieservice.proto.movies.v1 import movies_pb2

# sample_mflix's movies collection holds 23,539 movies (MongoDB's documentation).
FULL_SIZE = 23_500
# Theaters: all of sample_mflix's 1,564, whatever the movie count.
THEATERS = 1_564
# How many movies are cached (each read once) to measure memory per cached movie.
CACHED = 5_000
# A rebuild may take this long.
REBUILD_TIMEOUT_SECONDS = 600.0


def capacity(bench: Bench, command: str) -> None:
    sizes = (FULL_SIZE // 10, FULL_SIZE) if bench.quick else (FULL_SIZE, FULL_SIZE * 10)
    for movies in sizes:
        _size(bench, command, movies)


def _size(bench: Bench, command: str, movies: int) -> None:
    database = f"bench_capacity_{movies}"
    started = time.monotonic()
    seed_database(bench.settings.mongo_url, database, synthetic=movies, theaters=THEATERS, random_seed=movies)
    seeding = time.monotonic() - started
    bench.mongo.index_ids()
    store = redis_server(bench.work / f"redis-capacity-{movies}", cpus=LOAD_CORE).start()
    bench.servers.append(store)
    client = redis.Redis(port=store.port)
    # Calls may wait for a whole rebuild (else one that outlasts the default
    # 5 s answers UNAVAILABLE or DEADLINE_EXCEEDED, and is retried).
    service = bench.serve(
        f"capacity-{movies}",
        MONGO_DB=database,
        REDIS_URL=bench.redis_url(store),
        NEAR_CACHE_SIZE="0",
        REQUEST_TIMEOUT_SECONDS=str(REBUILD_TIMEOUT_SECONDS),
        INDEX_REBUILD_TIMEOUT_SECONDS=str(REBUILD_TIMEOUT_SECONDS),
    )
    with grpc.insecure_channel(service.target) as channel:
        stub = movie_service(channel)
        top_rated = movies_pb2.TopRatedRequest(genre="Drama")
        point = movies_pb2.NearbyRequest(latitude=40.7, longitude=-74.0, radius_km=50)
        # The service builds both indexes as it starts (let it finish); then
        # they are built again, timed, as a Redis that lost them would have
        # them rebuilt by the next calls (which answer UNAVAILABLE, retry,
        # while a rebuild outlasts their deadline).
        answered(lambda: stub.TopRated(top_rated, timeout=REBUILD_TIMEOUT_SECONDS))
        answered(lambda: stub.Nearby(point, timeout=REBUILD_TIMEOUT_SECONDS))
        client.flushall()
        empty = int(client.info("memory")["used_memory"])
        top = _timed(lambda: answered(lambda: stub.TopRated(top_rated, timeout=REBUILD_TIMEOUT_SECONDS)))
        ranked = int(client.info("memory")["used_memory"])
        near = _timed(lambda: answered(lambda: stub.Nearby(point, timeout=REBUILD_TIMEOUT_SECONDS)))
        located = int(client.info("memory")["used_memory"])
    ids = movie_ids(bench.settings.mongo_url, database)
    cached = random.Random(movies).sample(ids, min(CACHED, len(ids)))
    report = get_each(bench, service, cached)
    if not report.all_ok:
        raise RuntimeError(f"the Gets that fill the cache failed: {report.status_codes}")
    filled = int(client.info("memory")["used_memory"])
    client.close()
    service.process.stop()
    bench.services.pop(service.name)
    per_movie = (filled - located) / len(cached)
    per_entry = (ranked - empty) / len(ids)
    bench.row(
        f"Capacity at {movies:,} movies (and {THEATERS:,} theaters)",
        "(measured)",
        f"seeding {seeding:.0f} s; TopRated index rebuild {top:.1f} s, theater index rebuild {near:.2f} s; "
        f"Redis: {per_movie:.0f} B per cached movie, TopRated indexes {(ranked - empty) / 2**20:.1f} MiB "
        f"({per_entry:.0f} B per movie), theater index {(located - ranked) / 2**20:.2f} MiB",
        f"synthetic movies in the sample_mflix schema; the rebuilds timed as the first TopRated and Nearby "
        f"after FLUSHALL (each answers once its index is rebuilt); memory from Redis' used_memory before and "
        f"after; {len(cached):,} random movies read once each to cache them "
        f"({report.summary()})",
        f"{command}: seed --synthetic {movies}, NEAR_CACHE_SIZE=0, a Redis of its own",
    )


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started
