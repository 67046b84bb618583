"""The serving model: one grpc.aio server per worker process, on uvloop.

Why grpc.aio: grpcio's threaded server reads a unary call's request inside a
pool thread, so a client that opens calls and never sends their request (a
frozen client, a bad mobile link, a proxy that opens streams early) holds
threads for as long as it likes, and a handful of such calls stops every
other client. Here a call waiting for its request is a suspended coroutine;
only calls whose request has arrived count against MAX_CONCURRENT_CALLS, and
the call over that limit gets RESOURCE_EXHAUSTED at once. Connections are
bounded too: streams per connection, keepalive pings (a dead peer's
connection is closed), a ping policy (a client pinging too often is sent
away) and a maximum connection age (every connection is closed gracefully,
and its calls get GRACE_PERIOD_SECONDS, so that load spreads again over
instances added since).

What it costs, and what buys it back (BENCHMARKS.md): grpc.aio alone serves
a constant answer at ~0.6-0.7 of the threaded server; uvloop, answers leaving
in batches (servicer.CompletionBatcher) and Redis commands sent in batches
(cache.pipelining) bring the service back to the threaded server's speed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from movieservice import tracing
from movieservice.app import App, build_app
from movieservice.config import ConfigError, Settings, redact_url
from movieservice.core.top_rated import MAX_RESPONSE_BYTES
from movieservice.core.validation import MAX_MOVIE_BYTES
from movieservice.grpcserver import tls
from movieservice.grpcserver.interceptor import PrometheusInterceptor
from movieservice.grpcserver.registrar import Registrar
from movieservice.grpcserver.servicer import SERVICE_NAME
from movieservice.proto.movies.v1 import movies_pb2

log = logging.getLogger(__name__)

RPC_NAMES = tuple(movies_pb2.DESCRIPTOR.services_by_name["MovieService"].methods_by_name)
SERVICE_NAMES = (
    SERVICE_NAME,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
# Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_STREAMS_PER_CONNECTION = 1000
# UpsertRequest{movie}: the movie, its field tag and its length.
MAX_REQUEST_BYTES = MAX_MOVIE_BYTES + 8
# Keepalive: the server pings a connection idle this long and closes it when
# the ping is not answered within _KEEPALIVE_TIMEOUT_MS.
_KEEPALIVE_TIMEOUT_MS = 20_000
# A client may ping at most this often; more than two pings too early and the
# connection is closed (GOAWAY "too_many_pings"), as grpc-go's default policy.
_MIN_CLIENT_PING_INTERVAL_MS = 10_000


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        # With one worker the port must be exclusive: a second server on the
        # same port is an error, not a silent share.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_period_seconds * 1000)),
        # A request larger than the largest valid one (an Upsert of a movie
        # with every field at its limit) is refused before it is parsed...
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        # ...and no answer exceeds what every gRPC client accepts by default
        # (TopRated pages end early to stay within it).
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ]


def new_server(settings: Settings) -> grpc.aio.Server:
    """The grpc.aio server every worker runs (also the benchmark's ceiling server)."""
    return grpc.aio.server(options=server_options(settings))


def listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Bind GRPC_HOST:GRPC_PORT, over TLS when TLS_CERT_FILE/TLS_KEY_FILE are
    set (see tls.py); returns the port. ListenError when the port is taken or
    the certificate files do not work."""
    try:
        credentials = tls.server_credentials(settings)
    except ConfigError as error:
        raise ListenError(f"could not serve TLS: {error}") from None
    if credentials is None and not tls.is_loopback(settings.grpc_host):
        log.warning(
            "serving plaintext on %s: anyone on the network can read and alter the calls, Upsert's bearer "
            "token included; set TLS_CERT_FILE and TLS_KEY_FILE to serve TLS",
            settings.grpc_address,
        )
    try:
        if credentials is None:
            return server.add_insecure_port(settings.grpc_address)
        return server.add_secure_port(settings.grpc_address, credentials)
    except RuntimeError as error:  # grpcio raises when the port is taken
        raise ListenError(f"could not listen on {settings.grpc_address}: {error}") from None


class ListenError(RuntimeError):
    pass


def register(server: grpc.aio.Server, app: App, interceptor: PrometheusInterceptor | None = None) -> None:
    """Add MovieService, health and (unless REFLECTION=0) reflection to
    `server`, every call observed by `interceptor` (and, with traces on, a server span per MovieService call)."""
    app.servicer.register(Registrar(server, tracing.active().method_wrappers()), interceptor)
    registrar = Registrar(server, [interceptor] if interceptor else [])
    health_pb2_grpc.add_HealthServicer_to_server(app.health, registrar)
    if app.settings.reflection:
        reflection.enable_server_reflection(SERVICE_NAMES, registrar)


def create_server(settings: Settings, app: App) -> tuple[grpc.aio.Server, int]:
    """`app`'s server, bound to GRPC_HOST:GRPC_PORT (the port, when 0: the one chosen)."""
    interceptor = None
    if settings.metrics_port:  # no metrics port, no metrics: they cost time on every call
        app.metrics.grpc.initialize([f"/{SERVICE_NAME}/{name}" for name in RPC_NAMES])
        interceptor = PrometheusInterceptor(app.metrics.grpc)
    server = new_server(settings)
    register(server, app, interceptor)
    return server, listen(server, settings)


def serve(settings: Settings, *, metrics_http: bool = True, build: Callable[[Settings], App] = build_app) -> int:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and stop.

    One worker process; with `metrics_http`, it also serves /metrics on
    METRICS_PORT (with WORKERS > 1 the supervisor does that instead). `build`
    makes the App (tests pass one with a cache of their own).
    Returns the process exit status.
    """
    uvloop.install()
    # Here, in each worker: the exporter's thread and channel must not cross a fork.
    traces = tracing.start()
    try:
        return asyncio.run(_serve(settings, metrics_http, build))
    finally:
        traces.shutdown()


async def _serve(settings: Settings, metrics_http: bool, build: Callable[[Settings], App]) -> int:
    app = build(settings)
    log.info(
        "starting: mongo=%s db=%s redis=%s",
        redact_url(settings.mongo_url),
        settings.mongo_db,
        redact_url(settings.redis_url),
    )
    try:
        server, port = create_server(settings, app)
    except ListenError as error:
        log.error("%s", error)
        await app.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, settings, stop)
    metrics_server = start_metrics_http(settings, app.metrics.registry) if metrics_http else None
    await app.start()
    await server.start()
    settle_garbage_collector()
    log.info("serving %s on %s:%d (%s)", SERVICE_NAME, settings.grpc_host, port, _transport_security(settings))
    await stop.wait()
    await app.health.enter_graceful_shutdown()
    await drain(settings.drain_seconds)
    await server.stop(settings.grace_period_seconds)
    await app.close()
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("stopped")
    return 0


async def drain(seconds: float) -> None:
    """Keep serving for `seconds` after health turned NOT_SERVING.

    A balancer that watches health (Kubernetes readiness, Envoy, gRPC clients
    with health checking) or is told by a deploy tool (an nginx reload) needs
    a moment to stop sending new calls here; stopping at once would make the
    calls it sends meanwhile fail to connect. Calls keep being answered as
    usual until then. A second signal does not cut it short: with WORKERS > 1
    a worker may get the same SIGTERM twice (from the supervisor and from a
    process manager that signals the whole group).
    """
    if seconds > 0:
        log.info("health is NOT_SERVING; serving %gs more so that load balancers stop sending", seconds)
        await asyncio.sleep(seconds)


def _transport_security(settings: Settings) -> str:
    if settings.tls_client_ca_file:
        return "mTLS: client certificates required"
    return "TLS" if settings.tls_cert_file else "plaintext"


def settle_garbage_collector() -> None:
    """Move what start-up made (modules, clients, the server: ~50,000 objects)
    out of the collector's reach: each full collection traversed all of it,
    a ~24 ms pause every 1-2 s under load; frozen, ~0.3 ms. Throughput of Get
    near-cache hits: 1.00x to 1.07x across runs (BENCHMARKS.md, "what each
    optimisation bought"); the pause is what it reliably removes."""
    gc.collect()
    gc.freeze()


def _on_signal(signum: int, settings: Settings, stop: asyncio.Event) -> None:
    log.info(
        "received %s: draining (%gs with health NOT_SERVING, then up to %gs for calls in flight)",
        signal.Signals(signum).name,
        settings.drain_seconds,
        settings.grace_period_seconds,
    )
    stop.set()


def start_metrics_http(settings: Settings, registry: CollectorRegistry = REGISTRY) -> WSGIServer | None:
    """Serve `registry` on http://METRICS_HOST:METRICS_PORT/metrics (METRICS_HOST
    empty: GRPC_HOST; None when METRICS_PORT is 0)."""
    if not settings.metrics_port:
        return None
    host = settings.metrics_host or settings.grpc_host
    metrics_server, _ = start_http_server(settings.metrics_port, addr=host.strip("[]") or "::", registry=registry)
    log.info("serving Prometheus metrics on %s:%d/metrics", host, settings.metrics_port)
    return metrics_server
