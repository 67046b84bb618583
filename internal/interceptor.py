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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

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
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _LABELS,
            registry=registry,
        )


class PrometheusInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

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
        service, _, name = method.lstrip("/").rpartition("/")
        labels = ("unary", service, name)
        m = self._metrics
        started = m.started.labels(*labels)
        received = m.received.labels(*labels)
        sent = m.sent.labels(*labels)
        latency = m.handling_seconds.labels(*labels)
        handled = {code: m.handled.labels(*labels, name) for code, name in _CODES.items()}
        behavior: Callable[[Any, Any], Any] = handler.unary_unary  # type: ignore[assignment]

        def instrumented(request: Any, context: Any) -> Any:
            started.inc()
            received.inc()
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
            if code is grpc.StatusCode.OK:
                sent.inc()
            latency.observe(time.perf_counter() - begin)
            return response

        return grpc.unary_unary_rpc_method_handler(
            instrumented,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _ended_early(context: Any) -> grpc.StatusCode | None:
    """The code the client got if the call ended before the handler returned."""
    if context.is_active():
        return None
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
