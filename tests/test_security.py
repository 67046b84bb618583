"""Writers with names, failures counted and rate-limited, bounded requests,
operational switches: each against a real server (FerretDB and Redis)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from movieservice.config import Settings
from movieservice.devstack.processes import free_port
from movieservice.grpcserver.server import MAX_REQUEST_BYTES, start_metrics_http
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from movieservice.proto.movies.v1.movies_pb2 import Movie
from tests.conftest import WRITER, serve_in_process
from tests.core.test_validation import largest_valid_movie
from tests.support.inprocess import LoopThread, ServedApp
from tests.support.proxy import FaultProxy
from tests.support.rpc import field_violations, rpc_error

WRITERS = ("ci:token-of-the-ci-job", "alice:token-of-alice")


@pytest.fixture(scope="module")
def named_writers(settings: Settings, server_loop: LoopThread) -> Iterator[ServedApp]:
    """A service with two named writers (and no AUTH_TOKEN) allowing 3 failures a minute per address."""
    running = serve_in_process(
        server_loop, replace(settings, auth_token="", auth_tokens=WRITERS, auth_failures_per_minute=3)
    )
    yield running
    running.stop()


def failures(served: ServedApp, reason: str) -> float:
    value = served.app.metrics.registry.get_sample_value("movieservice_auth_failures_total", {"reason": reason})
    assert value is not None
    return value


def test_writers_are_named_in_the_log_and_a_guessing_address_is_slowed_down(named_writers, caplog):
    stub = movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(named_writers.target))
    request = movies_pb2.UpsertRequest(movie=Movie(title="Written by Alice"))
    with caplog.at_level(logging.INFO, logger="movieservice.core.writes"):
        written = stub.Upsert(request, metadata=[("authorization", "Bearer token-of-alice")], timeout=10)
    assert f"upsert movie={written.movie.id}" in caplog.text and "writer=alice" in caplog.text
    assert "token-of-alice" not in caplog.text

    for _ in range(3):
        error = rpc_error(stub.Upsert, request, metadata=[("authorization", "Bearer guess")], timeout=10)
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
    # The allowance is spent: even the right token waits, and says for how long.
    error = rpc_error(stub.Upsert, request, metadata=[("authorization", "Bearer token-of-alice")], timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    wait = re.fullmatch(r"too many failed authentications from this address; retry in (\d+) s", error.details())
    assert wait is not None and 0 < int(wait[1]) <= 20  # one failure's allowance returns in 20 s
    assert (failures(named_writers, "invalid"), failures(named_writers, "rate_limited")) == (3, 1)
    assert failures(named_writers, "missing") == 0


def test_the_largest_valid_movie_is_written_and_read_back_whole(stub):
    movie = largest_valid_movie()
    movie.id = "65a1b2c3d4e5f60718293aff"
    movie.imdb.ClearField("rating")  # unranked: the database is shared with other modules' TopRated tests
    written = stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=WRITER, timeout=30).movie
    assert stub.Get(movies_pb2.GetRequest(id=movie.id), timeout=10).movie == written
    assert len(written.cast) == len(movie.cast) and written.fullplot == movie.fullplot


def test_a_request_larger_than_the_largest_valid_one_is_refused_unread(stub):
    movie = Movie(title="t", fullplot="x" * MAX_REQUEST_BYTES)
    error = rpc_error(stub.Upsert, movies_pb2.UpsertRequest(movie=movie), metadata=WRITER, timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.details()


def test_control_characters_are_refused_with_the_field_named(stub):
    movie = Movie(title="t", cast=["Ann", "Bob\x1b[31m"], plot="fine\n\twith tab and newline")
    error = rpc_error(stub.Upsert, movies_pb2.UpsertRequest(movie=movie), metadata=WRITER, timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {
        "movie.cast[1]": "must not contain control characters (other than tab and newline)"
    }


def test_reflection_can_be_switched_off_and_health_stays(settings, server_loop):
    running = serve_in_process(server_loop, replace(settings, reflection=False))
    try:
        channel = grpc.insecure_channel(running.target)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        error = rpc_error(lambda: list(reflection.ServerReflectionInfo(requests, timeout=10)))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop()


def test_metrics_listen_on_metrics_host_not_on_every_interface():
    settings = Settings(grpc_host="[::]", metrics_host="127.0.0.1", metrics_port=free_port())
    metrics = start_metrics_http(settings)
    assert metrics is not None
    try:
        assert metrics.server_address[0] == "127.0.0.1"
    finally:
        metrics.shutdown()
        metrics.server_close()


def test_a_deadline_longer_than_the_servers_longest_is_shortened_to_it(
    settings, server_loop, seeded_ids, mongo_proxy: FaultProxy
):
    """REQUEST_TIMEOUT_SECONDS (here 1 s) is the longest a call may hold the
    server's resources, whatever deadline the client asked for (here 120 s):
    MongoDB answering after 3 s is too late."""
    running = serve_in_process(server_loop, replace(settings, request_timeout_seconds=1.0))
    try:
        stub = movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(running.target))
        stub.Get(movies_pb2.GetRequest(id=seeded_ids[7]), timeout=10)  # connected to MongoDB
        with mongo_proxy.delaying(3.0):
            error = rpc_error(stub.Get, movies_pb2.GetRequest(id=seeded_ids[8]), timeout=120)
    finally:
        running.stop()
    # The server's own answer: the client's deadline is far away.
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.details() == "MongoDB did not answer before the deadline"
