"""Responses assembled from cached bytes are exactly what protobuf would serialize (hypothesis)."""

from __future__ import annotations

from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import given
from hypothesis import strategies as st

from movieservice.grpcserver import wire
from movieservice.proto.movies.v1 import movies_pb2

movie = st.builds(
    movies_pb2.Movie,
    id=st.text(max_size=30),
    title=st.text(max_size=300),
    year=st.integers(0, 3000),
    cast=st.lists(st.text(max_size=40), max_size=30),
)
theater = st.builds(
    movies_pb2.Theater,
    theater_id=st.integers(0, 2**31 - 1),
    latitude=st.floats(-90, 90),
    longitude=st.floats(-180, 180),
)


@given(st.integers(0, 2**64 - 1))
def test_varint(value):
    assert wire.varint(value) == _VarintBytes(value)


@given(movie)
def test_get_response(m):
    assert wire.get_response(m.SerializeToString()) == movies_pb2.GetResponse(movie=m).SerializeToString()


def test_a_movie_longer_than_two_varint_bytes():
    m = movies_pb2.Movie(id="x", fullplot="p" * 20_000)
    assert wire.get_response(m.SerializeToString()) == movies_pb2.GetResponse(movie=m).SerializeToString()


@given(st.lists(movie, max_size=12), st.text(max_size=80))
def test_top_rated_response(movies, token):
    expected = movies_pb2.TopRatedResponse(movies=movies, next_page_token=token).SerializeToString()
    assert wire.top_rated_response([m.SerializeToString() for m in movies], token) == expected


@given(st.lists(st.tuples(theater, st.floats(0, 1000)), max_size=12))
def test_nearby_response(entries):
    expected = movies_pb2.NearbyResponse(
        theaters=[movies_pb2.NearbyTheater(theater=t, distance_km=km) for t, km in entries]
    ).SerializeToString()
    assert wire.nearby_response([(t.SerializeToString(), km) for t, km in entries]) == expected
