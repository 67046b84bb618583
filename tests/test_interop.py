"""Clients in other languages against the service: a Go client built on the
committed generated code in gen/go, and a Node client that loads the .proto at
run time, each calling every RPC and the main error paths over a real channel.

Each client prints one JSON object per step (tests/interop/*); the checks here
compare what it saw with what the Python client sees for the same requests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import AUTH_TOKEN, PROJECT_ROOT, serve_in_process
from tests.support.certs import Pki, make_pki, requires_openssl
from tests.support.data import has_real_data
from tests.support.go import build_go_client, requires_go
from tests.support.inprocess import ServedApp
from tests.support.proxy import FaultProxy
from tests.support.reference import all_theaters

NODE, NPM = shutil.which("node"), shutil.which("npm")
requires_node = pytest.mark.skipif(
    NODE is None or NPM is None, reason="`node` or `npm` is not installed: the Node interop client cannot run"
)

GO_GENERATED = PROJECT_ROOT / "gen" / "go"
NODE_CLIENT = PROJECT_ROOT / "tests" / "interop" / "node"
MOVIE_KEY = "movieservice:movie:{}"
STEPS = [
    "get",
    "get_not_found",
    "get_invalid",
    "upsert_unauthenticated",
    "upsert",
    "top_rated",
    "top_rated_page2",
    "nearby",
    "get_deadline",
]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@requires_go
def test_generated_go_code_is_fresh(tmp_path):
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "gen_go.sh"), str(tmp_path)], check=True, timeout=600)
    fresh, committed = files_under(tmp_path), files_under(GO_GENERATED)
    assert sorted(fresh) == sorted(committed), "generated Go files were added or removed: run scripts/gen_go.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated Go code, run scripts/gen_go.sh: {stale}"


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return build_go_client(tmp_path_factory.mktemp("interop-go"))


@pytest.fixture(scope="module")
def node_client() -> list[str]:
    """The Node client, its pinned packages installed from package-lock.json if they are missing."""
    if not (NODE_CLIENT / "node_modules").is_dir():
        result = subprocess.run(
            [str(NPM), "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return [str(NODE), str(NODE_CLIENT / "main.js")]


@dataclass
class Service:
    """The module's service and the handles a run needs."""

    stub: Any
    target: str
    redis: redis.Redis
    mongo_proxy: FaultProxy
    seeded_ids: list[str]
    nearby_point: tuple[float, float]
    # The clients' --cacert/--cert/--key when the service speaks TLS.
    tls_flags: dict[str, str] = field(default_factory=dict)


def nearby_point(mongo_url: str, database: str) -> tuple[float, float]:
    """Nearby's point: the README's (a theater in Bloomington, MN) in the real
    data, the first theater in synthetic data."""
    if has_real_data():
        return (44.85, -93.24)
    _, latitude, longitude = all_theaters(mongo_url, database)[0]
    return (latitude, longitude)


@pytest.fixture
def service(stub, grpc_target, redis_client, mongo_proxy, seeded_ids, mongo_url, seeded) -> Service:
    return Service(stub, grpc_target, redis_client, mongo_proxy, seeded_ids, nearby_point(mongo_url, seeded))


