"""One harness for everything that runs the service locally: `movieservice
dev` (the README's run command), the tests, the benchmark and the load tests
start their Redis, FerretDB, sample data and service processes here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from movieservice.config import TLS_FILE_SETTINGS, Settings
from movieservice.devstack.cluster import redis_cluster
from movieservice.devstack.processes import (
    PROJECT_ROOT,
    FerretDBProcess,
    ferretdb_server,
    free_port,
    redis_server,
    wait_for_port,
)

log = logging.getLogger(__name__)

# The real sample data beside the project, where this workplace keeps it.
SHARED_SAMPLE_DATA = PROJECT_ROOT.parent / "shared" / "data" / "mflix"
# What a store is seeded with when the real data is not there.
DEFAULT_SYNTHETIC_MOVIES = 1000
MOVIESERVICE = PROJECT_ROOT / ".venv" / "bin" / "movieservice"


def has_sample_data() -> bool:
    return (SHARED_SAMPLE_DATA / "movies.jsonl.gz").is_file()


def seed_database(
    mongo_url: str,
    database: str,
    *,
    source: Path | None = None,
    synthetic: int | None = None,
    theaters: int | None = None,
    random_seed: int = 1,
    replace: bool = False,
) -> None:
    """Seed `database` (see store.seed.seed); with neither `source` nor
    `synthetic`, the real sample data when it is there, else synthetic movies.
    Raises store.seed.NoExports."""
    from prometheus_client import CollectorRegistry

    from movieservice.metrics import Metrics
    from movieservice.store import seed

    if source is None and synthetic is None:
        source, synthetic = (SHARED_SAMPLE_DATA, None) if has_sample_data() else (None, DEFAULT_SYNTHETIC_MOVIES)

    async def run() -> None:
        from movieservice.store.mongo import MongoStore

        store = MongoStore(mongo_url, database, Metrics(CollectorRegistry()).dependencies)
        try:
            await seed.seed(
                store, source=source, synthetic=synthetic, theaters=theaters, random_seed=random_seed, replace=replace
            )
        finally:
            await store.close()

    asyncio.run(run())


def database_is_empty(mongo_url: str, database: str) -> bool:
    from prometheus_client import CollectorRegistry

    from movieservice.metrics import Metrics
    from movieservice.store.mongo import MOVIES, MongoStore

    async def count() -> int:
        store = MongoStore(mongo_url, database, Metrics(CollectorRegistry()).dependencies)
        try:
            return await store.count(MOVIES)
        finally:
            await store.close()

    return asyncio.run(count()) == 0


def clear_cache(settings: Settings) -> None:
    """Seeding changes documents behind the cache's back: drop what it holds."""
    from prometheus_client import CollectorRegistry

    from movieservice.app import redis_cache
    from movieservice.config import redact_url
    from movieservice.core.ports import CacheUnavailable
    from movieservice.metrics import Metrics

    async def run() -> None:
        cache = redis_cache(settings, Metrics(CollectorRegistry()))
        try:
            log.info("cleared %d cache keys in %s", await cache.clear(), redact_url(settings.redis_url))
        except CacheUnavailable as error:
            log.warning("could not clear the cache (%s); cached copies expire after MOVIE_TTL_SECONDS", error)
        finally:
            await cache.close()

    asyncio.run(run())


