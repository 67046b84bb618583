"""One benchmark run: the Redis and FerretDB servers, the seeded databases, the
services and reference servers under test, and the rows measured so far.
Everything is started through the devstack harness and stopped at the end."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from movieservice.bench.load import LOAD_CORE, SERVER_CORE, Throughput, h2load
from movieservice.config import Settings
from movieservice.devstack.metrics import Samples, scrape
from movieservice.devstack.processes import (
    FerretDBProcess,
    ServerProcess,
    child_pids,
    ferretdb_server,
    free_port,
    redis_server,
)
from movieservice.devstack.stack import (
    MOVIESERVICE,
    ServiceProcess,
    has_sample_data,
    seed_database,
    service_environment,
    spawn,
)
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc

T = TypeVar("T")
TOKEN = "bench-token"
# The Great Train Robbery in the real sample data: an 881-byte GetResponse.
SAMPLE_ID = "573a1390f29313caabcd42e8"
# The database of the throughput rows: the real sample data when it is there,
# else the harness' 1,000 synthetic movies.
DATABASE = "bench"
# The Zipf, miss and stampede rows' database: synthetic movies (every Zipf row
# so far is at this size). Its misses read FerretDB by `_id`, through the
# index the devstack adds (FerretDBProcess.index_ids); before that index, each
# of them scanned the whole table.
ZIPF_DATABASE = "bench_zipf"
ZIPF_MOVIES = 5_000
ZIPF_THEATERS = 100
ZIPF_SEED = 3
# The memory-bounded Redis of the Zipf rows: LFU eviction (what the README
# recommends for such a workload) rather than LRU, with a counter that counts
# every access (lfu-log-factor 0; the default 10 hardly tells 5 accesses from
# 50) and more keys sampled per eviction. It starts unbounded (maxmemory 0);
# the Zipf rows set the bound.
ZIPF_REDIS_OPTIONS = {"maxmemory-policy": "volatile-lfu", "lfu-log-factor": "0", "maxmemory-samples": "10"}


@dataclass
class Service:
    """A process under test: a `movieservice serve` or a reference server."""

    name: str
    process: ServiceProcess

    @property
    def target(self) -> str:
        return self.process.target

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The process and its workers (WORKERS > 1)."""
        return [self.pid, *child_pids(self.pid)]

    def metrics(self) -> Samples:
        return scrape(self.process.metrics_port)


@dataclass(frozen=True)
class Row:
    name: str
    target: str
    result: str
    raw: str
    command: str


