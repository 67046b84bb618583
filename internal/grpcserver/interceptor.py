"""A grpc.aio server interceptor exporting go-grpc-prometheus' metrics.

Same names and labels as github.com/grpc-ecosystem/go-grpc-prometheus, so
existing Grafana dashboards and alerts work unchanged (the families are in
movieservice.metrics.GrpcMetrics):

  grpc_server_started_total{grpc_type, grpc_service, grpc_method}
  grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
  grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}   (histogram)
  grpc_server_msg_received_total, grpc_server_msg_sent_total            (derived)

Every outcome is counted with the code the client sees: OK, the code of an
abort, UNKNOWN for an exception escaping the handler, DEADLINE_EXCEEDED or
CANCELLED when the call ended before the handler did. The wrapped handler and
its label children are built once per method, not on every call. Unary-unary
methods only (all of MovieService's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace

from movieservice import tracing
from movieservice.metrics import GrpcMetrics, grpc_labels

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
_CODES = {code: code.name for code in grpc.StatusCode}


class MethodObserver:
    """The metrics of one method, label children bound once: `start()` when a
    call begins, `end(started, code)` with the code its client gets."""

    __slots__ = ("_handled", "_latency", "_started")

    def __init__(self, metrics: GrpcMetrics, method: str) -> None:
        labels = grpc_labels(method)
        self._started = metrics.started.labels(*labels)
        self._latency = metrics.handling_seconds.labels(*labels)
        self._handled = {code: metrics.handled.labels(*labels, name) for code, name in _CODES.items()}

    def start(self) -> float:
        self._started.inc()
        return time.perf_counter()

    def end(self, started: float, code: grpc.StatusCode) -> None:
        self._handled[code].inc()
        self._latency.observe(time.perf_counter() - started)


class TracedMethodObserver(MethodObserver):
    """A MethodObserver for a server whose calls are traced: each sampled
    call's latency keeps its trace id as an exemplar of its bucket
    (grpc_server_handling_seconds, OpenMetrics), so a dashboard can go from a
    slow bucket to a slow trace. Chosen once, when traces are on: the
    observers of a server without traces do not even look for a span."""

    __slots__ = ()

    def end(self, started: float, code: grpc.StatusCode) -> None:
        self._handled[code].inc()
        elapsed = time.perf_counter() - started
        context = trace.get_current_span().get_span_context()
        if context.trace_flags.sampled:
            self._latency.observe_traced(elapsed, context.trace_id)
        else:
            self._latency.observe(elapsed)


class NoObserver:
    """What a call reports when metrics are off."""

    __slots__ = ()

    def start(self) -> float:
        return 0.0

    def end(self, started: float, code: grpc.StatusCode) -> None:
        pass


class PrometheusInterceptor:
    """Observes every call of every service.

    MovieService's own calls report to `observer(method)` from inside the
    servicer's one wrapper (servicer.py); every other unary handler (health's
    Check, say) is wrapped once, at registration (`wrap`, see registrar.py).
    Not a grpc.aio.ServerInterceptor: grpc.aio runs those on every call as a
    chain of coroutines before the handler is found, and a layer of
    coroutine around every call costs CPU time of its own (BENCHMARKS.md).
    """

    def __init__(self, metrics: GrpcMetrics, *, exemplars: bool | None = None) -> None:
        """`exemplars`: record the trace ids of sampled calls (default: when this process' traces are on)."""
        self._metrics = metrics
        self._exemplars = tracing.active().enabled if exemplars is None else exemplars

    def observer(self, method: str) -> MethodObserver:
        if self._exemplars:
            return TracedMethodObserver(self._metrics, method)
        return MethodObserver(self._metrics, method)

    def wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is None:
            return handler  # streaming (health Watch, reflection): not instrumented
        observer = self.observer(method)
        behavior: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

        async def instrumented(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = observer.start()
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                observer.end(started, ended_early(context))
                raise
            except BaseException:
                observer.end(started, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            observer.end(started, context.code() or grpc.StatusCode.OK)
            return response

        return grpc.unary_unary_rpc_method_handler(
            instrumented,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def ended_early(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The code the client got when grpc.aio cancelled the handler: its deadline passed, or it cancelled."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
