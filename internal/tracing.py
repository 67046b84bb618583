"""Traces: one trace per call across gRPC, Redis and MongoDB, with OpenTelemetry.

Configured the standard way, by the OTEL_* environment variables (or `.env`),
and off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` turns it off
again). Off, nothing of OpenTelemetry runs on a call: no server interceptor,
the use cases hold `core.tracing.NO_TRACING`, the Redis adapter opens no spans
and pymongo has no command listener.

On, each server process (each worker, after the fork: the batch processor's
thread and the exporter's gRPC channel must not cross one) runs:

- the SDK's TracerProvider: resource from `OTEL_SERVICE_NAME` and
  `OTEL_RESOURCE_ATTRIBUTES` (`service.name` defaults to movieservice), sampler
  from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (the SDK's default:
  parentbased_always_on);
- a BatchSpanProcessor (`OTEL_BSP_*`): a call only appends its spans to an
  in-memory queue; a thread exports them. When the collector is slow or down
  the queue fills and further spans are dropped rather than waited for; those,
  and the spans of batches the exporter gave up on, are counted in
  `movieservice_trace_spans_dropped_total{reason}`;
- the OTLP/gRPC exporter (`OTEL_EXPORTER_OTLP_*`: endpoint, headers,
  certificate, timeout, compression);
- opentelemetry-instrumentation-grpc's grpc.aio server instrumentation (a
  server span per call, the client's W3C `traceparent` honoured through the
  global propagator, `OTEL_PROPAGATORS`; health and reflection calls left
  out), applied to each method's handler once (`ServerSpans`) rather than as
  a grpc.aio interceptor (measured: ~90 us of CPU per Get as an interceptor,
  at any sampling ratio), and
  opentelemetry-instrumentation-pymongo's command listener (a client span per
  MongoDB command). The Redis spans are made by hand in cache/redis_cache.py:
  the service's commands go through its own auto-pipeline
  (cache/pipelining.py), which writes to the connection's transport and never
  calls the redis-py client methods opentelemetry-instrumentation-redis wraps.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from movieservice.config import ConfigError
from movieservice.core.tracing import NO_TRACING, Span, Tracer

log = logging.getLogger(__name__)

# The OpenTelemetry variables the service documents (README, "Configuration"); the SDK
# reads them (and the rest of its own) from the environment.
VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_PROPAGATORS",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_SDK_DISABLED",
    "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES",
)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
DEFAULT_SERVICE_NAME = "movieservice"
DROP_REASONS = ("queue_full", "export_failed")
# Services whose calls get no server span: health checks come every few
# seconds from every balancer and probe; reflection is tooling.
UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
# On shutdown, how long the last spans may take to leave before they are dropped
# (a collector that is down would otherwise hold the exit for the exporter's retries).
SHUTDOWN_SECONDS = 2.0


def enabled_in(environ: Mapping[str, str]) -> bool:
    """Whether `environ` turns traces on: an OTLP endpoint set, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure_environment(dotenv_path: Path | None = Path(".env"), environ: Any = None) -> bool:
    """Take the OTEL_* variables of `.env` into the environment (the SDK reads
    only the environment; variables already set win, as for every setting) and
    check what the service supports. Returns whether traces are on.
    ConfigError for an exporter or protocol this build does not ship."""
    environ = os.environ if environ is None else environ
    if dotenv_path is not None and dotenv_path.is_file():
        for name, value in dotenv_values(dotenv_path).items():
            if name.startswith("OTEL_") and value is not None and name not in environ:
                environ[name] = value
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp", "none"):
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: only otlp (or none) is supported")
    for name in PROTOCOL_VARIABLES:
        protocol = environ.get(name, "").strip().lower()
        if protocol and protocol != "grpc":
            raise ConfigError(f"{name}={protocol!r}: only grpc is supported (OTLP over gRPC, port 4317)")
    return enabled_in(environ)


class DropCounts:
    """Spans lost on the way out, by reason, reported to `sink` once one is
    attached (the Prometheus counter; counted here until then). Called from
    the event loop's thread (a full queue) and the exporter's (a failed batch)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = dict.fromkeys(DROP_REASONS, 0)
        self._sink: Callable[[str, int], None] | None = None

    def add(self, reason: str, count: int) -> None:
        with self._lock:
            sink = self._sink
            if sink is None:
                self._pending[reason] += count
                return
        sink(reason, count)

    def attach(self, sink: Callable[[str, int], None]) -> None:
        with self._lock:
            self._sink = sink
            pending, self._pending = self._pending, dict.fromkeys(DROP_REASONS, 0)
        for reason, count in pending.items():
            if count:
                sink(reason, count)


class _OtelTracer:
    """The core's `Tracer` port on an OpenTelemetry tracer."""

    def __init__(self, tracer: Any, tracing: Tracing) -> None:
        from opentelemetry.instrumentation.utils import is_instrumentation_enabled

        self._tracer = tracer
        self._tracing = tracing
        self._instrumentation_enabled = is_instrumentation_enabled

    def span(self, name: str) -> AbstractContextManager[Span]:
        if not self._instrumentation_enabled() or self._tracing.unsampled_parent():
            return NO_TRACING.span(name)
        context_manager: AbstractContextManager[Span] = self._tracer.start_as_current_span(name)
        return context_manager

    def untraced(self) -> AbstractContextManager[object]:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        return suppress_instrumentation()


