"""A gRPC server interceptor exporting go-grpc-prometheus' metrics.

Same names and labels as github.com/grpc-ecosystem/go-grpc-prometheus, so
existing Grafana dashboards and alerts work unchanged:

  grpc_server_started_total{grpc_type, grpc_service, grpc_method}
  grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
  grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}   (histogram)
  grpc_server_msg_received_total{grpc_type, grpc_service, grpc_method}
  grpc_server_msg_sent_total{grpc_type, grpc_service, grpc_method}

Every outcome is counted with the code the client sees: OK, a code set with
`context.abort`/`set_code`, UNKNOWN for an exception escaping the handler,
DEADLINE_EXCEEDED or CANCELLED when the call ended before the handler did.
The wrapped handler and its label children are built once per method, not
on every call. Unary-unary methods only (all of MovieService's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

# prometheus_client's defaults, which are also go-grpc-prometheus' (prometheus.DefBuckets).
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_CODES = {code: code.name for code in grpc.StatusCode}
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


class GrpcMetrics:
    """The metric families; create once per process (a registry rejects duplicates)."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS, registry: CollectorRegistry = REGISTRY) -> None:
        self.started = Counter(
            "grpc_server_started_total", "Total number of RPCs started on the server.", _LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            _LABELS,
            buckets=buckets,
            registry=registry,
        )
        registry.register(UnaryMessageCounts(self.started, self.handled))


class UnaryMessageCounts(Collector):
    """grpc_server_msg_received_total and grpc_server_msg_sent_total, derived.

    For unary RPCs go-grpc-prometheus counts one message received per call
    started and one sent per call handled with OK, so these two are exported
    from those counters instead of being counted again on every call: two
    counter increments less on the hot path, and the same numbers.
    `source` collectors (the two counters, or a multiprocess collector) yield
    grpc_server_started_total and grpc_server_handled_total.
    """

    def __init__(self, *sources: Any) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            labels=_LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", labels=_LABELS
        )
        for source in self._sources:
            for family in source.collect():
                for sample in family.samples:
                    labels = sample.labels
                    if sample.name == "grpc_server_started_total" and labels.get("grpc_type") == "unary":
                        received.add_metric([labels[name] for name in _LABELS], sample.value)
                    elif (
                        sample.name == "grpc_server_handled_total"
                        and labels.get("grpc_type") == "unary"
                        and labels.get("grpc_code") == "OK"
                    ):
                        sent.add_metric([labels[name] for name in _LABELS], sample.value)
        yield received
        yield sent

    def describe(self) -> Iterator[Metric]:
        # Described without collecting, so registering does not read the sources.
        yield CounterMetricFamily("grpc_server_msg_received_total", "", labels=_LABELS)
        yield CounterMetricFamily("grpc_server_msg_sent_total", "", labels=_LABELS)


class PrometheusInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    def initialize(self, methods: Iterable[str]) -> None:
        """Create every series of `methods` ("/package.Service/Method") at 0, as
        go-grpc-prometheus' InitializeMetrics does: a counter that appears at 1
        shows no increase."""
        for method in methods:
            labels = _labels(method)
            m = self._metrics
            for family in (m.started, m.handling_seconds):
                family.labels(*labels)
            for code in _CODES.values():
                m.handled.labels(*labels, code)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown method (UNIMPLEMENTED) or a streaming one: not instrumented
        wrapped = self._wrap(method, handler)
        with self._lock:
            self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        labels = _labels(method)
        m = self._metrics
        started = m.started.labels(*labels)
        latency = m.handling_seconds.labels(*labels)
        handled = {code: m.handled.labels(*labels, name) for code, name in _CODES.items()}
        behavior: Callable[[Any, Any], Any] = handler.unary_unary  # type: ignore[assignment]

        def instrumented(request: Any, context: Any) -> Any:
            started.inc()
            begin = time.perf_counter()
            try:
                response = behavior(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                handled[_ended_early(context) or code].inc()
                latency.observe(time.perf_counter() - begin)
                raise
            code = context.code() or grpc.StatusCode.OK
            code = _ended_early(context) or code
            handled[code].inc()
            latency.observe(time.perf_counter() - begin)
            return response

        return grpc.unary_unary_rpc_method_handler(
            instrumented,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _labels(method: str) -> tuple[str, str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return ("unary", service, name)


def _ended_early(context: Any) -> grpc.StatusCode | None:
    """The code the client got if the call ended before the handler returned."""
    if context.is_active():
        return None
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
