"""Health reporting with the standard grpc.health.v1 service.

A background thread checks MongoDB and Redis every few seconds and publishes:
- "" and "movies.v1.MovieService": SERVING while MongoDB answers (the service
  can answer every RPC from MongoDB alone), NOT_SERVING otherwise;
- "movieservice.mongodb", "movieservice.redis": each dependency on its own, so
  that a degraded cache is visible without failing the whole service.
"""

from __future__ import annotations

import logging
import threading

from grpc_health.v1 import health, health_pb2

from movieservice.service.ports import Cache, DependencyError, Store

log = logging.getLogger(__name__)

SERVICE_NAME = "movies.v1.MovieService"
MONGODB = "movieservice.mongodb"
REDIS = "movieservice.redis"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(self, servicer: health.HealthServicer, cache: Cache, store: Store, interval_seconds: float = 2.0):
        self._servicer = servicer
        self._cache = cache
        self._store = store
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._last: dict[str, bool] = {}

    def start(self) -> None:
        self.check_once()
        self._thread.start()

    def stop(self) -> None:
        """Stop checking; returns once a check in progress (bounded by the interval) is over."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._interval * 2)

    def check_once(self) -> None:
        store_ok = self._probe(MONGODB, lambda: self._store.ping(self._interval))
        self._probe(REDIS, self._cache.ping)
        for name in ("", SERVICE_NAME):
            self._servicer.set(name, _SERVING if store_ok else _NOT_SERVING)

    def _probe(self, name: str, ping: object) -> bool:
        try:
            ping()  # type: ignore[operator]
            ok = True
        except DependencyError as error:
            ok = False
            detail = str(error)
        if self._last.get(name) != ok:
            if ok:
                log.info("%s is reachable", name)
            else:
                log.warning("%s is unreachable: %s", name, detail)
            self._last[name] = ok
        self._servicer.set(name, _SERVING if ok else _NOT_SERVING)
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._stop.is_set():
                break
            self.check_once()
