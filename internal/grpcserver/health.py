"""Health reporting with the standard grpc.health.v1 service.

A background task checks MongoDB and Redis every few seconds and publishes:
- "" and "movies.v1.MovieService": SERVING while MongoDB answers (the service
  can answer every RPC from MongoDB alone), NOT_SERVING otherwise;
- "movieservice.mongodb", "movieservice.redis": each dependency on its own, so
  that a degraded cache is visible without failing the whole service;
- "movieservice.instance": SERVING from start until SIGTERM, whatever the
  dependencies do: what a balancer (a gRPC client's health checking) watches
  to stop sending to an instance that is draining, while it keeps sending to
  instances that answer from the cache during a MongoDB outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health, health_pb2

from movieservice.core.ports import Cache, DependencyError, Store
from movieservice.core.tracing import NO_TRACING, Tracer
from movieservice.grpcserver.servicer import SERVICE_NAME

log = logging.getLogger(__name__)

MONGODB = "movieservice.mongodb"
REDIS = "movieservice.redis"
INSTANCE = "movieservice.instance"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        cache: Cache,
        store: Store,
        interval_seconds: float = 2.0,
        tracer: Tracer = NO_TRACING,
    ) -> None:
        self._servicer = servicer
        self._tracer = tracer
        self._cache = cache
        self._store = store
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._last: dict[str, bool] = {}

    async def start(self) -> None:
        await self._servicer.set(INSTANCE, _SERVING)  # NOT_SERVING on enter_graceful_shutdown
        # Checks every few seconds: untraced (the task keeps the context it starts in),
        # or each would be a trace of its own.
        with self._tracer.untraced():
            await self.check_once()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop checking (a check in progress is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_once(self) -> None:
        store_ok = await self._probe(MONGODB, lambda: self._store.ping(self._interval))
        await self._probe(REDIS, self._cache.ping)
        for name in ("", SERVICE_NAME):
            await self._servicer.set(name, _SERVING if store_ok else _NOT_SERVING)

    async def _probe(self, name: str, ping: Callable[[], Awaitable[None]]) -> bool:
        detail = ""
        try:
            await ping()
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
        await self._servicer.set(name, _SERVING if ok else _NOT_SERVING)
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()
