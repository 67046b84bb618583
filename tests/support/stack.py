"""A private stack for fault tests: its own redis-server and FerretDB (which a
test may kill, pause or restart), fault proxies, and several server processes."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from movieservice.devstack.processes import (
    FerretDBProcess,
    ServerProcess,
    ferretdb_server,
    free_port,
    redis_server,
    wait_for_port,
)
from movieservice.store import seed, synthetic
from movieservice.store.mongo import MOVIES, THEATERS, MongoStore
from tests.support.proxy import FaultProxy, MongoWireTap

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
DATABASE = "stack"
AUTH_TOKEN = "stack-token"


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Stack:
    directory: Path
    redis: ServerProcess = field(init=False)
    mongo: FerretDBProcess = field(init=False)
    mongo_proxy: FaultProxy = field(init=False)
    services: list[ServiceProcess] = field(default_factory=list)

    def start(self, movies: int = 40) -> Stack:
        self.redis = redis_server(self.directory / "redis").start()
        self.mongo = ferretdb_server(self.directory / "ferretdb").start()
        self.mongo_proxy = FaultProxy(self.mongo.port, tap=MongoWireTap())
        store = MongoStore(self.mongo_url, DATABASE)
        try:
            seed.load(store, MOVIES, seed.parse_documents(synthetic.movie_lines(movies, seed=11)))
            seed.load(store, THEATERS, seed.parse_documents(synthetic.theater_lines(50, seed=11)))
        finally:
            store.close()
        self.mongo.index_ids()
        return self

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo.port}/"

    def serve(self, count: int = 2, **env: str) -> list[ServiceProcess]:
        """Start `count` server processes; MongoDB through the proxy, Redis direct."""
        for _ in range(count):
            port = free_port()
            log = self.directory / f"service-{len(self.services)}.log"
            environment = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "REDIS", "GRPC"))}
            environment |= {
                "MONGO_URL": f"mongodb://{self.mongo_proxy.url_host}/",
                "MONGO_DB": DATABASE,
                "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(port),
                "GRPC_THREADS": "32",
                "AUTH_TOKEN": AUTH_TOKEN,
                "METRICS_PORT": "0",
                "GRACE_PERIOD_SECONDS": "2",
            } | env
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [str(VENV_BIN / "movieservice"), "serve"],
                    env=environment,
                    cwd=self.directory,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            wait_for_port(port, 30, process)  # type: ignore[arg-type]
            self.services.append(ServiceProcess(process, port, log))
        return self.services[-count:]

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
            service.stop()
        self.mongo_proxy.close()
        self.redis.stop()
        self.mongo.stop()
