"""The server process: health, reflection (grpcurl), graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from movieservice.app import App, build_app
from movieservice.devstack.processes import find_tool
from movieservice.devstack.stack import ServiceProcess, spawn
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import PROJECT_ROOT, VENV_BIN, service_env

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def server(settings, tmp_path) -> Iterator[ServiceProcess]:
    """`python cmd/server/main.py`, the thin entry point, as its own process."""
    entry_point = [sys.executable, str(PROJECT_ROOT / "cmd" / "server" / "main.py")]
    running = spawn(service_env(settings, GRACE_PERIOD_SECONDS="5"), tmp_path, argv=entry_point, name="server")
    yield running
    running.kill()


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        return (
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        )


def wait_for_health(target: str, service: str, status: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (current := health_status(target, service)) != status:
        assert time.monotonic() < deadline, f"{service or 'server'} health stayed {current}, expected {status}"
        time.sleep(0.1)


def test_health_reports_serving_for_the_service_and_each_dependency(server):
    for service in ("", "movies.v1.MovieService", "movieservice.mongodb", "movieservice.redis"):
        assert health_status(server.target, service) == SERVING, service


@pytest.mark.slow
def test_health_follows_mongodb_and_redis(grpc_target, mongo_proxy, redis_proxy):
    with mongo_proxy.refusing():
        wait_for_health(grpc_target, "", NOT_SERVING)
        assert health_status(grpc_target, "movieservice.mongodb") == NOT_SERVING
    wait_for_health(grpc_target, "", SERVING)
    with redis_proxy.refusing():
        wait_for_health(grpc_target, "movieservice.redis", NOT_SERVING)
        # The service answers every RPC from MongoDB alone: degraded, still serving.
        assert health_status(grpc_target, "") == SERVING
    wait_for_health(grpc_target, "movieservice.redis", SERVING)


def grpcurl(*args: str) -> str:
    result = subprocess.run([find_tool("grpcurl"), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_describes_and_calls_through_reflection(server, seeded_ids):
    services = grpcurl("-plaintext", server.target, "list").split()
    assert {"movies.v1.MovieService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        services
    )
    description = grpcurl("-plaintext", server.target, "describe", "movies.v1.MovieService")
    for rpc in ("Get", "Upsert", "TopRated", "Nearby"):
        assert f"rpc {rpc} (" in description
    assert "double radius_km = 3;" in grpcurl("-plaintext", server.target, "describe", "movies.v1.NearbyRequest")
    body = grpcurl("-plaintext", "-d", json.dumps({"id": seeded_ids[0]}), server.target, "movies.v1.MovieService/Get")
    assert json.loads(body)["movie"]["id"] == seeded_ids[0]


def test_sigterm_finishes_in_flight_calls_then_exits(server, seeded_ids, mongo_proxy, redis_client):
    movie_id = seeded_ids[-1]
    redis_client.delete(f"movieservice:movie:{movie_id}")
    outcome: dict[str, object] = {}

    def slow_get() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            try:
                outcome["movie"] = stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=20).movie
            except grpc.RpcError as error:
                outcome["movie"] = error

    with mongo_proxy.delaying(1.0):
        caller = threading.Thread(target=slow_get)
        caller.start()
        time.sleep(0.3)  # the call is now waiting on MongoDB
        server.process.send_signal(signal.SIGTERM)
        caller.join(timeout=20)
    assert not isinstance(outcome["movie"], grpc.RpcError), outcome["movie"]
    assert outcome["movie"].id == movie_id  # type: ignore[attr-defined]
    assert server.process.wait(timeout=20) == 0
    log = server.log.read_text()
    assert "received SIGTERM" in log and "stopped" in log
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as refused:
        movies_pb2_grpc.MovieServiceStub(channel).Get(movies_pb2.GetRequest(id=movie_id), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_busy_port_is_an_error_not_a_silent_share(server, settings, tmp_path):
    environment = service_env(settings) | {"GRPC_PORT": str(server.port)}
    result = subprocess.run(
        [str(VENV_BIN / "movieservice"), "serve"], env=environment, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode != 0
    assert b"could not listen" in result.stderr


def test_bad_configuration_is_reported_clearly(settings, tmp_path):
    environment = service_env(settings) | {"GRPC_PORT": "http"}
    result = subprocess.run(
        [str(VENV_BIN / "movieservice"), "serve"], env=environment, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"GRPC_PORT must be a number, got 'http'" in result.stderr


def test_shutdown_during_a_cache_repair_is_clean(settings, caplog, server_loop):
    """Closing the clients while the repair loop waits for MongoDB once let a
    driver error ("Cannot use MongoClient after close") kill the loop."""
    with socket.socket() as silent_mongodb:  # accepts connections, never answers
        silent_mongodb.bind(("127.0.0.1", 0))
        silent_mongodb.listen(16)
        url = f"mongodb://127.0.0.1:{silent_mongodb.getsockname()[1]}/"

        async def start_and_close() -> App:
            config = dataclasses.replace(settings, mongo_url=url, request_timeout_seconds=1.0)
            app = build_app(config, metrics=Metrics(CollectorRegistry()))
            await app.start(warm_up=False)
            app.service.repairs.wake()
            await asyncio.sleep(0.3)  # the repair loop is now inside a MongoDB call
            await app.close()
            await asyncio.sleep(0.1)  # anything left failing would log by now
            return app

        app = server_loop.run(start_and_close())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert app.service._loops and all(loop.done() for loop in app.service._loops)
