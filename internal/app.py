"""The composition root: the one place that knows which Cache and Store the
service runs with. `build_app(settings)` wires the real ones (Redis,
MongoDB); tests pass their own (`cache=`, `store=`: a naive cache-aside to
show the consistency checker works, a cache whose fills are delayed to widen
a race) without any of that reaching the production settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from grpc_health.v1 import health

from movieservice import tracing
from movieservice.cache.cluster import RedisClusterCache
from movieservice.cache.redis_cache import RedisCache, tls_options
from movieservice.config import Settings
from movieservice.core.ports import Cache, Store
from movieservice.core.ranking import Ranking
from movieservice.core.service import MovieService, ServiceOptions
from movieservice.grpcserver.health import HealthReporter
from movieservice.grpcserver.servicer import MovieServicer
from movieservice.metrics import Metrics
from movieservice.store.mongo import MongoStore

# With WORKERS > 1, how stale the supervisor's /metrics may be.
METRICS_FLUSH_SECONDS = 1.0


@dataclass
class App:
    """Everything one server process runs, wired together."""

    settings: Settings
    metrics: Metrics
    cache: Cache
    store: Store
    service: MovieService
    servicer: MovieServicer
    health: health.aio.HealthServicer
    reporter: HealthReporter
    _flushing: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self, *, warm_up: bool = True) -> None:
        """Start the background work: invalidations, repairs, health checks,
        index warm-up, and (WORKERS > 1) flushing the metrics for the supervisor."""
        await self.cache.start()
        self.service.start(warm_up=warm_up)
        await self.reporter.start()
        if self.metrics.needs_flush:
            self._flushing = asyncio.ensure_future(self._flush_metrics())

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_SECONDS)
            self.metrics.flush()

    async def close(self) -> None:
        """Stop the background work, then close the clients it uses."""
        await self.reporter.stop()
        await self.service.close(self.settings.request_timeout_seconds)
        await self.cache.close()
        await self.store.close()
        if self._flushing is not None:
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
        self.metrics.flush()


def ranking_of(settings: Settings) -> Ranking:
    return Ranking(min_votes=settings.toprated_min_votes, prior_rating=settings.toprated_prior_rating)


def redis_cache(settings: Settings, metrics: Metrics) -> RedisCache:
    if settings.redis_cluster:
        return RedisClusterCache(
            settings.redis_url,
            metrics.dependencies,
            wait_replicas=settings.redis_cluster_wait_replicas,
            key_prefix=settings.redis_key_prefix,
            movie_ttl_seconds=settings.movie_ttl_seconds,
            negative_ttl_seconds=settings.negative_ttl_seconds,
            top_index_tag=ranking_of(settings).tag,
            near_cache_size=settings.near_cache_size,
            tls=tls_options(settings.redis_ca_file, settings.redis_cert_file, settings.redis_key_file),
        )
    return RedisCache(
        settings.redis_url,
        metrics.dependencies,
        key_prefix=settings.redis_key_prefix,
        movie_ttl_seconds=settings.movie_ttl_seconds,
        negative_ttl_seconds=settings.negative_ttl_seconds,
        top_index_tag=ranking_of(settings).tag,
        near_cache_size=settings.near_cache_size,
        near_cache_ttl_seconds=settings.near_cache_ttl_seconds,
        tls=tls_options(settings.redis_ca_file, settings.redis_cert_file, settings.redis_key_file),
    )


def mongo_store(settings: Settings, metrics: Metrics) -> MongoStore:
    return MongoStore(settings.mongo_url, settings.mongo_db, metrics.dependencies)


def build_app(
    settings: Settings, *, metrics: Metrics | None = None, cache: Cache | None = None, store: Store | None = None
) -> App:
    """The service as `settings` describe it; `metrics`, `cache` and `store`
    replace the process-wide metrics and the real adapters."""
    metrics = metrics or Metrics(grpc_buckets=settings.grpc_histogram_buckets)
    traces = tracing.active()  # started by serve() when OTEL_* ask for it; off otherwise
    traces.count_drops_in(metrics.trace_spans_dropped)
    cache = cache or redis_cache(settings, metrics)
    store = store or mongo_store(settings, metrics)
    service = MovieService.create(
        cache,
        store,
        metrics,
        ServiceOptions(
            writer_tokens=settings.writers(),
            writer_subjects=settings.auth_client_subjects,
            auth_failures_per_minute=settings.auth_failures_per_minute,
            page_token_keys=settings.page_token_keys,
            ranking=ranking_of(settings),
            background_timeout_seconds=settings.request_timeout_seconds,
            index_rebuild_timeout_seconds=settings.index_rebuild_timeout_seconds,
        ),
        traces.tracer(),
    )
    servicer = MovieServicer(
        service,
        request_timeout_seconds=settings.request_timeout_seconds,
        max_concurrent_calls=settings.max_concurrent_calls,
    )
    health_servicer = health.aio.HealthServicer()
    return App(
        settings,
        metrics,
        cache,
        store,
        service,
        servicer,
        health_servicer,
        HealthReporter(health_servicer, cache, store, tracer=traces.tracer()),
    )
