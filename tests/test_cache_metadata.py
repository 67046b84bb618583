"""Get tells its client how the cache answered: `x-cache` trailing metadata,
and `server-timing` when the call asks for it, on a real channel (what the web
UI shows beside each movie)."""

from __future__ import annotations

import re

import grpc
import pytest

from movieservice.grpcserver.servicer import TIMING_REQUEST
from movieservice.proto.movies.v1 import movies_pb2
from movieservice.ui import calls
from tests.support.proxy import FaultProxy

TIMING = re.compile(r"cache;dur=\d+\.\d{3}(, store;dur=\d+\.\d{3})?")


def get_with_trailers(stub, movie_id: str, *, timing: bool = True) -> tuple[grpc.StatusCode, dict[str, str]]:
    metadata = ((TIMING_REQUEST, "1"),) if timing else ()
    try:
        _, call = stub.Get.with_call(movies_pb2.GetRequest(id=movie_id), timeout=10, metadata=metadata)
        return grpc.StatusCode.OK, dict(call.trailing_metadata())
    except grpc.RpcError as error:
        return error.code(), dict(error.trailing_metadata())


def wait_for(stub, movie_id: str, outcome: str) -> dict[str, str]:
    """Fills run in the background after a miss answers: ask until it landed."""
    for _ in range(500):
        _, trailers = get_with_trailers(stub, movie_id)
        if trailers["x-cache"] == outcome:
            return trailers
    pytest.fail(f"{movie_id} never became {outcome}")


def test_a_miss_then_a_hit(stub, seeded_ids):
    movie_id = seeded_ids[5]
    code, first = get_with_trailers(stub, movie_id)
    assert code == grpc.StatusCode.OK
    assert first["x-cache"] == "miss"
    assert TIMING.fullmatch(first["server-timing"]) and "store;dur=" in first["server-timing"]
    hit = wait_for(stub, movie_id, "hit")
    # A hit reads no store, and says so.
    assert TIMING.fullmatch(hit["server-timing"]) and "store" not in hit["server-timing"]


def test_not_found_then_a_negative_hit(stub):
    movie_id = "a" * 24
    code, first = get_with_trailers(stub, movie_id)
    assert code == grpc.StatusCode.NOT_FOUND
    assert first["x-cache"] == "miss"
    trailers = wait_for(stub, movie_id, "negative_hit")
    assert TIMING.fullmatch(trailers["server-timing"])


def test_with_redis_down_the_answer_comes_from_the_store(stub, seeded_ids, redis_proxy: FaultProxy):
    with redis_proxy.refusing():
        code, trailers = get_with_trailers(stub, seeded_ids[6])
    assert code == grpc.StatusCode.OK
    assert trailers["x-cache"] == "error"
    assert "store;dur=" in trailers["server-timing"]


def test_an_invalid_id_carries_no_cache_outcome(stub):
    code, trailers = get_with_trailers(stub, "nope")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-cache" not in trailers


def test_server_timing_only_when_asked_for(stub, seeded_ids):
    """Its value is new on every call, which costs CPU on every Get: sent on request."""
    movie_id = seeded_ids[7]
    wait_for(stub, movie_id, "hit")
    code, trailers = get_with_trailers(stub, movie_id, timing=False)
    assert code == grpc.StatusCode.OK
    assert trailers["x-cache"] == "hit"
    assert "server-timing" not in trailers
    _, asked = get_with_trailers(stub, movie_id)
    assert TIMING.fullmatch(asked["server-timing"])


def test_the_ui_asks_for_server_timing_with_the_service_s_key():
    assert calls.TIMING_REQUEST == TIMING_REQUEST
