"""TopRated and Nearby against in-memory fakes: paging, rebuilds, fallbacks."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from movieservice.core.deadline import Deadline
from movieservice.core.errors import InvalidArgument
from movieservice.core.paging import InvalidPageToken, PageTokens
from movieservice.core.ports import TopCursor
from movieservice.core.top_rated import MAX_PAGE_BYTES, MOVIE_FRAMING_BYTES
from movieservice.core.validation import LIST_LIMITS, TEXT_LIMITS
from movieservice.proto.movies.v1.movies_pb2 import Imdb, Movie, Theater

DEADLINE = 5


def soon() -> Deadline:
    return Deadline.within(DEADLINE)


def seed_movies(core, count: int = 25) -> list[str]:
    ids = []
    for i in range(count):
        movie = Movie(id=f"{i:024x}", title=f"m{i}", genres=["Drama" if i % 2 else "Comedy"],
                      imdb=Imdb(rating=1 + i % 9, votes=10_000))  # fmt: skip
        ids.append(core.store.add(movie).movie.id)
    return ids


async def test_pages_visit_every_ranked_movie_once_best_first(core):
    seed_movies(core)
    seen, token = [], ""
    while True:
        page = await core.service.top_rated.page("", 4, token, soon())
        seen += [Movie.FromString(m).imdb.rating for m in page.movies]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 25 and seen == sorted(seen, reverse=True)


async def test_a_missing_index_is_rebuilt_once_for_concurrent_readers(core):
    seed_movies(core)
    pages = await asyncio.gather(*(core.service.top_rated.page("drama", 3, "", soon()) for _ in range(10)))
    assert len({tuple(p.movies) for p in pages}) == 1
    assert core.store.calls["movie_ratings"] == 1
    assert core.events.counts["rebuilt", "top_rated"] == 1


async def test_a_page_token_from_another_genre_or_made_up_is_invalid(core):
    seed_movies(core)
    token = (await core.service.top_rated.page("drama", 2, "", soon())).next_page_token
    for genre, bad in (("comedy", token), ("", "not-a-token"), ("", "e" * 5000)):
        with pytest.raises(InvalidArgument) as raised:
            await core.service.top_rated.page(genre, 2, bad, soon())
        assert [v.field for v in raised.value.violations] == ["page_token"]


async def test_top_rated_falls_back_to_the_store_when_the_cache_is_down(core):
    seed_movies(core)
    core.cache.unavailable = True
    page = await core.service.top_rated.page("", 3, "", soon())
    assert [Movie.FromString(m).imdb.rating for m in page.movies] == [9, 9, 8]
    assert core.events.counts["fallback", "TopRated"] == 1


async def test_nearby_builds_its_index_and_answers_nearest_first(core):
    core.store.theater_list = [Theater(theater_id=i, latitude=44.85 + i * 0.01, longitude=-93.24) for i in range(5)]
    found = await core.service.nearby.search(44.85, -93.24, 3, 10, soon())
    assert [Theater.FromString(t.data).theater_id for t in found] == [0, 1, 2]
    assert [round(t.distance_km, 3) for t in found] == [0.0, 1.112, 2.224]
    assert core.events.counts["rebuilt", "geo"] == 1


async def test_nearby_checks_its_arguments(core):
    with pytest.raises(InvalidArgument) as raised:
        await core.service.nearby.search(91, float("nan"), -1, -1, soon())
    assert {v.field for v in raised.value.violations} == {"latitude", "longitude", "radius_km", "limit"}


async def test_an_altered_or_forged_page_token_is_invalid(core):
    seed_movies(core)
    token = (await core.service.top_rated.page("", 2, "", soon())).next_page_token
    body, _, mac = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["s"] = 100.0  # skip to wherever the client likes
    altered = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=") + "." + mac
    for bad in (altered, body, body + ".", f"{body}.{'A' * len(mac)}"):
        with pytest.raises(InvalidArgument, match="not a token this service issued"):
            await core.service.top_rated.page("", 2, bad, soon())


def test_page_token_keys_rotate_one_at_a_time():
    cursor = TopCursor(score=8.5, movie_id="a" * 24)
    old, new = PageTokens(["old-key"]), PageTokens(["new-key", "old-key"])
    token = old.encode("drama", cursor)
    assert new.decode(token, "drama") == cursor  # issued before the rotation, still good
    with pytest.raises(InvalidPageToken):
        PageTokens(["new-key"]).decode(token, "drama")  # the old key retired
    with pytest.raises(InvalidPageToken):
        old.decode(new.encode("drama", cursor), "drama")  # signed with the new key only


async def test_a_page_of_large_movies_ends_before_what_a_client_accepts_and_goes_on_next_page(core):
    plot = "p" * TEXT_LIMITS["fullplot"]
    cast = ["c" * LIST_LIMITS["cast"][1]] * LIST_LIMITS["cast"][0]
    for i in range(100):
        movie = Movie(id=f"{i:024x}", title=f"m{i}", fullplot=plot, cast=cast, writers=cast, directors=cast,
                      imdb=Imdb(rating=5, votes=10_000))  # fmt: skip
        core.store.add(movie)
    seen, token, sizes = [], "", []
    while True:
        page = await core.service.top_rated.page("", 100, token, soon())
        sizes.append(sum(len(m) + MOVIE_FRAMING_BYTES for m in page.movies))
        seen += [Movie.FromString(m).id for m in page.movies]
        token = page.next_page_token
        if not token:
            break
    assert len(sizes) > 1 and max(sizes) <= MAX_PAGE_BYTES
    assert sorted(seen) == [f"{i:024x}" for i in range(100)]