class Tracing:
    """This process' traces: off (the default), or the SDK as `start` set it up."""

    def __init__(
        self,
        provider: Any = None,
        exporter: Any = None,
        drops: DropCounts | None = None,
        root_ratio: float | None = None,
    ) -> None:
        self._provider = provider
        self._exporter = exporter
        self.drops = drops or DropCounts()
        self._root_ratio = root_ratio
        self._parent_based = False
        if provider is not None:
            from opentelemetry.sdk.trace.sampling import ParentBased

            self._parent_based = isinstance(provider.sampler, ParentBased)

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def tracer(self) -> Tracer:
        """The use cases' tracer (NO_TRACING when off)."""
        if self._provider is None:
            return NO_TRACING
        return _OtelTracer(self._provider.get_tracer("movieservice.core"), self)

    def library_tracer(self, name: str) -> Any:
        """An OpenTelemetry tracer for an adapter's own spans, or None when off
        (so that the adapter's tracing-off path is one comparison)."""
        if self._provider is None:
            return None
        return self._provider.get_tracer(name)

    def method_wrappers(self) -> list[ServerSpans]:
        """What wraps the gRPC methods' handlers (see grpcserver/registrar.py): the server spans when on."""
        if self._provider is None:
            return []
        return [ServerSpans(self._provider, self._root_ratio)]

    def unsampled_parent(self) -> bool:
        """Whether a span started now would be dropped anyway: its parent (the
        call's server span) was not sampled and the sampler follows parents.
        Then the service opens none: at 1 % sampling, 99 % of calls skip the
        SDK's span objects and context switches altogether."""
        if not self._parent_based:
            return False
        context = trace_api().get_current_span().get_span_context()
        return bool(context.is_valid and not context.trace_flags.sampled)

    def count_drops_in(self, counter: Any) -> None:
        """Report dropped spans to `counter` (a prometheus_client Counter labelled by reason)."""
        self.drops.attach(lambda reason, count: counter.labels(reason).inc(count))

    def shutdown(self, seconds: float = SHUTDOWN_SECONDS) -> None:
        """Export what is queued, for up to `seconds`, then stop."""
        if self._provider is None:
            return
        give_up = threading.Timer(seconds, self._exporter.give_up)
        give_up.daemon = True
        give_up.start()
        try:
            self._provider.shutdown()
        finally:
            give_up.cancel()


def _root_ratio(environ: Mapping[str, str]) -> float | None:
    """The share of calls without a client's trace context to trace, when the
    sampler is parent-based with a ratio for roots (parentbased_traceidratio,
    parentbased_always_off), as OTEL_TRACES_SAMPLER(_ARG) say; None for any
    other sampler (the SDK's own then decides every span)."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler == "parentbased_always_off":
        return 0.0
    if sampler != "parentbased_traceidratio":
        return None
    try:
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        return 1.0  # what the SDK does with an argument it cannot read
    return ratio if 0.0 <= ratio <= 1.0 else 1.0


class ServerSpans:
    """A server span around every call of a gRPC method, made by
    opentelemetry-instrumentation-grpc's own grpc.aio code (its interceptor's
    `_intercept_aio_server_unary`: the spans, attributes and status handling
    are the instrumentation's), applied to the method's handler once, when the
    server first looks it up (grpcserver/registrar.py). As a grpc.aio
    interceptor the same code ran behind a chain of coroutines on every call,
    which looked the handler up and wrapped it again each time. The Jaeger test
    (tests/test_tracing.py) checks the spans it makes, so an upgrade of the
    instrumentation that changes that method is caught.

    With a ratio sampler (`root_ratio`), a call that brings no trace context is
    drawn here, before the instrumentation: one left out runs untraced (no span
    objects at all, nor any of the service's or the libraries' spans inside,
    and its log lines name no trace, as there is none), which is what keeps 1 %
    sampling within a few percent of the throughput with traces off; the
    instrumentation's per-call work cost ~14 us even for a span it then
    dropped. A call with a client's context always goes through the
    instrumentation, whose parent-based sampler follows the client's decision
    (its log lines name the client's trace either way)."""

    def __init__(self, provider: Any, root_ratio: float | None = None) -> None:
        from opentelemetry import propagate
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        self._instrumentation = aio_server_interceptor(provider)  # type: ignore[no-untyped-call]
        excluded = os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "")
        self._untraced = {*UNTRACED_SERVICES, *(name.strip() for name in excluded.split(",") if name.strip())}
        self._root_ratio = root_ratio
        # The metadata keys that carry a client's trace context (OTEL_PROPAGATORS').
        self._context_keys = frozenset(field.lower() for field in propagate.get_global_textmap().fields) - {"baggage"}

    def wrap(self, method: str, handler: Any) -> Any:
        from random import random

        import grpc
        from opentelemetry.context import attach, detach

        service = method.lstrip("/").rpartition("/")[0]
        if handler.unary_unary is None or service in self._untraced:
            return handler  # streaming (health Watch, reflection) and the untraced services
        plain = handler.unary_unary
        traced = self._instrumentation._intercept_aio_server_unary(plain, _CallDetails(method))
        behavior = traced
        ratio, keys, untraced = self._root_ratio, self._context_keys, _untraced_context()
        if ratio is not None:

            async def drawn(request: Any, context: Any) -> Any:
                # Per call, on the hot path: a loop rather than any() over a
                # generator, and the untraced context made once (a call starts
                # with an empty one) rather than by suppress_instrumentation().
                if random() < ratio:
                    return await traced(request, context)
                for key, _ in context.invocation_metadata() or ():
                    if key in keys:
                        return await traced(request, context)
                token = attach(untraced)
                try:
                    return await plain(request, context)
                finally:
                    detach(token)

            behavior = drawn
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _untraced_context() -> Any:
    """The OpenTelemetry context of a call left out of the sample: instrumentation
    suppressed (no span of the service's or of a library's is opened in it)."""
    from opentelemetry import context
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        return context.get_current()


