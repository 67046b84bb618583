"""The composition root: builds the real cache, store and service and serves them.

This is the only module that knows which Cache and Store implementations the
service runs with.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from movieservice import metrics
from movieservice.cache.redis_cache import RedisCache
from movieservice.config import Settings, redact_url
from movieservice.health import HealthReporter
from movieservice.interceptor import GrpcMetrics, PrometheusInterceptor
from movieservice.proto.movies.v1 import movies_pb2
from movieservice.service.movies import MovieService
from movieservice.service.ranking import Ranking
from movieservice.store.mongo import MongoStore

log = logging.getLogger(__name__)

RPC_NAMES = tuple(movies_pb2.DESCRIPTOR.services_by_name["MovieService"].methods_by_name)
SERVICE_NAMES = (
    movies_pb2.DESCRIPTOR.services_by_name["MovieService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)


@dataclass
class App:
    """Everything one server process runs, wired together."""

    settings: Settings
    cache: RedisCache
    store: MongoStore
    service: MovieService
    health: health.HealthServicer
    reporter: HealthReporter
    background: futures.ThreadPoolExecutor
    stopping: threading.Event = field(default_factory=threading.Event)

    repairs: threading.Thread | None = None

    def start(self) -> None:
        """Start the background work: health checks and deferred cache updates."""
        self.reporter.start()
        self.repairs = threading.Thread(
            target=self.service.run_repair_loop, args=(self.stopping,), name="cache-repairs", daemon=True
        )
        self.repairs.start()

    def close(self) -> None:
        """Stop the background work, then close the clients it uses."""
        self.stopping.set()
        self.service.wake_repair_loop()
        self.reporter.stop()
        self.background.shutdown(wait=True)
        if self.repairs is not None:
            # Each store call of a repair is bounded by the request timeout; a
            # daemon thread still busy after that is not waited for.
            self.repairs.join(self.settings.request_timeout_seconds)
        self.cache.close()
        self.store.close()


def build_app(settings: Settings) -> App:
    metrics.initialize()
    ranking = Ranking(min_votes=settings.toprated_min_votes, prior_rating=settings.toprated_prior_rating)
    cache = RedisCache(
        settings.redis_url,
        near_cache_size=settings.near_cache_size,
        near_cache_ttl_seconds=settings.near_cache_ttl_seconds,
        key_prefix=settings.redis_key_prefix,
        movie_ttl_seconds=settings.movie_ttl_seconds,
        negative_ttl_seconds=settings.negative_ttl_seconds,
        top_index_tag=ranking.tag,
        naive=settings.cache_consistency == "naive",
    )
    store = MongoStore(settings.mongo_url, settings.mongo_db)
    # Cache population after a miss runs here, off the client's critical path.
    background = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="populate")
    service = MovieService(
        cache,
        store,
        populate=background,
        ranking=ranking,
        auth_token=settings.auth_token,
        request_timeout_seconds=settings.request_timeout_seconds,
        fill_delay_seconds=settings.test_fill_delay_seconds,
    )
    health_servicer = health.HealthServicer()
    reporter = HealthReporter(health_servicer, cache, store)
    return App(settings, cache, store, service, health_servicer, reporter, background)


def register(server: grpc.Server, app: App) -> None:
    """Add the MovieService, health and reflection services to `server`.

    MovieService is registered by hand rather than with the generated
    add_MovieServiceServicer_to_server because Get, TopRated and Nearby return
    their responses already serialized, assembled from the cached bytes; their
    response serializer is the identity.
    """
    service = app.service
    rpc = grpc.unary_unary_rpc_method_handler
    handlers: dict[str, Any] = {
        "Get": rpc(service.Get, movies_pb2.GetRequest.FromString, None),
        "Upsert": rpc(service.Upsert, movies_pb2.UpsertRequest.FromString, _serialize),
        "TopRated": rpc(service.TopRated, movies_pb2.TopRatedRequest.FromString, None),
        "Nearby": rpc(service.Nearby, movies_pb2.NearbyRequest.FromString, None),
    }
    name = SERVICE_NAMES[0]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    # Registered methods skip grpcio's per-call search through generic handlers.
    server.add_registered_method_handlers(name, handlers)
    health_pb2_grpc.add_HealthServicer_to_server(app.health, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)


def new_grpc_server(settings: Settings, interceptors: Sequence[grpc.ServerInterceptor] = ()) -> grpc.Server:
    """The grpcio server every worker runs (also the benchmark's ceiling server)."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc"),
        interceptors=list(interceptors),
        # With one worker the port must be exclusive: a second server on the
        # same port is an error, not a silent share.
        options=[("grpc.so_reuseport", 1 if settings.workers > 1 else 0)],
    )


def listen(server: grpc.Server, settings: Settings) -> int:
    try:
        return server.add_insecure_port(settings.grpc_address)
    except RuntimeError as error:  # grpcio raises when the port is taken
        raise ListenError(f"could not listen on {settings.grpc_address}: {error}") from None


def create_server(
    settings: Settings, app: App, interceptors: Sequence[grpc.ServerInterceptor] = ()
) -> tuple[grpc.Server, int]:
    server = new_grpc_server(settings, interceptors)
    register(server, app)
    return server, listen(server, settings)


class ListenError(RuntimeError):
    pass


def serve(settings: Settings, *, metrics_http: bool = True) -> int:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and stop.

    One worker process; with `metrics_http`, it also serves /metrics on
    METRICS_PORT (with WORKERS > 1 the supervisor does that instead).
    Returns the process exit status.
    """
    app = build_app(settings)
    log.info(
        "starting: mongo=%s db=%s redis=%s",
        redact_url(settings.mongo_url),
        settings.mongo_db,
        redact_url(settings.redis_url),
    )
    try:
        # No metrics port, no metrics: the interceptor costs time on every call.
        interceptor = PrometheusInterceptor(grpc_metrics(settings.grpc_histogram_buckets))
        interceptor.initialize(f"/{SERVICE_NAMES[0]}/{name}" for name in RPC_NAMES)
        server, port = create_server(settings, app, [interceptor] if settings.metrics_port else [])
    except ListenError as error:
        log.error("%s", error)
        app.close()
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: draining for up to %gs", signal.Signals(signum).name, settings.grace_period_seconds)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics_server = start_metrics_http(settings) if metrics_http else None
    app.start()
    server.start()
    log.info("serving movies.v1.MovieService on %s:%d", settings.grpc_host, port)
    threading.Thread(target=app.service.warm_up, name="warm-up", daemon=True).start()
    stop.wait()
    app.health.enter_graceful_shutdown()
    server.stop(settings.grace_period_seconds).wait()
    app.close()
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("stopped")
    return 0


def start_metrics_http(settings: Settings, registry: CollectorRegistry = REGISTRY) -> WSGIServer | None:
    """Serve `registry` on http://GRPC_HOST:METRICS_PORT/metrics (None when METRICS_PORT is 0)."""
    if not settings.metrics_port:
        return None
    host = settings.grpc_host.strip("[]") or "::"
    metrics_server, _ = start_http_server(settings.metrics_port, addr=host, registry=registry)
    log.info("serving Prometheus metrics on %s:%d/metrics", settings.grpc_host, settings.metrics_port)
    return metrics_server


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


_GRPC_METRICS: GrpcMetrics | None = None


def grpc_metrics(buckets: Sequence[float]) -> GrpcMetrics:
    """The process' gRPC metric families (created on first use)."""
    global _GRPC_METRICS
    if _GRPC_METRICS is None:
        _GRPC_METRICS = GrpcMetrics(buckets)
    return _GRPC_METRICS
