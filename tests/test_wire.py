"""Responses assembled from cached bytes equal what protobuf would serialize (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from internal.service import wire
from movies.v1 import movies_pb2

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


@given(movie)
def test_get_response(m):
    assert movies_pb2.GetResponse.FromString(wire.get_response(m.SerializeToString())).movie == m


@given(st.lists(movie, max_size=12), st.text(max_size=80))
def test_top_rated_response(movies, token):
    parsed = movies_pb2.TopRatedResponse.FromString(
        wire.top_rated_response([m.SerializeToString() for m in movies], token)
    )
    assert list(parsed.movies) == movies and parsed.next_page_token == token


@given(st.lists(st.tuples(theater, st.floats(0, 1000)), max_size=12))
def test_nearby_response(entries):
    parsed = movies_pb2.NearbyResponse.FromString(
        wire.nearby_response([(t.SerializeToString(), km) for t, km in entries])
    )
    assert [(n.theater, n.distance_km) for n in parsed.theaters] == entries
