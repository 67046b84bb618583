"""Versioned cache writes on a real Redis: whatever order fills, writes and
rebuild entries arrive in, the newest version wins (hypothesis); and a fill
lands only while the lease it took before its store read survives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from movieservice.cache.redis_cache import RedisCache
from movieservice.core.ports import RankEntry, StoredMovie
from movieservice.core.ranking import Ranking
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1.movies_pb2 import Imdb, Movie

MOVIE_ID = "650000000000000000000abc"


@pytest.fixture(scope="module")
def cache(redis_process, server_loop) -> Iterator[RedisCache]:
    metrics = Metrics(CollectorRegistry()).dependencies
    instance = RedisCache(f"redis://127.0.0.1:{redis_process.port}/0", metrics, key_prefix="versions:")
    yield instance
    server_loop.run(instance.close())


def version(number: int) -> StoredMovie:
    genres = [["Drama"], ["Comedy", "War"], []][number % 3]
    imdb = Imdb(rating=number % 10, votes=1000 * number) if number % 4 else Imdb()
    return StoredMovie(Movie(id=MOVIE_ID, title=f"v{number}", genres=genres, imdb=imdb), number)


operation = st.tuples(st.sampled_from(["fill", "write", "rebuild"]), st.integers(0, 6))


@hypothesis_settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, min_size=1, max_size=12))
def test_the_newest_version_wins_in_any_order(cache, server_loop, redis_client: redis.Redis, operations):
    """`operations` arrive at Redis in this order, each with the version it
    carries: fills (a reader's store read, possibly old), writes, and index
    rebuilds (whose store snapshot holds at least every write that reached
    Redis before; the seeded movie is version 0)."""
    redis_client.delete(*redis_client.scan_iter("versions:*"), "versions:none")
    ranking = Ranking()
    arrived_writes = [0]
    indexed = -1
    for kind, number in operations:
        if kind == "fill":
            # A lease taken just now survives: the versions alone must refuse an old fill.
            lease = server_loop.run(cache.lease_fill(MOVIE_ID, 5))
            assert lease is not None
            server_loop.run(cache.put_movie(MOVIE_ID, version(number), 0.01, cache.recovery_epoch(), lease))
        elif kind == "write":
            server_loop.run(cache.write_movie(version(number), ranking.entry(version(number))))
            arrived_writes.append(number)
            indexed = max(indexed, number)
        else:
            snapshot = max(arrived_writes)

            async def entries(snapshot: int = snapshot) -> list[RankEntry]:
                return [ranking.entry(version(snapshot))]

            server_loop.run(cache.rebuild_top_index(entries))
            indexed = max(indexed, snapshot)

    cached = server_loop.run(cache.get_movie(MOVIE_ID))
    cached_version = int(Movie.FromString(cached.data).title[1:]) if cached is not None else None
    if len(arrived_writes) > 1:
        assert cached_version is not None and cached_version >= max(arrived_writes), "a write was lost"
    if cached_version is not None:
        assert cached_version >= indexed, "the cached copy is older than the index"
        assert cached_version <= max(n for kind, n in operations if kind != "rebuild")
    if indexed >= 0:
        entry = ranking.entry(version(indexed))
        expected = [] if entry.score is None else [(MOVIE_ID.encode(), -entry.score)]
        assert redis_client.zrange("versions:top:all", 0, -1, withscores=True) == expected
        for genre in ("drama", "comedy", "war"):
            members = redis_client.zrange(f"versions:top:genre:{genre}", 0, -1, withscores=True)
            assert members == (expected if genre in entry.genres else [])


def fill(cache: RedisCache, server_loop, number: int, lease: str) -> bool:
    return server_loop.run(cache.put_movie(MOVIE_ID, version(number), 0.01, cache.recovery_epoch(), lease))


@pytest.mark.parametrize(
    "loss",
    [
        lambda client: client.flushall(),
        lambda client: client.flushdb(),
        lambda client: client.delete(*client.keys("versions:*")),  # `movieservice seed` on a live Redis
    ],
    ids=["flushall", "flushdb", "keys-deleted"],
)
def test_a_fill_whose_lease_went_with_lost_data_does_not_land(cache, server_loop, redis_client, loss):
    """The race FLUSHALL opens: a miss reads v1, a write of v2 lands (with its
    fence), Redis loses everything, the miss' fill of v1 arrives."""
    redis_client.flushall()
    lease = server_loop.run(cache.lease_fill(MOVIE_ID, 5))
    assert lease is not None
    server_loop.run(cache.write_movie(version(2), Ranking().entry(version(2))))
    loss(redis_client)
    assert not fill(cache, server_loop, 1, lease)
    assert server_loop.run(cache.get_movie(MOVIE_ID)) is None


def test_a_write_revokes_the_lease_even_of_a_fill_as_new_as_it(cache, server_loop, redis_client):
    redis_client.flushall()
    lease = server_loop.run(cache.lease_fill(MOVIE_ID, 5))
    assert lease is not None and server_loop.run(cache.lease_fill(MOVIE_ID, 5)) is None  # one holder
    server_loop.run(cache.write_movie(version(3), Ranking().entry(version(3))))
    assert not fill(cache, server_loop, 3, lease)
    again = server_loop.run(cache.lease_fill(MOVIE_ID, 5))
    assert again is not None and not fill(cache, server_loop, 3, lease)  # an old lease is not the new one
    assert fill(cache, server_loop, 3, again)
    assert redis_client.exists(f"versions:lease:{MOVIE_ID}") == 0, "a fill ends its lease"
