"""Upsert (write-through) and the cache repairs, against in-memory fakes."""

from __future__ import annotations

import asyncio

import pytest

from movieservice.core import writes
from movieservice.core.deadline import Deadline
from movieservice.core.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable
from movieservice.core.service import MovieService, ServiceOptions
from movieservice.core.writers import Credentials, FailureLimiter, Writers
from movieservice.proto.movies.v1.movies_pb2 import Imdb, Movie
from tests.core.conftest import WRITER
from tests.support.fakes import FakeCache, FakeStore, RecordedEvents, down

MOVIE_ID = "65a1b2c3d4e5f60718293a4c"


def soon() -> Deadline:
    return Deadline.within(5)


async def test_a_write_reaches_the_store_then_the_cache_and_the_index(core):
    movie = Movie(id=MOVIE_ID.upper(), title="Written", genres=["Drama"], imdb=Imdb(rating=8.0, votes=5000))
    outcome = await core.service.writes.upsert(movie, WRITER, soon())
    assert outcome.created and outcome.stored.movie.id == MOVIE_ID
    assert core.store.movies[MOVIE_ID].version == 1
    assert core.cache.entries[MOVIE_ID] == (1, outcome.stored.data)
    assert core.cache.ranked[MOVIE_ID][1] == ("drama",)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Upsert needs the metadata 'authorization: Bearer <token>'"),
        ("Basic abc", "Upsert needs the metadata 'authorization: Bearer <token>'"),
        ("Bearer ", "Upsert needs the metadata 'authorization: Bearer <token>'"),
        ("Bearer wrong", "the bearer token is not valid"),
    ],
)
async def test_writers_need_the_token(core, authorization, message):
    with pytest.raises(Unauthenticated) as raised:
        await core.service.writes.upsert(Movie(title="x"), Credentials(authorization, peer="p"), soon())
    assert str(raised.value) == message
    assert core.store.calls["upsert_movie"] == 0


async def test_without_tokens_nobody_writes():
    service = MovieService.create(FakeCache(), FakeStore(), RecordedEvents(), ServiceOptions())
    with pytest.raises(PermissionDenied, match="writes are disabled"):
        await service.writes.upsert(Movie(title="x"), WRITER, soon())


async def test_an_invalid_movie_names_each_problem(core):
    movie = Movie(title=" ", year=1500, imdb=Imdb(rating=11))
    with pytest.raises(InvalidArgument) as raised:
        await core.service.writes.upsert(movie, WRITER, soon())
    assert {v.field for v in raised.value.violations} == {"movie.title", "movie.year", "movie.imdb.rating"}
    with pytest.raises(InvalidArgument, match="movie: is required"):
        await core.service.writes.upsert(None, WRITER, soon())


async def test_the_store_being_down_fails_the_write_and_changes_nothing(core):
    core.store.failure = down()
    with pytest.raises(Unavailable, match="MongoDB is unavailable"):
        await core.service.writes.upsert(Movie(id=MOVIE_ID, title="x"), WRITER, soon())
    assert core.cache.entries == {}


async def test_the_cache_being_down_records_a_repair_that_is_applied_later(core):
    core.cache.entries[MOVIE_ID] = (0, Movie(id=MOVIE_ID, title="old").SerializeToString())
    core.cache.unavailable = True
    outcome = await core.service.writes.upsert(Movie(id=MOVIE_ID, title="new"), WRITER, soon())
    assert [r.movie_id for r in await core.store.cache_repairs(1)] == [MOVIE_ID]  # due at once
    assert core.events.counts["repair", "recorded"] == 1
    core.cache.unavailable = False
    assert await core.service.repairs.apply() == 1
    assert core.cache.entries[MOVIE_ID] == (1, outcome.stored.data)
    assert core.store.repairs == {}


async def test_a_write_whose_caller_goes_away_still_reaches_the_cache(core):
    """grpc.aio cancels a handler when its client cancels or its deadline
    passes; a write the store took must still replace the cached copy."""
    core.cache.entries[MOVIE_ID] = (0, Movie(id=MOVIE_ID, title="old").SerializeToString())
    core.store.delay = 0.05
    writing = asyncio.ensure_future(core.service.writes.upsert(Movie(id=MOVIE_ID, title="new"), WRITER, soon()))
    await asyncio.sleep(0.01)
    writing.cancel()
    await core.settle()
    assert Movie.FromString(core.cache.entries[MOVIE_ID][1]).title == "new"


