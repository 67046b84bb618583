"""Every text and list of an Upsert's movie is bounded, in bytes and entries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from movieservice.core.validation import (
    LIST_LIMITS,
    MAX_MOVIE_BYTES,
    OUTPUT_TEXT_LIMITS,
    TEXT_LIMITS,
    check_upsert,
)
from movieservice.proto.movies.v1.movies_pb2 import Movie

TEXTS = TEXT_LIMITS | OUTPUT_TEXT_LIMITS


def movie_with(path: str, value: str) -> Movie:
    movie = Movie(title="t")
    *parents, name = path.split(".")
    owner = movie
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, name, value)
    return movie


def largest_valid_movie() -> Movie:
    movie = Movie(id="a" * 24)
    for path, limit in TEXTS.items():
        movie.MergeFrom(movie_with(path, "é" * (limit // 2)))  # two bytes each
    for name, (entries, limit) in LIST_LIMITS.items():
        getattr(movie, name).extend(["x" * limit] * entries)
    movie.imdb.rating, movie.imdb.votes, movie.imdb.id = 9.9, 2**31 - 1, 2**31 - 1
    movie.year, movie.runtime, movie.metacritic, movie.num_mflix_comments = 2000, 100_000, 100, 2**31 - 1
    movie.released.seconds = -(2**35)
    movie.awards.wins = movie.awards.nominations = 100_000
    for rating in (movie.tomatoes.viewer, movie.tomatoes.critic):
        rating.rating, rating.num_reviews, rating.meter = 4.5, 2**31 - 1, 100
    movie.tomatoes.fresh = movie.tomatoes.rotten = 2**31 - 1
    movie.tomatoes.dvd.seconds = movie.tomatoes.last_updated.seconds = -(2**35)
    return movie


@pytest.mark.parametrize("path", sorted(TEXTS))
def test_each_text_is_bounded_in_bytes(path):
    limit = TEXTS[path]
    assert check_upsert(movie_with(path, "x" * limit)) == []
    # Under the limit in characters, over it in bytes.
    [problem] = check_upsert(movie_with(path, "é" * (limit // 2 + 1)))
    assert (problem.field, problem.description) == (f"movie.{path}", f"must be at most {limit} bytes (UTF-8)")


@pytest.mark.parametrize("name", sorted(LIST_LIMITS))
def test_each_list_is_bounded_in_entries_and_bytes_per_entry(name):
    entries, limit = LIST_LIMITS[name]
    movie = Movie(title="t")
    getattr(movie, name).extend(["x" * limit] * entries)
    assert check_upsert(movie) == []
    getattr(movie, name).append("x")
    assert [(p.field, p.description) for p in check_upsert(movie)] == [
        (f"movie.{name}", f"must have at most {entries} entries")
    ]
    movie = Movie(title="t")
    getattr(movie, name).extend(["ok", "x" * (limit + 1)])
    assert [p.field for p in check_upsert(movie)] == [f"movie.{name}[1]"]


@pytest.mark.parametrize("character", ["\x00", "\x07", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters_are_refused_in_every_text(character):
    for path in TEXTS:
        [problem] = check_upsert(movie_with(path, f"a{character}b"))
        assert problem.field == f"movie.{path}" and "control characters" in problem.description
    [problem] = check_upsert(Movie(title="t", cast=["a", f"b{character}"]))
    assert problem.field == "movie.cast[1]"


def test_tab_and_newline_are_text():
    assert check_upsert(Movie(title="t", plot="line one\n\tline two", cast=["a\tb"])) == []


def test_the_largest_valid_movie_fits_the_bound_the_server_enforces():
    movie = largest_valid_movie()
    assert check_upsert(movie) == []
    assert len(movie.SerializeToString()) <= MAX_MOVIE_BYTES


def test_the_readme_limits_table_is_the_code():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("### Limits") : readme.index("### How TopRated ranks")]
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| (.+?) \|$", table, re.MULTILINE))
    for path, limit in TEXT_LIMITS.items():
        assert rows.pop(path) == f"{limit} bytes", path
    for name, (entries, limit) in LIST_LIMITS.items():
        assert rows.pop(name).startswith(f"{entries} entries of {limit} bytes"), name
    assert rows == {}, f"README lists limits the code does not have: {rows}"
    output = ", ".join(f"`{name}`" for name in OUTPUT_TEXT_LIMITS)
    assert f"| {output} (output only) | {', '.join(map(str, OUTPUT_TEXT_LIMITS.values()))} bytes |" in table
    assert f"under\n{MAX_MOVIE_BYTES // 1024 + 1} KiB" in table