@dataclass
class Bench:
    work: Path
    requests: int
    rounds: int
    quick: bool = False
    services: dict[str, Service] = field(default_factory=dict)
    servers: list[ServerProcess] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    # Set by `start`.
    settings: Settings = field(init=False)
    redis: ServerProcess = field(init=False)
    bounded_redis: ServerProcess = field(init=False)
    mongo: FerretDBProcess = field(init=False)
    sample_id: str = field(init=False)
    zipf_ids: list[str] = field(init=False)

    def start(self) -> None:
        """Redis, FerretDB and the bounded Redis of the Zipf rows on the load
        core; the databases seeded."""
        self.redis = self._started(redis_server(self.work / "redis", cpus=LOAD_CORE))
        self.mongo = ferretdb_server(self.work / "ferretdb", cpus=LOAD_CORE).start()
        self.servers.append(self.mongo)
        options = {"maxmemory": "0", **ZIPF_REDIS_OPTIONS}
        self.bounded_redis = self._started(redis_server(self.work / "redis-bounded", cpus=LOAD_CORE, options=options))
        self.settings = Settings(
            mongo_url=f"mongodb://127.0.0.1:{self.mongo.port}/",
            redis_url=self.redis_url(self.redis),
            mongo_db=DATABASE,
            auth_token=TOKEN,
            grpc_host="127.0.0.1",
        )
        seed_database(self.settings.mongo_url, DATABASE)
        seed_database(
            self.settings.mongo_url,
            ZIPF_DATABASE,
            synthetic=ZIPF_MOVIES,
            theaters=ZIPF_THEATERS,
            random_seed=ZIPF_SEED,
        )
        self.mongo.index_ids()  # seeding created the collections
        self.sample_id = SAMPLE_ID if has_sample_data() else movie_ids(self.settings.mongo_url, DATABASE)[0]
        self.zipf_ids = movie_ids(self.settings.mongo_url, ZIPF_DATABASE)

    def _started(self, server: ServerProcess) -> ServerProcess:
        self.servers.append(server.start())
        return server

    @staticmethod
    def redis_url(server: ServerProcess) -> str:
        return f"redis://127.0.0.1:{server.port}/0"

    # Processes under test

    def serve(self, name: str, *, cpus: str = SERVER_CORE, metrics: bool = True, **env: str) -> Service:
        """A `movieservice serve` called `name` (its Redis keys prefixed with
        it, so that services do not share cached movies), configured by `env`."""
        return self._serve(name, [str(MOVIESERVICE), "serve"], cpus, metrics, env)

    def unfrozen_service(self, name: str, **env: str) -> Service:
        """As `serve`, without gc.freeze() after start-up (see ceiling.py)."""
        return self._serve(name, [sys.executable, "-m", "movieservice.bench", "unfrozen"], SERVER_CORE, True, env)

    def _serve(self, name: str, argv: list[str], cpus: str, metrics: bool, env: Mapping[str, str]) -> Service:
        environment = service_environment(
            self.settings, **{"LOG_LEVEL": "WARNING", "REDIS_KEY_PREFIX": f"{name}:", **env}
        )
        return self._add(name, spawn(environment, self.work, argv=argv, name=name, metrics=metrics, cpus=cpus))

    def service(self, name: str, *, metrics: bool = True, **env: str) -> Service:
        """The running service called `name`, started with `env` the first time."""
        return self.services.get(name) or self.serve(name, metrics=metrics, **env)

    def redis_hits_service(self) -> Service:
        """The default configuration: Redis hits (no near cache), metrics on."""
        return self.service("redis", NEAR_CACHE_SIZE="0")

    def near_cache_service(self) -> Service:
        return self.service("near", NEAR_CACHE_SIZE="100000")

    def ceiling(self, mode: str) -> Service:
        """The reference server `mode` (see ceiling.py), answering what the
        default service answers to a Get of the sample movie."""
        name = f"ceiling-{mode}"
        if name not in self.services:
            response = self.sample_response()
            self._helper(name, lambda port: ["ceiling", mode, str(port), str(response)])
        return self.services[name]

    def redis_hits_server(self, turns: int) -> Service:
        """The Redis-hit server (see ceiling.py) with `turns` auto-pipelining
        turns, reading the sample movie the default service cached."""
        name = f"redis-hits-{turns}"
        if name not in self.services:
            self.sample_response()  # the default service has cached the sample movie
            key = f"{self.redis_hits_service().name}:movie:{self.sample_id}"
            self._helper(name, lambda port: ["redis-hits", str(port), self.settings.redis_url, key, str(turns)])
        return self.services[name]

    def _helper(self, name: str, arguments: Callable[[int], list[str]]) -> Service:
        """`python -m movieservice.bench ARGUMENTS(port)` on a free port."""
        port = free_port()
        argv = [sys.executable, "-m", "movieservice.bench", *arguments(port)]
        environment = {**os.environ, "GRPC_PORT": str(port)}
        return self._add(name, spawn(environment, self.work, argv=argv, name=name, cpus=SERVER_CORE))

    def _add(self, name: str, process: ServiceProcess) -> Service:
        service = Service(name, process)
        self.services[name] = service
        return service

    def sample_response(self) -> Path:
        """The serialized GetResponse of the sample movie, as the default
        service answers it (read through it, which also caches it in Redis)."""
        path = self.work / "response.bin"
        if not path.exists():
            response = get(self.redis_hits_service(), self.sample_id)
            path.write_bytes(response.SerializeToString())
        return path

    def h2load(self, service: Service, method: str, body: Path, requests: int | None = None) -> Throughput:
        return h2load(service.target, method, body, requests or self.requests, service.pids())

    def row(self, name: str, target: str, result: str, raw: str, command: str) -> None:
        print(f"{name}: {result}  ({raw})", flush=True)
        self.rows.append(Row(name, target, result, raw, command))

    def close(self) -> None:
        for service in self.services.values():
            service.process.stop()
        for server in reversed(self.servers):
            server.stop()


def movie_service(channel: grpc.Channel) -> Any:
    """A MovieService client stub on `channel` (generated code, untyped)."""
    return movies_pb2_grpc.MovieServiceStub(channel)  # type: ignore[no-untyped-call]


_REBUILDING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def answered(call: Callable[[], T], timeout: float = 600.0) -> T:
    """`call()`, again while the service answers UNAVAILABLE or DEADLINE_EXCEEDED
    (an index still being rebuilt: a call waits for that only up to its
    deadline, and the rebuild goes on without it), for up to `timeout` s."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in _REBUILDING or time.monotonic() > give_up:
                raise
        time.sleep(0.1)


def get(service: Service, movie_id: str, timeout: float = 30) -> movies_pb2.GetResponse:
    """One Get through a real gRPC client (h2load sees HTTP statuses only)."""
    with grpc.insecure_channel(service.target) as channel:
        response: movies_pb2.GetResponse = movie_service(channel).Get(
            movies_pb2.GetRequest(id=movie_id), timeout=timeout
        )
    return response


def movie_ids(mongo_url: str, database: str) -> list[str]:
    """Every movie id in `database`, sorted."""
    from prometheus_client import CollectorRegistry

    from movieservice.metrics import Metrics
    from movieservice.store.mongo import MongoStore

    async def ids() -> list[str]:
        store = MongoStore(mongo_url, database, Metrics(CollectorRegistry()).dependencies)
        try:
            return await store.movie_ids()
        finally:
            await store.close()

    return asyncio.run(ids())


@contextmanager
def benchmark(requests: int, rounds: int, quick: bool, work: Path | None = None) -> Iterator[Bench]:
    """A started Bench, stopped after; its servers' data and logs in `work`
    (kept), or in a temporary directory (removed)."""
    with ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="movieservice-bench-")))
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(work, requests, rounds, quick)
        stack.callback(bench.close)
        bench.start()
        yield bench
