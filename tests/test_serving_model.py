"""The serving model against slow and hostile clients: calls whose request
never arrives and idle streams delay nobody, excess load is turned away at
once, and connections are bounded in age and kept alive or closed."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import grpc
import pytest

from movieservice.devstack.hostile import StalledClients, established_connections
from movieservice.devstack.stack import spawn
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import serve_in_process, service_env
from tests.support.rpc import rpc_error

pytestmark = pytest.mark.slow


def test_stalled_calls_and_idle_streams_delay_no_other_call(settings, seeded_ids, tmp_path):
    """1,000 calls that sent their headers and never their request, over 10
    connections, and 100 idle server streams: a threaded server would give
    each a thread; here every other client's calls still complete, each
    within a 2 s deadline (not a latency measurement: a server stalled by
    them would never answer; BENCHMARKS.md measures the p99)."""
    server = spawn(service_env(settings), tmp_path, name="server")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=10)  # warm: cached
            with StalledClients(server.target) as stalled:
                assert established_connections(server.port) >= 11
                for _ in range(100):
                    assert stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=2).movie.id == seeded_ids[0]
                with grpc.insecure_channel(server.target) as fresh:
                    fresh_stub = movies_pb2_grpc.MovieServiceStub(fresh)
                    page = fresh_stub.TopRated(movies_pb2.TopRatedRequest(page_size=5), timeout=2)
                    assert len(page.movies) == 5
                assert stalled.still_open == 1100, "the server did not end the stalled calls to get there"
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


def test_calls_over_the_limit_are_turned_away_at_once(settings, server_loop, seeded_ids, mongo_proxy):
    limited = serve_in_process(server_loop, replace(settings, max_concurrent_calls=4, redis_key_prefix="limited:"))
    try:
        with grpc.insecure_channel(limited.target) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=10)  # cached from here on
            with StalledClients(limited.target, calls=50, connections=2, idle_streams=5):
                # Calls still waiting for their request do not count against the limit.
                assert stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=5).movie.id == seeded_ids[0]
                with mongo_proxy.delaying(1.0):
                    busy = [stub.Get.future(movies_pb2.GetRequest(id=i), timeout=30) for i in seeded_ids[10:14]]
                    wait_for(lambda: limited.app.servicer.admission.active == 4, "four calls in their handlers")
                    error = rpc_error(stub.Get, movies_pb2.GetRequest(id=seeded_ids[0]), timeout=5)
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert error.details() == "the server is handling its limit of 4 calls; retry with backoff"
                    assert [f.result().movie.id for f in busy] == seeded_ids[10:14]
                assert stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=5).movie.id == seeded_ids[0]
    finally:
        limited.stop()


def test_connections_are_closed_gracefully_at_their_maximum_age(settings, server_loop, seeded_ids):
    aging = serve_in_process(server_loop, replace(settings, max_connection_age_seconds=1.0, grace_period_seconds=1.0))
    try:
        with grpc.insecure_channel(aging.target) as channel:
            states: list[grpc.ChannelConnectivity] = []
            lock = threading.Lock()

            def record(state: grpc.ChannelConnectivity) -> None:
                with lock:
                    states.append(state)

            channel.subscribe(record, try_to_connect=True)
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=10)
            # The server sends GOAWAY once the connection is a second old (+-10%
            # jitter): the channel leaves READY, and the next call reconnects.
            wait_for(lambda: grpc.ChannelConnectivity.IDLE in states[states.index(grpc.ChannelConnectivity.READY):]
                     if grpc.ChannelConnectivity.READY in states else False, "the connection to be closed")  # fmt: skip
            assert stub.Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=10).movie.id == seeded_ids[0]
            channel.unsubscribe(record)
    finally:
        aging.stop()


def test_a_client_that_pings_too_often_is_sent_away(settings, server_loop, seeded_ids):
    """Keepalive enforcement: pings more often than every 10 s, beyond two
    strikes, get the connection closed (GOAWAY too_many_pings)."""
    served = serve_in_process(server_loop, settings)
    try:
        options = [("grpc.keepalive_time_ms", 200), ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.max_pings_without_data", 0)]  # fmt: skip
        with grpc.insecure_channel(served.target, options=options) as channel:
            states: list[grpc.ChannelConnectivity] = []
            channel.subscribe(states.append, try_to_connect=True)
            movies_pb2_grpc.MovieServiceStub(channel).Get(movies_pb2.GetRequest(id=seeded_ids[0]), timeout=10)
            wait_for(lambda: grpc.ChannelConnectivity.READY in states and states[-1] != grpc.ChannelConnectivity.READY,
                     "the pinging connection to be closed")  # fmt: skip
            channel.unsubscribe(states.append)
    finally:
        served.stop()


def wait_for(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited too long for {what}"
        time.sleep(0.02)
