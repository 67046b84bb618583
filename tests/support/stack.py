"""A private stack for fault tests: its own redis-server and FerretDB (which a
test may kill, pause or restart), a fault proxy before FerretDB, and several
server processes, all started by the project's harness (movieservice.devstack)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from movieservice.devstack.cluster import RedisClusterProcesses, redis_cluster
from movieservice.devstack.processes import FerretDBProcess, ServerProcess, ferretdb_server, redis_server
from movieservice.devstack.stack import MOVIESERVICE, ServiceProcess, seed_database, spawn
from tests.support.proxy import FaultProxy, MongoWireTap

DATABASE = "stack"
AUTH_TOKEN = "stack-token"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def variant(*args: str) -> list[str]:
    """The argv of a server process with a test-only cache (tests/support/variants.py)."""
    return [sys.executable, "-m", "tests.support.variants", *args]


@dataclass
class Stack:
    directory: Path
    # A Redis Cluster (3 masters, a replica each) in place of one redis-server.
    cluster_mode: bool = False
    redis: ServerProcess = field(init=False)
    cluster: RedisClusterProcesses = field(init=False)
    mongo: FerretDBProcess = field(init=False)
    mongo_proxy: FaultProxy = field(init=False)
    services: list[ServiceProcess] = field(default_factory=list)

    def start(self, movies: int = 40) -> Stack:
        if self.cluster_mode:
            self.cluster = redis_cluster(self.directory / "cluster").start()
        else:
            self.redis = redis_server(self.directory / "redis").start()
        self.mongo = ferretdb_server(self.directory / "ferretdb").start()
        self.mongo_proxy = FaultProxy(self.mongo.port, tap=MongoWireTap())
        seed_database(self.mongo_url, DATABASE, synthetic=movies, theaters=50, random_seed=11)
        self.mongo.index_ids()
        return self

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo.port}/"

    def serve(
        self, count: int = 2, argv: Sequence[str] = (str(MOVIESERVICE), "serve"), **env: str
    ) -> list[ServiceProcess]:
        """Start `count` server processes; MongoDB through the proxy, Redis direct."""
        prefixes = ("MONGO", "REDIS", "GRPC", "AUTH", "METRICS")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        environment |= {
            "MONGO_URL": f"mongodb://{self.mongo_proxy.url_host}/",
            "MONGO_DB": DATABASE,
            **self.redis_env(),
            "AUTH_TOKEN": AUTH_TOKEN,
            "METRICS_PORT": "0",
            "GRACE_PERIOD_SECONDS": "2",
            # The test-only server variants import `tests`.
            "PYTHONPATH": str(PROJECT_ROOT),
        } | env
        started = [spawn(environment, self.directory, argv=argv, name="service") for _ in range(count)]
        self.services += started
        return started

    def redis_env(self) -> dict[str, str]:
        if self.cluster_mode:
            return {"REDIS_URL": self.cluster.url, "REDIS_CLUSTER": "1"}
        return {"REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0"}

    def restart_redis(self) -> None:
        """Kill redis-server (no persistence: its data is gone) and start it on the same port."""
        self.redis.kill()
        self.redis = redis_server(self.directory / "redis", port=self.redis.port).start()

    def stop_mongo(self) -> None:
        self.mongo.stop()

    def start_mongo(self) -> None:
        self.mongo = ferretdb_server(self.directory / "ferretdb", port=self.mongo.port).start()

    def close(self) -> None:
        for service in self.services:
            service.stop(15)
        self.mongo_proxy.close()
        if self.cluster_mode:
            self.cluster.stop()
        else:
            self.redis.stop()
        self.mongo.stop()