@pytest.fixture(scope="module")
def mtls_served(settings, server_loop, tmp_path_factory) -> Iterator[tuple[ServedApp, Pki]]:
    """The service over mTLS (a client certificate of the test CA required)."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    mutual = replace(
        settings,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca.cert),
    )
    running = serve_in_process(server_loop, mutual)
    yield running, pki
    running.stop()


@pytest.fixture
def mtls_service(mtls_served, redis_client, mongo_proxy, seeded_ids, mongo_url, seeded) -> Iterator[Service]:
    running, pki = mtls_served
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert.read_bytes(), pki.client.key.read_bytes(), pki.client.cert.read_bytes()
    )
    with grpc.secure_channel(running.target, credentials) as channel:
        stub = movies_pb2_grpc.MovieServiceStub(channel)  # type: ignore[no-untyped-call]
        flags = {"cacert": str(pki.ca.cert), "cert": str(pki.client.cert), "key": str(pki.client.key)}
        point = nearby_point(mongo_url, seeded)
        yield Service(stub, running.target, redis_client, mongo_proxy, seeded_ids, point, flags)


def wait_until_cached(client: redis.Redis, movie_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.exists(MOVIE_KEY.format(movie_id)):
        assert time.monotonic() < deadline, f"movie {movie_id} was never cached"
        time.sleep(0.01)


def run_client(client: list[str], service: Service, movie_id: str, slow_id: str) -> dict[str, dict[str, Any]]:
    """Run a client with MongoDB made slow (1 s per command), so that its last
    step, a Get of the uncached `slow_id` with a 200 ms deadline, must time out;
    returns its steps by name."""
    latitude, longitude = service.nearby_point
    flags = {"target": service.target, "token": AUTH_TOKEN, "id": movie_id, "slow-id": slow_id}
    flags |= {"latitude": str(latitude), "longitude": str(longitude)} | service.tls_flags
    # --name=value suits both Go's flag package and Node's parseArgs (which
    # refuses "--longitude -93.24": a value starting with a dash looks like an option).
    argv = [*client, *(f"--{name}={value}" for name, value in flags.items())]
    service.redis.delete(MOVIE_KEY.format(slow_id))
    with service.mongo_proxy.delaying(1.0):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["step"] for s in steps] == STEPS, result.stdout
    return {s["step"]: s for s in steps}


def check_interop(client: list[str], language: str, slow_id: str, service: Service) -> None:
    stub = service.stub
    # What Python sees, which also warms the cache and the indexes: only the
    # steps that must reach MongoDB (not found, Upsert, the slow Get) wait on it.
    movie_id = service.seeded_ids[0]
    movie = stub.Get(movies_pb2.GetRequest(id=movie_id)).movie
    wait_until_cached(service.redis, movie_id)
    page1 = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_size=3))
    page2 = stub.TopRated(movies_pb2.TopRatedRequest(genre="Drama", page_size=3, page_token=page1.next_page_token))
    latitude, longitude = service.nearby_point
    nearby = stub.Nearby(movies_pb2.NearbyRequest(latitude=latitude, longitude=longitude, radius_km=10))

    steps = run_client(client, service, movie_id, slow_id)

    get = steps["get"]
    assert (get["code"], get["id"], get["title"], get["year"]) == ("OK", movie_id, movie.title, movie.year)

    assert steps["get_not_found"]["code"] == "NOT_FOUND"
    assert steps["get_not_found"]["message"] == f"movie {'0' * 24} not found"

    invalid = steps["get_invalid"]
    assert invalid["code"] == "INVALID_ARGUMENT"
    assert "id" in invalid["message"]
    assert "id" in invalid["field_violations"], invalid  # google.rpc.BadRequest, decoded by the client

    assert steps["upsert_unauthenticated"]["code"] == "UNAUTHENTICATED"
    upsert = steps["upsert"]
    assert upsert["code"] == "OK" and upsert["created"] is True, upsert
    assert upsert["title"] == f"Interop from {language}" and upsert["imdb_rating"] == 7.1 and upsert["lastupdated"]
    stored = stub.Get(movies_pb2.GetRequest(id=upsert["id"])).movie  # the write, read back by Python
    assert (stored.title, stored.year, list(stored.genres)) == (upsert["title"], 2024, ["Drama"])

    top, top2 = steps["top_rated"], steps["top_rated_page2"]
    assert top["code"] == top2["code"] == "OK"
    assert top["ids"] == [m.id for m in page1.movies] and len(top["ids"]) == 3
    assert top["next_page_token"]
    assert top2["ids"] == [m.id for m in page2.movies] and len(top2["ids"]) == 3
    assert not set(top["ids"]) & set(top2["ids"]), "the second page repeats the first"

    near = steps["nearby"]
    assert near["code"] == "OK" and near["theaters"], near
    distances = [t["distance_km"] for t in near["theaters"]]
    assert distances == sorted(distances)
    assert [t["theater_id"] for t in near["theaters"]] == [t.theater.theater_id for t in nearby.theaters]
    assert distances == pytest.approx([t.distance_km for t in nearby.theaters], abs=1e-9)

    deadline = steps["get_deadline"]
    assert deadline["code"] == "DEADLINE_EXCEEDED", deadline
    assert deadline["elapsed_ms"] < 900, "the client waited for MongoDB instead of its deadline"
    # The service is not stuck afterwards.
    assert stub.Get(movies_pb2.GetRequest(id=slow_id), timeout=10).movie.id == slow_id


@pytest.mark.slow
@requires_go
def test_go_client_calls_every_rpc(go_client, service):
    check_interop(go_client, "Go", service.seeded_ids[-7], service)


@pytest.mark.slow
@requires_node
def test_node_client_calls_every_rpc(node_client, service):
    check_interop(node_client, "Node", service.seeded_ids[-8], service)


@pytest.mark.slow
@requires_openssl
@requires_go
def test_go_client_calls_every_rpc_over_mtls(go_client, mtls_service):
    check_interop(go_client, "Go", mtls_service.seeded_ids[-9], mtls_service)


@pytest.mark.slow
@requires_openssl
@requires_node
def test_node_client_calls_every_rpc_over_mtls(node_client, mtls_service):
    check_interop(node_client, "Node", mtls_service.seeded_ids[-10], mtls_service)


def refused_flags(pki: Pki) -> dict[str, dict[str, str]]:
    """TLS flags of clients that mTLS must refuse: no certificate, and one from another CA."""
    return {
        "no certificate": {"cacert": str(pki.ca.cert)},
        "another CA's certificate": {
            "cacert": str(pki.ca.cert),
            "cert": str(pki.other_client.cert),
            "key": str(pki.other_client.key),
        },
    }


@requires_openssl
@requires_go
def test_go_client_is_refused_under_mtls_without_a_certificate_of_the_ca(go_client, mtls_served, mtls_service):
    for tls_flags in refused_flags(mtls_served[1]).values():
        assert_refused(go_client, mtls_service, tls_flags)


@requires_openssl
@requires_node
def test_node_client_is_refused_under_mtls_without_a_certificate_of_the_ca(node_client, mtls_served, mtls_service):
    for tls_flags in refused_flags(mtls_served[1]).values():
        assert_refused(node_client, mtls_service, tls_flags)


def assert_refused(client: list[str], service: Service, tls_flags: dict[str, str]) -> None:
    """`client` over `tls_flags` gets no answer: its calls fail with UNAVAILABLE
    (the handshake is refused; the step with a 200 ms deadline may see that first)."""
    flags = {"target": service.target, "id": service.seeded_ids[0], "slow-id": service.seeded_ids[1]} | tls_flags
    result = subprocess.run(
        [*client, *(f"--{name}={value}" for name, value in flags.items())], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["step"] for s in steps] == STEPS, result.stdout
    assert steps[0]["code"] == "UNAVAILABLE", result.stdout
    assert {s["code"] for s in steps} <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, result.stdout
