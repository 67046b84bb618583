"""Get (cache-aside) against in-memory fakes of the cache and the store."""

from __future__ import annotations

import asyncio

import pytest

from movieservice.core.deadline import Deadline
from movieservice.core.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from movieservice.core.reads import CacheOutcome
from movieservice.proto.movies.v1.movies_pb2 import Movie
from tests.core.conftest import WRITER
from tests.support.fakes import down

MOVIE_ID = "573a1390f29313caabcd42e8"


def soon() -> Deadline:
    return Deadline.within(5)


async def test_a_hit_answers_from_the_cache_alone(core):
    stored = core.store.add(Movie(id=MOVIE_ID, title="cached"), version=3)
    core.cache.entries[MOVIE_ID] = (3, stored.data)
    assert await core.service.reads.get(MOVIE_ID, soon()) == stored.data
    assert core.store.calls["get_movie"] == 0
    assert core.events.counts["lookup", "movie", "hit"] == 1


async def test_a_miss_reads_the_store_answers_and_fills_in_the_background(core):
    stored = core.store.add(Movie(id=MOVIE_ID, title="stored"), version=2)
    assert await core.service.reads.get(MOVIE_ID.upper(), soon()) == stored.data
    await core.settle()
    assert core.cache.entries[MOVIE_ID] == (2, stored.data), "ids are matched case-insensitively"
    assert core.events.counts["lookup", "movie", "miss"] == 1
    assert core.cache.locks == {}, "the fill lease is released after the fill"


async def test_a_missing_movie_is_not_found_and_remembered(core):
    with pytest.raises(NotFound, match=f"movie {MOVIE_ID} not found"):
        await core.service.reads.get(MOVIE_ID, soon())
    await core.settle()
    assert core.cache.entries[MOVIE_ID] == (-1, None)
    with pytest.raises(NotFound):
        await core.service.reads.get(MOVIE_ID, soon())
    assert core.store.calls["get_movie"] == 1, "the negative entry answered the second time"


@pytest.mark.parametrize("movie_id", ["", "xyz", MOVIE_ID + "\n", MOVIE_ID[:-1] + "g", " " + MOVIE_ID])
async def test_ids_that_are_not_24_hex_digits_are_invalid(core, movie_id):
    with pytest.raises(InvalidArgument) as raised:
        await core.service.reads.get(movie_id, soon())
    assert [v.field for v in raised.value.violations] == ["id"]
    assert core.cache.calls["get_movie"] == 0


async def test_concurrent_misses_share_one_store_read(core):
    core.store.add(Movie(id=MOVIE_ID, title="popular"))
    core.store.delay = 0.05
    results = await asyncio.gather(*(core.service.reads.get(MOVIE_ID, soon()) for _ in range(100)))
    assert len(set(results)) == 1
    assert core.store.calls["get_movie"] == 1
    assert core.events.counts["coalesced", "in_process"] == 99


async def test_a_caller_that_gives_up_does_not_cancel_the_others_read(core):
    core.store.add(Movie(id=MOVIE_ID, title="slow"))
    core.store.delay = 0.1
    impatient = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, soon()))
    await asyncio.sleep(0.01)
    patient = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, soon()))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert Movie.FromString(await patient).title == "slow"
    assert core.store.calls["get_movie"] == 1


async def test_the_cache_being_down_falls_back_to_the_store(core):
    stored = core.store.add(Movie(id=MOVIE_ID, title="from the store"))
    core.cache.unavailable = True
    assert await core.service.reads.get(MOVIE_ID, soon()) == stored.data
    assert core.events.counts["fallback", "Get"] == 1
    assert core.events.counts["lookup", "movie", "error"] == 1


async def test_the_store_being_down_on_a_miss_is_unavailable(core):
    core.store.failure = down()
    with pytest.raises(Unavailable, match="MongoDB is unavailable"):
        await core.service.reads.get(MOVIE_ID, soon())


async def test_a_store_slower_than_the_deadline_is_deadline_exceeded(core):
    core.store.add(Movie(id=MOVIE_ID, title="late"))
    core.store.delay = 1.0
    with pytest.raises(DeadlineExceeded):
        await core.service.reads.get(MOVIE_ID, Deadline.within(0.05))


async def test_a_deadline_already_past_reaches_no_store(core):
    with pytest.raises(DeadlineExceeded):
        await core.service.reads.get(MOVIE_ID, Deadline.within(-1))
    assert core.store.calls["get_movie"] == 0


async def test_a_fill_older_than_a_write_does_not_land(core):
    """The classic race: a slow miss reads version 1, a write of version 2
    reaches the cache (and its fence), then the miss's fill arrives."""
    core.store.add(Movie(id=MOVIE_ID, title="v1"), version=1)
    core.store.delay = 0.05
    reading = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, soon()))
    await asyncio.sleep(0.01)
    core.store.delay = 0
    written = await core.service.writes.upsert(Movie(id=MOVIE_ID, title="v2"), WRITER, soon())
    assert Movie.FromString(await reading).title == "v1"  # it read before the write
    await core.settle()
    assert core.cache.entries[MOVIE_ID] == (2, written.stored.data)
    assert Movie.FromString(await core.service.reads.get(MOVIE_ID, soon())).title == "v2"


