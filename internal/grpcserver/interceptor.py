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

from movieservice.metrics import GrpcMetrics, grpc_labels

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
_CODES = {code: code.name for code in grpc.StatusCode}


class PrometheusInterceptor:
    """Wraps each unary-unary method handler, once, at registration (see
    `Registrar`), so that every call of every service goes through it.

    Not a grpc.aio.ServerInterceptor: grpc.aio runs those on every call, as a
    chain of coroutines before the handler is found, and that chain alone cost
    ~25 us of CPU per call here (14% of a constant answer; BENCHMARKS.md).
    """

    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics

    def wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is None:
            return handler  # streaming (health Watch, reflection): not instrumented
        labels = grpc_labels(method)
        m = self._metrics
        started = m.started.labels(*labels)
        latency = m.handling_seconds.labels(*labels)
        handled = {code: m.handled.labels(*labels, name) for code, name in _CODES.items()}
        behavior: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

        async def instrumented(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started.inc()
            begin = time.perf_counter()
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                handled[_ended_early(context)].inc()
                latency.observe(time.perf_counter() - begin)
                raise
            except BaseException:
                handled[context.code() or grpc.StatusCode.UNKNOWN].inc()
                latency.observe(time.perf_counter() - begin)
                raise
            handled[context.code() or grpc.StatusCode.OK].inc()
            latency.observe(time.perf_counter() - begin)
            return response

        return grpc.unary_unary_rpc_method_handler(
            instrumented,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _ended_early(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The code the client got when grpc.aio cancelled the handler: its deadline passed, or it cancelled."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
