"""Whatever a client sends, it gets a status it can act on, never an exception.

Property-based (hypothesis) against a real service (Redis and FerretDB
underneath): arbitrary messages for every RPC, arbitrary bytes as request
bodies, arbitrary metadata. Every answer is one of the statuses below, and no
answer's message carries exception or driver text. The service here has its
own database and key prefix, so the arbitrary movies it accepts stay out of
the other tests' data.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movieservice.config import Settings
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import AUTH_TOKEN, serve_in_process
from tests.support.inprocess import LoopThread, ServedApp
from tests.support.rpc import field_violations, rpc_error

pytestmark = pytest.mark.slow

ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Fragments of Python, driver and framework error text.
LEAKS = ("Traceback", "Exception", "Error:", "Error(", "pymongo", "bson", "redis", "errmsg", 'File "', "line ")
METHODS = ("Get", "Upsert", "TopRated", "Nearby")
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(max_size=64)
ints = st.integers(-(2**31), 2**31 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True)


@pytest.fixture(scope="module")
def hostile_target(settings: Settings, server_loop: LoopThread) -> Iterator[str]:
    own = dataclasses.replace(settings, mongo_db="hostile_input", redis_key_prefix="hostile:")
    served: ServedApp = serve_in_process(server_loop, own)
    yield served.target
    served.stop()


@pytest.fixture(scope="module")
def channel(hostile_target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(hostile_target) as channel:
        yield channel


def answer(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def check(code: grpc.StatusCode, details: str) -> None:
    assert code in ANSWERS, (code, details)
    leaked = [fragment for fragment in LEAKS if fragment in details]
    assert not leaked, f"{code.name} {details!r} carries {leaked}"


movies = st.builds(
    movies_pb2.Movie,
    id=st.one_of(text, st.from_regex(r"\A[0-9a-f]{24}\Z")),
    title=text,
    year=ints,
    genres=st.lists(text, max_size=5),
    plot=text,
    cast=st.lists(text, max_size=5),
    directors=st.lists(text, max_size=3),
    runtime=ints,
    imdb=st.builds(movies_pb2.Imdb, rating=floats, votes=ints),
    released=st.builds(Timestamp, seconds=st.integers(-(2**62), 2**62), nanos=ints),
)
# What a client can put in a header value at all: printable ASCII.
header_values = st.from_regex(r"\A[ -~]{0,64}\Z")
tokens = st.one_of(st.none(), st.just(f"Bearer {AUTH_TOKEN}"), header_values, header_values.map("Bearer ".__add__))
page_tokens = st.one_of(
    text,
    st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.just("W" * 2000),
    st.just("WwpbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb"),
)


@EXAMPLES
@given(movie_id=text)
def test_get_any_id(channel: grpc.Channel, movie_id: str) -> None:
    stub = movies_pb2_grpc.MovieServiceStub(channel)
    check(*answer(lambda: stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10)))


@EXAMPLES
@given(movie=st.one_of(st.none(), movies), authorization=tokens)
def test_upsert_any_movie(channel: grpc.Channel, movie: movies_pb2.Movie | None, authorization: str | None) -> None:
    stub = movies_pb2_grpc.MovieServiceStub(channel)
    request = movies_pb2.UpsertRequest(movie=movie) if movie is not None else movies_pb2.UpsertRequest()
    metadata = [("authorization", authorization)] if authorization is not None else []
    check(*answer(lambda: stub.Upsert(request, metadata=metadata, timeout=10)))


@EXAMPLES
@given(genre=text, page_size=ints, page_token=page_tokens)
def test_top_rated_any_page(channel: grpc.Channel, genre: str, page_size: int, page_token: str) -> None:
    stub = movies_pb2_grpc.MovieServiceStub(channel)
    request = movies_pb2.TopRatedRequest(genre=genre, page_size=page_size, page_token=page_token)
    check(*answer(lambda: stub.TopRated(request, timeout=10)))


@EXAMPLES
@given(latitude=floats, longitude=floats, radius_km=floats, limit=ints)
def test_nearby_any_point(
    channel: grpc.Channel, latitude: float, longitude: float, radius_km: float, limit: int
) -> None:
    stub = movies_pb2_grpc.MovieServiceStub(channel)
    request = movies_pb2.NearbyRequest(latitude=latitude, longitude=longitude, radius_km=radius_km, limit=limit)
    check(*answer(lambda: stub.Nearby(request, timeout=10)))


@EXAMPLES
@given(method=st.sampled_from(METHODS), body=st.binary(max_size=512))
def test_any_bytes_as_a_request(channel: grpc.Channel, method: str, body: bytes) -> None:
    call = channel.unary_unary(f"/movies.v1.MovieService/{method}")  # bytes in, bytes out
    check(*answer(lambda: call(body, timeout=10)))


metadata_keys = st.from_regex(r"\A[a-z0-9_.-]{1,24}\Z").filter(lambda key: not key.startswith("grpc-"))
metadata = st.lists(
    st.one_of(
        st.tuples(metadata_keys.filter(lambda key: not key.endswith("-bin")), header_values),
        st.tuples(metadata_keys.map(lambda key: key.removesuffix("-bin") + "-bin"), st.binary(max_size=64)),
    ),
    max_size=6,
)


@EXAMPLES
@given(method=st.sampled_from(METHODS), pairs=metadata)
def test_any_metadata(channel: grpc.Channel, method: str, pairs: list[tuple[str, Any]]) -> None:
    stub = movies_pb2_grpc.MovieServiceStub(channel)
    requests = {
        "Get": movies_pb2.GetRequest(id="573a1390f29313caabcd42e8"),
        "Upsert": movies_pb2.UpsertRequest(movie=movies_pb2.Movie(title="Hostile", year=2000)),
        "TopRated": movies_pb2.TopRatedRequest(genre="Drama"),
        "Nearby": movies_pb2.NearbyRequest(latitude=44.85, longitude=-93.24),
    }
    rpc = getattr(stub, method)
    check(*answer(lambda: rpc(requests[method], metadata=pairs, timeout=10)))


def test_a_body_that_is_not_the_request_message_is_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/movies.v1.MovieService/Get")
    error = rpc_error(call, b"\x00", timeout=10)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "request: is not a valid Get request message"
    assert field_violations(error) == {"request": "is not a valid Get request message"}
