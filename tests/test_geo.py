"""Nearby's distance and ordering, against the independent reference formula (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from movieservice.core.geo import distances_km
from movieservice.core.nearby import nearest
from movieservice.core.ports import TheaterCandidate
from tests.support.reference import haversine_km

latitudes = st.floats(-90, 90)
longitudes = st.floats(-180, 180)
points = st.lists(st.tuples(latitudes, longitudes), max_size=30)


@given(latitudes, longitudes, points)
def test_distances_agree_with_the_reference(latitude, longitude, destinations):
    got = distances_km(latitude, longitude, destinations)
    assert got == [pytest.approx(haversine_km(latitude, longitude, *p), abs=1e-6) for p in destinations]


@given(latitudes, longitudes, points, st.floats(0, 20_000), st.integers(1, 30))
def test_nearest_is_the_closest_within_the_radius_in_order(latitude, longitude, destinations, radius, limit):
    theaters = [TheaterCandidate(i, lat, lon, str(i).encode()) for i, (lat, lon) in enumerate(destinations)]
    expected = sorted((d, i) for i, d in enumerate(distances_km(latitude, longitude, destinations)) if d <= radius)[
        :limit
    ]
    got = nearest(theaters, latitude, longitude, radius, limit)
    assert got == [(str(i).encode(), d) for d, i in expected]