async def test_each_writer_is_named_by_its_token_and_the_log_says_who_wrote(caplog):
    tokens = {"ci": "token-of-ci", "alice": "token-of-alice"}
    service = MovieService.create(FakeCache(), FakeStore(), RecordedEvents(), ServiceOptions(writer_tokens=tokens))
    with caplog.at_level("INFO", logger="movieservice.core.writes"):
        await service.writes.upsert(Movie(title="x"), Credentials("Bearer token-of-alice", "p"), soon())
    assert "writer=alice" in caplog.text
    assert "token-of-alice" not in caplog.text


async def test_an_allowed_certificate_subject_writes_without_a_token(caplog):
    service = MovieService.create(
        FakeCache(), FakeStore(), RecordedEvents(), ServiceOptions(writer_subjects=["deployer"])
    )
    with caplog.at_level("INFO", logger="movieservice.core.writes"):
        await service.writes.upsert(Movie(title="x"), Credentials(None, "p", certificate_subject="deployer"), soon())
    assert "writer=certificate:deployer" in caplog.text
    with pytest.raises(Unauthenticated):
        await service.writes.upsert(Movie(title="x"), Credentials(None, "p", certificate_subject="intruder"), soon())


async def test_an_address_that_keeps_failing_is_refused_for_a_while_and_others_are_not():
    now = [0.0]
    events = RecordedEvents()
    writers = Writers({"w": "right"}, events, limiter=FailureLimiter(burst=3, per_second=0.5, clock=lambda: now[0]))
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            writers.check(Credentials("Bearer wrong", "guesser"))
    with pytest.raises(ResourceExhausted, match="retry in 2 s"):
        writers.check(Credentials("Bearer right", "guesser"))  # even the right token waits
    assert writers.check(Credentials("Bearer right", "someone-else")) == "w"
    now[0] = 2.0  # one attempt's allowance came back
    assert writers.check(Credentials("Bearer right", "guesser")) == "w"
    assert events.counts["auth_failure", "invalid"] == 3
    assert events.counts["auth_failure", "rate_limited"] == 1


async def test_failure_counts_name_the_reason():
    events = RecordedEvents()
    with pytest.raises(Unauthenticated):
        Writers({"w": "right"}, events).check(Credentials(None, "p"))
    with pytest.raises(PermissionDenied):
        Writers({}, events).check(Credentials("Bearer right", "p"))
    assert events.counts["auth_failure", "missing"] == 1
    assert events.counts["auth_failure", "writes_disabled"] == 1


def test_the_limiter_forgets_the_least_recent_addresses_beyond_its_size():
    limiter = FailureLimiter(burst=1, per_second=0.001, max_peers=2, clock=lambda: 0.0)
    for peer in ("a", "b", "c"):
        limiter.failed(peer)
    assert limiter.retry_after("a") == 0  # forgotten
    assert limiter.retry_after("b") > 0 and limiter.retry_after("c") > 0


async def test_a_write_records_its_intent_first_and_clears_it_once_the_cache_has_it(core):
    core.store.add(Movie(id=MOVIE_ID, title="old"), version=1)
    await core.service.writes.upsert(Movie(id=MOVIE_ID, title="new"), WRITER, soon())
    assert core.store.calls["record_cache_repair"] == 1
    await core.settle()
    assert core.store.repairs == {}
    assert core.events.counts["repair", "recorded"] == 0  # an intent is not a failure


async def test_a_writer_that_dies_between_store_and_cache_leaves_a_repair_that_comes_due(monkeypatch):
    """The process ends after the store took the write and before the cache
    got it: the intent it recorded first is applied by any other process."""
    monkeypatch.setattr(writes, "_INTENT_MARGIN_SECONDS", 0.05)
    store, cache, events = FakeStore(), FakeCache(), RecordedEvents()
    store.add(Movie(id=MOVIE_ID, title="old"), version=1)
    cache.entries[MOVIE_ID] = (1, store.movies[MOVIE_ID].data)

    async def dies(*_: object) -> None:
        raise asyncio.CancelledError  # as a killed process looks from here: nothing after this runs

    writer = MovieService.create(cache, store, events, ServiceOptions(writer_tokens={"w": "t"}))
    cache.write_movie = dies  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await writer.writes.upsert(Movie(id=MOVIE_ID, title="new"), Credentials("Bearer t", "p"), Deadline.within(0.1))
    del cache.write_movie
    assert Movie.FromString(cache.entries[MOVIE_ID][1]).title == "old"
    survivor = MovieService.create(cache, store, events)
    assert await survivor.repairs.apply() == 0, "not due while the write may still be under way"
    await asyncio.sleep(0.2)  # the write's timeout and the margin
    assert await survivor.repairs.apply() == 1
    assert Movie.FromString(cache.entries[MOVIE_ID][1]).title == "new"