class _CallDetails:
    """What the instrumentation reads of grpc.HandlerCallDetails: the method's name."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[Any, ...] = ()


def trace_api() -> Any:
    from opentelemetry import trace

    return trace


OFF = Tracing()
_active = OFF


def active() -> Tracing:
    """The traces `start` set up in this process (OFF unless it did)."""
    return _active


def start(environ: Mapping[str, str] | None = None) -> Tracing:
    """Set up traces in this process if the environment turns them on (see the
    module's docstring); call it in each worker, before the app (its MongoDB
    client) is built. Idempotent."""
    global _active
    environ = os.environ if environ is None else environ
    if _active.enabled or not enabled_in(environ):
        return _active
    from opentelemetry import trace
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    if "process.pid" not in resource.attributes:  # tells the workers (WORKERS > 1) apart
        resource = resource.merge(Resource({"process.pid": os.getpid()}))
    # The SDK logs a warning for every span a full queue drops: thousands a
    # second while a collector is down. They are counted instead (see DropCounts).
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
    drops = DropCounts()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = _CountingExporter(OTLPSpanExporter(), drops)
    root_ratio = _root_ratio(environ)
    if root_ratio is None:
        provider = TracerProvider(resource=resource)  # the sampler OTEL_TRACES_SAMPLER names
    else:
        # ServerSpans draws the root calls to trace (at `root_ratio`); a span
        # without a parent that gets this far is one to keep.
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(_counting_batch_processor(exporter, drops))
    trace.set_tracer_provider(provider)
    # Registers a pymongo command listener: only clients created after this see it.
    PymongoInstrumentor().instrument(tracer_provider=provider)
    _active = Tracing(provider, exporter, drops, root_ratio)
    endpoint = next(environ[name] for name in ENDPOINT_VARIABLES if environ.get(name, "").strip())
    log.info(
        "traces on: OTLP/gRPC to %s, sampler %s", endpoint, environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    )
    return _active


class _CountingExporter:
    """The OTLP exporter, counting the spans of every batch it could not deliver."""

    def __init__(self, exporter: Any, drops: DropCounts) -> None:
        self._exporter = exporter
        self._drops = drops

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = self._exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self._drops.add("export_failed", len(spans))
        return result

    def give_up(self) -> None:
        """Stop retrying: what is still queued fails at once (and is counted)."""
        self._exporter.shutdown(timeout_millis=0)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._exporter.shutdown(timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._exporter.force_flush(timeout_millis))


def _counting_batch_processor(exporter: _CountingExporter, drops: DropCounts) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class CountingBatchSpanProcessor(BatchSpanProcessor):
        """The SDK's batch processor, counting the spans a full queue drops
        (it logs only a warning). Its queue is a bounded deque it appends to
        without waiting: a call never waits for the exporter."""

        def on_end(self, span: Any) -> None:
            if span.context is not None and span.context.trace_flags.sampled:
                batch = self._batch_processor
                if len(batch._queue) >= batch._max_queue_size:
                    drops.add("queue_full", 1)
            super().on_end(span)

    return CountingBatchSpanProcessor(exporter)  # type: ignore[arg-type]
