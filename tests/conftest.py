"""Real servers for the whole test session: redis-server and FerretDB on free
loopback ports, each behind a fault-injecting proxy, stopped at the end.

The store is seeded once with the real sample data (or, where it is absent,
with synthetic data in the same schema).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redis

from movieservice.config import Settings
from movieservice.devstack.processes import FerretDBProcess, ServerProcess, ferretdb_server, redis_server
from movieservice.proto.movies.v1 import movies_pb2_grpc
from movieservice.server import App, build_app, register
from movieservice.service.ports import DependencyError
from movieservice.store import seed, synthetic
from movieservice.store.mongo import MOVIES, THEATERS, MongoStore
from tests.support.data import MFLIX_DIR, has_real_data
from tests.support.proxy import FaultProxy, MongoWireTap

TEST_DB = "sample_mflix_test"
AUTH_TOKEN = "test-token"
WRITER = (("authorization", f"Bearer {AUTH_TOKEN}"),)


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = redis_server(tmp_path_factory.mktemp("redis")).start()
    yield process
    process.stop()


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
    if touched and "app" in request.fixturenames:
        wait_until_recovered(request.getfixturevalue("app"))


def wait_until_recovered(application: App, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            application.store.ping(1.0)
            application.cache.ping()
            return
        except DependencyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def mongo_url(mongo_process: ServerProcess) -> str:
    """Direct (not proxied) URL of the session's FerretDB."""
    return f"mongodb://127.0.0.1:{mongo_process.port}/"


@pytest.fixture(scope="session")
def seeded(mongo_url: str, mongo_process: FerretDBProcess) -> str:
    """Seed the session's database once; returns the database name."""
    store = MongoStore(mongo_url, TEST_DB)
    try:
        if has_real_data():
            for collection in (MOVIES, THEATERS):
                seed.load(store, collection, seed.read_file(MFLIX_DIR / f"{collection}.jsonl.gz"))
        else:
            seed.load(store, MOVIES, seed.parse_documents(synthetic.movie_lines(1000)))
            seed.load(store, THEATERS, seed.parse_documents(synthetic.theater_lines(1564)))
        store.ensure_indexes()
    finally:
        store.close()
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


@pytest.fixture(scope="module")
def app(settings: Settings, redis_process: ServerProcess) -> Iterator[App]:
    """A fresh service for each test module, over an empty cache."""
    redis.Redis(port=redis_process.port).flushall()
    application = build_app(settings)
    application.start()
    yield application
    application.close()


# pytest-grpc: an in-process server per test module with the service's own registration.
@pytest.fixture(scope="module")
def grpc_servicer(app: App) -> App:
    return app


@pytest.fixture(scope="module")
def grpc_add_to_server() -> object:
    return lambda application, server: register(server, application)


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type:
    return movies_pb2_grpc.MovieServiceStub


@pytest.fixture(scope="module")
def stub(grpc_stub: movies_pb2_grpc.MovieServiceStub) -> movies_pb2_grpc.MovieServiceStub:
    return grpc_stub


@pytest.fixture(scope="module")
def grpc_target(grpc_addr: str, grpc_server: grpc.Server) -> str:
    """Address of the module's running server (for grpcurl and raw channels)."""
    return grpc_addr


def service_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """Environment for a `movieservice` subprocess configured like `settings`."""
    values = replace(settings, **{k: v for k, v in overrides.items() if hasattr(settings, k)})  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "REDIS", "GRPC", "AUTH"))}
    env.update(
        MONGO_URL=values.mongo_url,
        MONGO_DB=values.mongo_db,
        REDIS_URL=values.redis_url,
        GRPC_HOST=values.grpc_host,
        AUTH_TOKEN=values.auth_token,
        METRICS_PORT="0",
        LOG_LEVEL="INFO",
    )
    return env


PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"


@pytest.fixture(scope="session")
def seeded_ids(seeded: str, mongo_url: str) -> list[str]:
    """Ids of the seeded movies, sorted (read directly from the store's database)."""
    import pymongo

    with pymongo.MongoClient(mongo_url) as client:
        return sorted(str(doc["_id"]) for doc in client[seeded].movies.find({}, {"_id": 1}))
