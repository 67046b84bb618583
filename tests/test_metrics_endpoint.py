"""/metrics of a real server process: one worker, then WORKERS=2 summed by the
supervisor (prometheus-client multiprocess mode), worker restarts, JSON logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import grpc
import pytest

from movieservice.devstack.metrics import scrape
from movieservice.devstack.processes import child_pids, free_port, wait_for_port
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.support.serving import service_environment, spawn_movieservice, start_serving, stop


def handled(samples, method: str, code: str) -> float:
    labels = (("grpc_code", code), ("grpc_method", method), ("grpc_service", "movies.v1.MovieService"),
              ("grpc_type", "unary"))  # fmt: skip
    return samples.get(("grpc_server_handled_total", labels), 0.0)


def calls(port: int, ids: list[str], connections: int = 1) -> None:
    """5 hits/misses per id list, then NOT_FOUND and INVALID_ARGUMENT, spread over `connections`."""
    for _ in range(connections):
        # A connection per channel: with WORKERS > 1 the kernel spreads them over the workers.
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            for movie_id in ids:
                stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10)
            for bad in ("0" * 24, "xyz"):
                with contextlib.suppress(grpc.RpcError):
                    stub.Get(movies_pb2.GetRequest(id=bad), timeout=10)


def eventually(read, settle: float = 3.0) -> float:
    """What `read()` says after `settle` seconds: long enough for every worker's flush."""
    deadline = time.monotonic() + settle
    value = read()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        value = read()
    return value


def test_one_worker_serves_grpc_and_cache_metrics(settings, seeded_ids, tmp_path):
    process, grpc_port, metrics_port, _ = start_serving(settings, tmp_path)
    try:
        calls(grpc_port, seeded_ids[:5])
        calls(grpc_port, seeded_ids[:5])
        samples = scrape(metrics_port)
        assert handled(samples, "Get", "OK") == 10
        assert handled(samples, "Get", "NOT_FOUND") == 2
        assert handled(samples, "Get", "INVALID_ARGUMENT") == 2
        lookups = {dict(labels)["result"]: value for (name, labels), value in samples.items()
                   if name == "movieservice_cache_lookups_total" and dict(labels)["cache"] == "movie"}  # fmt: skip
        assert lookups["hit"] + lookups["miss"] + lookups["negative_hit"] == 12
        assert lookups["hit"] >= 5, "the second round is served from Redis"
        assert any(name == "movieservice_dependency_seconds_count" for name, _ in samples)
        assert samples[("movieservice_circuit_breaker_state", (("dependency", "redis"),))] == 0
    finally:
        assert stop(process) == 0


@pytest.mark.slow
def test_two_workers_one_metrics_endpoint_summed_across_restarts(settings, seeded_ids, tmp_path):
    process, grpc_port, metrics_port, log = start_serving(settings, tmp_path, WORKERS="2")
    try:
        workers = child_pids(process.pid)
        assert len(workers) == 2, log.read_text()
        calls(grpc_port, seeded_ids[:5], connections=8)
        # Workers add their counts to the summed files every second (METRICS_FLUSH_SECONDS).
        assert eventually(lambda: handled(scrape(metrics_port), "Get", "OK")) == 40

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(child_pids(process.pid) - {victim}) < 2:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.1)
        wait_for_port(grpc_port, 10)
        calls(grpc_port, seeded_ids[:5], connections=8)
        # The dead worker's counts stay in the sum.
        assert eventually(lambda: handled(scrape(metrics_port), "Get", "OK")) == 80
        assert "died with status -9: restarting it" in log.read_text()
    finally:
        assert stop(process) == 0, log.read_text()
    assert not child_pids(process.pid)


@pytest.mark.slow
def test_two_workers_stopped_while_starting_exit_cleanly(settings, tmp_path):
    """SIGTERM as soon as the workers are forked, before they serve (an
    orchestrator scaling down a pod that just started): exit status 0."""
    environment = service_environment(settings) | {"WORKERS": "2", "METRICS_PORT": "0"}
    log = tmp_path / "server.log"
    process = spawn_movieservice(["serve"], environment, tmp_path, log)
    deadline = time.monotonic() + 20
    while "worker 1 started" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    assert "serving movies.v1.MovieService" not in log.read_text(), "the workers were meant to be still starting"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()
    assert not child_pids(process.pid)


@pytest.mark.slow
def test_json_logs_never_show_a_password(settings, tmp_path):
    secret_url = f"mongodb://admin:hunter2secret@127.0.0.1:{free_port()}/"
    process, _, _, log = start_serving(settings, tmp_path, LOG_FORMAT="json", MONGO_URL=secret_url)
    time.sleep(3)  # let the health checks fail against the unreachable MongoDB
    assert stop(process) == 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any("admin:***@" in entry["message"] for entry in entries)
    assert "hunter2secret" not in log.read_text()
