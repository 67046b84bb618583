"""Real servers for the whole test session: redis-server and FerretDB on free
loopback ports, each behind a fault-injecting proxy, stopped at the end.

The store is seeded once with the real sample data (or, where it is absent,
with synthetic data in the same schema). Each test module gets a fresh
service over an empty cache, served by grpc.aio in this process (see
tests/support/inprocess.py) and called with pytest-grpc's channel and stub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from prometheus_client import CollectorRegistry

from movieservice.app import App, build_app
from movieservice.config import Settings
from movieservice.core.ports import DependencyError
from movieservice.devstack.cluster import RedisClusterProcesses, redis_cluster
from movieservice.devstack.processes import FerretDBProcess, ServerProcess, ferretdb_server, redis_server
from movieservice.devstack.stack import seed_database, service_environment
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1 import movies_pb2_grpc
from tests.support.inprocess import LoopThread, ServedApp
from tests.support.proxy import FaultProxy, MongoWireTap

TEST_DB = "sample_mflix_test"
AUTH_TOKEN = "test-token"
WRITER = (("authorization", f"Bearer {AUTH_TOKEN}"),)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = redis_server(tmp_path_factory.mktemp("redis")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def redis_cluster_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A Redis Cluster for the session: 3 masters with a replica each."""
    cluster = redis_cluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mongo_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDBProcess]:
    process = ferretdb_server(tmp_path_factory.mktemp("ferretdb")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def mongo_proxy(mongo_process: ServerProcess) -> Iterator[FaultProxy]:
    """The service's way to MongoDB; `mongo_proxy.tap` counts the commands it sends."""
    proxy = FaultProxy(mongo_process.port, tap=MongoWireTap())
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def redis_proxy(redis_process: ServerProcess) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_process.port)
    yield proxy
    proxy.close()


@pytest.fixture(autouse=True)
def _proxies_forward(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did to a proxy, the next test starts with it forwarding
    and with the module's service past its circuit breakers again."""
    yield
    touched = [name for name in ("mongo_proxy", "redis_proxy") if name in request.fixturenames]
    for name in touched:
        request.getfixturevalue(name).forward()
    if touched and "served" in request.fixturenames:
        wait_until_recovered(request.getfixturevalue("served"))


def wait_until_recovered(served: ServedApp, timeout: float = 15.0) -> None:
    async def healthy() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await served.app.store.ping(1.0)
                await served.app.cache.ping()
                return
            except DependencyError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    served.run(healthy())


@pytest.fixture(scope="session")
def mongo_url(mongo_process: ServerProcess) -> str:
    """Direct (not proxied) URL of the session's FerretDB."""
    return f"mongodb://127.0.0.1:{mongo_process.port}/"


@pytest.fixture(scope="session")
def seeded(mongo_url: str, mongo_process: FerretDBProcess) -> str:
    """Seed the session's database once (the real sample data, or synthetic
    movies where it is absent); returns the database name."""
    seed_database(mongo_url, TEST_DB)
    mongo_process.index_ids()
    return TEST_DB


@pytest.fixture(scope="session")
def settings(seeded: str, mongo_proxy: FaultProxy, redis_proxy: FaultProxy) -> Settings:
    """Settings of a service that reaches both servers through the fault proxies."""
    return Settings(
        mongo_url=f"mongodb://{mongo_proxy.url_host}/",
        mongo_db=seeded,
        redis_url=f"redis://{redis_proxy.url_host}/0",
        grpc_host="127.0.0.1",
        grpc_port=0,
        auth_token=AUTH_TOKEN,
        request_timeout_seconds=5.0,
        grace_period_seconds=5.0,
    )


@pytest.fixture(scope="session")
def redis_client(redis_process: ServerProcess) -> Iterator[redis.Redis]:
    """A direct client, for tests that inspect or reset the cache."""
    client = redis.Redis(port=redis_process.port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def server_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


def serve_in_process(loop: LoopThread, settings: Settings, **components: object) -> ServedApp:
    """`settings`' service (with its own metrics registry) served on `loop`."""
    return ServedApp(loop, lambda: build_app(settings, metrics=Metrics(CollectorRegistry()), **components))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def served(settings: Settings, redis_process: ServerProcess, server_loop: LoopThread) -> Iterator[ServedApp]:
    """A fresh service for each test module, over an empty cache."""
    redis.Redis(port=redis_process.port).flushall()
    running = serve_in_process(server_loop, settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def app(served: ServedApp) -> App:
    return served.app


# pytest-grpc: its channel and stub fixtures, pointed at the module's service.
@pytest.fixture(scope="module")
def grpc_addr(served: ServedApp) -> str:
    return served.target


@pytest.fixture(scope="module")
def grpc_server(served: ServedApp) -> grpc.aio.Server:
    return served.server


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type:
    return movies_pb2_grpc.MovieServiceStub


@pytest.fixture(scope="module")
def stub(grpc_stub: movies_pb2_grpc.MovieServiceStub) -> movies_pb2_grpc.MovieServiceStub:
    return grpc_stub


@pytest.fixture(scope="module")
def grpc_target(served: ServedApp) -> str:
    """Address of the module's running server (for grpcurl and raw channels)."""
    return served.target


def service_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """Environment for a `movieservice` subprocess configured like `settings`."""
    return service_environment(settings, **overrides)


@pytest.fixture(scope="session")
def seeded_ids(seeded: str, mongo_url: str) -> list[str]:
    """Ids of the seeded movies, sorted (read directly from the store's database)."""
    import pymongo

    with pymongo.MongoClient(mongo_url) as client:
        return sorted(str(doc["_id"]) for doc in client[seeded].movies.find({}, {"_id": 1}))