async def test_a_hit_close_to_expiry_is_refreshed_once_in_the_background(core):
    stored = core.store.add(Movie(id=MOVIE_ID, title="hot"), version=5)
    core.cache.entries[MOVIE_ID] = (5, stored.data)
    core.cache.expiring.add(MOVIE_ID)
    core.store.delay = 0.02
    await asyncio.gather(*(core.service.reads.get(MOVIE_ID, soon()) for _ in range(20)))
    await core.settle()
    assert core.store.calls["get_movie"] == 1
    assert core.events.counts["early_refresh",] == 1


async def test_a_caller_with_more_time_reads_again_when_the_shared_read_runs_out_of_its_time(core):
    """A read another caller started is bounded by that caller's deadline."""
    core.store.add(Movie(id=MOVIE_ID, title="slow"))
    core.store.delay = 0.2
    hurried = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, Deadline.within(0.05)))
    await asyncio.sleep(0.01)
    patient = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, Deadline.within(5)))
    with pytest.raises(DeadlineExceeded):
        await hurried
    assert Movie.FromString(await patient).title == "slow"
    assert core.store.calls["get_movie"] == 2


async def test_a_fill_does_not_land_when_the_cache_lost_its_data_after_a_newer_write(core):
    """FLUSHALL between a write and an older read's fill takes the version
    fence away with everything else: the fill lease, gone too, refuses it."""
    core.store.add(Movie(id=MOVIE_ID, title="v1"), version=1)
    core.store.delay = 0.05
    reading = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, soon()))
    await asyncio.sleep(0.01)
    core.store.delay = 0
    await core.service.writes.upsert(Movie(id=MOVIE_ID, title="v2"), WRITER, soon())
    core.cache.lose_data()
    assert Movie.FromString(await reading).title == "v1"  # it read before the write
    await core.settle()
    assert MOVIE_ID not in core.cache.entries, "the old read's fill landed after the loss"
    assert Movie.FromString(await core.service.reads.get(MOVIE_ID, soon())).title == "v2"


async def test_a_caller_that_waited_in_vain_for_anothers_fill_fills_itself(core):
    core.store.add(Movie(id=MOVIE_ID, title="v1"), version=1)
    abandoned = await core.cache.lease_fill(MOVIE_ID, 2)  # another process took it and died
    assert abandoned is not None
    waiting = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, Deadline.within(5)))
    await asyncio.sleep(0.05)
    del core.cache.leases[MOVIE_ID]  # its lease expires
    assert Movie.FromString(await waiting).title == "v1"
    await core.settle()
    assert core.cache.entries[MOVIE_ID][0] == 1


async def test_fills_are_counted_applied_or_refused(core):
    core.store.add(Movie(id=MOVIE_ID, title="v1"), version=1)
    await core.service.reads.get(MOVIE_ID, soon())
    await core.settle()
    assert core.events.counts["fill", "applied"] == 1
    core.cache.entries.clear()
    core.store.delay = 0.05
    reading = asyncio.ensure_future(core.service.reads.get(MOVIE_ID, soon()))
    await asyncio.sleep(0.01)
    core.cache.lose_data()  # the lease goes with it
    await reading
    await core.settle()
    assert core.events.counts["fill", "refused"] == 1


async def test_a_read_says_how_the_cache_answered(core):
    """The outcome the servicer sends as x-cache, in the words of the lookup span."""
    stored = core.store.add(Movie(id=MOVIE_ID, title="t"), version=1)
    missed = await core.service.reads.read(MOVIE_ID, soon())
    assert (missed.outcome, missed.data) == (CacheOutcome.MISS, stored.data)
    assert missed.cache_seconds >= 0 and missed.store_seconds >= 0
    core.cache.entries[MOVIE_ID] = (1, stored.data)
    hit = await core.service.reads.read(MOVIE_ID, soon())
    assert (hit.outcome, hit.store_seconds) == (CacheOutcome.HIT, 0.0)
    core.cache.entries["0" * 24] = (0, None)
    absent = await core.service.reads.read("0" * 24, soon())
    assert (absent.outcome, absent.data) == (CacheOutcome.NEGATIVE_HIT, None)
    with pytest.raises(NotFound):
        absent.movie()
    core.cache.unavailable = True
    fallback = await core.service.reads.read(MOVIE_ID, soon())
    assert (fallback.outcome, fallback.data) == (CacheOutcome.ERROR, stored.data)
    assert {outcome.value for outcome in CacheOutcome} == {"hit", "near_hit", "negative_hit", "miss", "error"}