@contextmanager
def local_dependencies(
    settings: Settings,
    data_dir: Path,
    explicit: set[str] = frozenset(),  # type: ignore[assignment]
    source: Path | None = None,
    synthetic: int | None = None,
    cpus: str | None = None,
) -> Iterator[Settings]:
    """Start FerretDB and redis-server under `data_dir` (each unless its URL is
    in `explicit`, the settings given explicitly), seed the store when it has no
    movies or when asked to (`source`, `synthetic`), yield the settings pointing
    at them, and stop them after. `cpus` pins them (taskset), for the benchmark."""
    with ExitStack() as servers:
        mongo: FerretDBProcess | None = None
        if "MONGO_URL" not in explicit:
            mongo = ferretdb_server(data_dir / "ferretdb", cpus=cpus).start()
            servers.callback(mongo.stop)
            settings = replace(settings, mongo_url=f"mongodb://127.0.0.1:{mongo.port}/")
            log.info("started FerretDB at %s (data in %s)", settings.mongo_url, data_dir / "ferretdb")
        if not {"REDIS_URL", "REDIS_HOST"} & explicit and settings.redis_cluster:
            cluster = redis_cluster(data_dir / "redis-cluster").start()
            servers.callback(cluster.stop)
            settings = replace(settings, redis_url=cluster.url)
            log.info("started a Redis Cluster (3 masters, a replica each) at %s", settings.redis_url)
        elif not {"REDIS_URL", "REDIS_HOST"} & explicit:
            cache = redis_server(data_dir / "redis", cpus=cpus).start()
            servers.callback(cache.stop)
            settings = replace(settings, redis_url=f"redis://127.0.0.1:{cache.port}/0")
            log.info("started redis-server at %s", settings.redis_url)
        if source is not None or synthetic is not None or database_is_empty(settings.mongo_url, settings.mongo_db):
            seed_database(settings.mongo_url, settings.mongo_db, source=source, synthetic=synthetic)
            clear_cache(settings)
        if mongo is not None:
            mongo.index_ids()  # seeding may have created the collections
        yield settings


# Service processes


def service_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a `movieservice serve` configured like `settings`
    (the caller's own MONGO*/REDIS*/GRPC*/AUTH*/METRICS*/TLS* variables left out)."""
    prefixes = ("MONGO", "REDIS", "GRPC", "AUTH", "METRICS", "TLS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        MONGO_URL=settings.mongo_url,
        MONGO_DB=settings.mongo_db,
        REDIS_URL=settings.redis_url,
        GRPC_HOST=settings.grpc_host,
        AUTH_TOKEN=settings.auth_token,
        METRICS_PORT="0",
        LOG_LEVEL="INFO",
    )
    if settings.redis_cluster:
        env["REDIS_CLUSTER"] = "1"
    env.update({name.upper(): value for name in TLS_FILE_SETTINGS if (value := getattr(settings, name))})
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    """A running `movieservice` (or other server) process and its ports."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful drain), then the exit status; killed if it takes longer than `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_for_http2(target: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Until a plaintext gRPC server at `target` has started serving: its port
    accepts connections as soon as it is bound, before the server has started,
    and a call made then waits for the start (or fails if the process is told
    to stop meanwhile). A channel is ready once the server answers HTTP/2."""
    import grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        ready = grpc.channel_ready_future(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode} before serving on {target}")
            try:
                ready.result(timeout=0.2)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{target} did not start serving within {timeout}s") from None


def spawn(
    env: Mapping[str, str],
    directory: Path,
    *,
    argv: Sequence[str] = (str(MOVIESERVICE), "serve"),
    name: str = "service",
    metrics: bool = False,
    cpus: str | None = None,
    wait: bool = True,
) -> ServiceProcess:
    """Start `argv` (by default `movieservice serve`) in `directory` with `env`
    on a free GRPC_PORT (and METRICS_PORT with `metrics`), its output in
    `directory/<name>-<port>.log`; with `wait`, return once the ports accept
    connections (RuntimeError if it exits first)."""
    port = int(env["GRPC_PORT"]) if "GRPC_PORT" in env else free_port()
    metrics_port = free_port() if metrics else 0
    environment = {"GRPC_HOST": "127.0.0.1", **env, "GRPC_PORT": str(port)}
    if metrics:
        environment["METRICS_PORT"] = str(metrics_port)
    log_path = directory / f"{name}-{port}.log"
    command = [*(["taskset", "-c", cpus] if cpus else []), *argv]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, env=environment, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
    service = ServiceProcess(process, port, metrics_port, log_path)
    if wait:
        try:
            wait_for_port(port, 60, process)
            if "TLS_CERT_FILE" not in environment:
                wait_for_http2(service.target, 60, process)
            if metrics:
                wait_for_port(metrics_port, 60, process)
        except (RuntimeError, TimeoutError):
            service.kill()
            raise RuntimeError(f"{name} did not start; see {log_path}:\n{log_path.read_text()[-2000:]}") from None
    return service
