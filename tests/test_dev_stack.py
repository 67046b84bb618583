"""`movieservice dev` (what `make run` runs): local Redis and FerretDB, sample data, the server, clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import grpc

from movieservice.devstack.processes import free_port, wait_for_port
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.support.data import has_real_data, read_raw
from tests.support.ferretdb import id_lookup_plans
from tests.support.serving import spawn_movieservice


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def started_ports(log_text: str) -> tuple[int, int]:
    """The ports of the FerretDB and redis-server that `movieservice dev` says it started."""
    mongo = re.search(r"started FerretDB at mongodb://127.0.0.1:(\d+)/", log_text)
    redis = re.search(r"started redis-server at redis://127.0.0.1:(\d+)/0", log_text)
    assert mongo and redis, log_text
    return int(mongo.group(1)), int(redis.group(1))


def test_dev_starts_everything_serves_sample_data_and_stops_it_all(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "REDIS", "AUTH", "GRPC"))}
    env |= {"GRPC_PORT": str(port), "METRICS_PORT": "0"}
    log = tmp_path / "dev.log"
    process = spawn_movieservice(["dev", "--data-dir", str(tmp_path / "data")], env, tmp_path, log)
    try:
        wait_for_port(port, 120, process)  # type: ignore[arg-type]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            top = stub.TopRated(movies_pb2.TopRatedRequest(page_size=5), timeout=30).movies
            assert len(top) == 5
            if has_real_data():
                first = read_raw("movies")[0]
                assert stub.Get(movies_pb2.GetRequest(id=first["_id"]["$oid"])).movie.title == first["title"]
            created = stub.Upsert(
                movies_pb2.UpsertRequest(movie=movies_pb2.Movie(title="Made in dev")),
                metadata=(("authorization", "Bearer dev-token"),),
            )
            assert created.created
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    mongo_port, redis_port = started_ports(text)
    assert not port_open(mongo_port) and not port_open(redis_port) and not port_open(port)
    assert (tmp_path / "data" / "ferretdb").is_dir(), "local data lives under --data-dir"
    plans = id_lookup_plans(tmp_path / "data" / "ferretdb", "sample_mflix")
    assert all("USING INDEX" in plans[name] for name in ("movies", "theaters")), plans


def test_dev_with_nothing_to_seed_from_says_so_and_stops_what_it_started(tmp_path: Path):
    empty = tmp_path / "no-exports"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "REDIS", "AUTH", "GRPC"))}
    env |= {"GRPC_PORT": str(free_port()), "METRICS_PORT": "0"}
    log = tmp_path / "dev.log"
    process = spawn_movieservice(
        ["dev", "--data-dir", str(tmp_path / "data"), "--seed-from", str(empty)], env, tmp_path, log
    )
    assert process.wait(timeout=120) == 1, log.read_text()
    text = log.read_text()
    assert f"no movies or theaters export found in {empty}" in text
    assert "seeding the local store failed" in text
    mongo_port, redis_port = started_ports(text)
    assert not port_open(mongo_port) and not port_open(redis_port)
