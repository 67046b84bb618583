"""Nearby: the Redis GEO index against a brute-force haversine over all theaters."""

from __future__ import annotations

import math
import random

import pytest
import redis

from movieservice.proto.movies.v1 import movies_pb2
from tests.support.reference import all_theaters, brute_force_nearby
from tests.support.rpc import assert_invalid, rpc_error


@pytest.fixture(scope="module")
def theaters(settings):
    return all_theaters(settings.mongo_url, settings.mongo_db)


def query_points(theaters, count: int = 120) -> list[tuple[float, float, float, int]]:
    rng = random.Random(2024)
    radii = (0.5, 2, 5, 10, 25, 80, 250, 1000)
    points = []
    for index in range(count):
        if index % 2:
            _, lat, lon = rng.choice(theaters)
            lat, lon = lat + rng.uniform(-0.05, 0.05), lon + rng.uniform(-0.05, 0.05)
        else:
            lat, lon = rng.uniform(24, 50), rng.uniform(-125, -66)
        points.append((lat, lon, rng.choice(radii), rng.choice((1, 5, 10, 100))))
    return points


def test_results_match_brute_force_haversine(stub, theaters):
    checked_nonempty = 0
    for lat, lon, radius, limit in query_points(theaters):
        expected = brute_force_nearby(theaters, lat, lon, radius, limit)
        response = stub.Nearby(movies_pb2.NearbyRequest(latitude=lat, longitude=lon, radius_km=radius, limit=limit))
        got = [(t.theater.theater_id, t.distance_km) for t in response.theaters]
        assert [i for i, _ in got] == [i for i, _ in expected], (lat, lon, radius, limit)
        for (_, distance), (_, reference) in zip(got, expected, strict=True):
            assert distance == pytest.approx(reference, rel=0.005)
        checked_nonempty += bool(expected)
    assert checked_nonempty > 50, "most queries should find theaters"


def test_theaters_carry_their_address_and_location(stub, theaters):
    theater_id, lat, lon = theaters[0]
    response = stub.Nearby(movies_pb2.NearbyRequest(latitude=lat, longitude=lon, radius_km=0.1, limit=1))
    nearest = response.theaters[0]
    assert nearest.theater.theater_id == theater_id
    assert (nearest.theater.latitude, nearest.theater.longitude) == (lat, lon)
    assert nearest.theater.address.city and nearest.theater.address.state
    assert nearest.distance_km == pytest.approx(0, abs=1e-9)


def test_defaults_are_10_km_and_10_theaters(stub, theaters):
    # The densest spot: the theater with the most others within 10 km.
    lat, lon = max(((t[1], t[2]) for t in theaters), key=lambda p: len(brute_force_nearby(theaters, *p, 10, 10**6)))
    response = stub.Nearby(movies_pb2.NearbyRequest(latitude=lat, longitude=lon))
    assert [t.theater.theater_id for t in response.theaters] == [
        i for i, _ in brute_force_nearby(theaters, lat, lon, 10, 10)
    ]


def test_nothing_nearby_is_an_empty_list(stub):
    assert list(stub.Nearby(movies_pb2.NearbyRequest(latitude=-60, longitude=0, radius_km=50)).theaters) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"latitude": 90.5}, "latitude"),
        ({"latitude": -91}, "latitude"),
        ({"latitude": math.nan}, "latitude"),
        ({"longitude": 180.01}, "longitude"),
        ({"longitude": -math.inf}, "longitude"),
        ({"radius_km": -1}, "radius_km"),
        ({"radius_km": 1000.5}, "radius_km"),
        ({"radius_km": math.inf}, "radius_km"),
        ({"radius_km": math.nan}, "radius_km"),
        ({"limit": -1}, "limit"),
    ],
)
def test_invalid_requests_name_the_field(stub, request_fields, field):
    assert_invalid(rpc_error(stub.Nearby, movies_pb2.NearbyRequest(**request_fields)), field)


def test_missing_index_is_rebuilt(stub, theaters, redis_client: redis.Redis):
    _, lat, lon = theaters[5]
    request = movies_pb2.NearbyRequest(latitude=lat, longitude=lon, radius_km=50, limit=20)
    before = stub.Nearby(request)
    redis_client.delete(*redis_client.scan_iter("movieservice:geo:*"))
    assert stub.Nearby(request) == before
    assert redis_client.exists("movieservice:geo:theaters")


def test_served_from_mongodb_while_redis_is_down(stub, theaters, redis_proxy):
    _, lat, lon = theaters[9]
    request = movies_pb2.NearbyRequest(latitude=lat, longitude=lon, radius_km=100, limit=30)
    before = stub.Nearby(request)
    with redis_proxy.refusing():
        assert stub.Nearby(request, timeout=20) == before
