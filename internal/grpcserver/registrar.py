"""Adding services to the server: every method handler passes through the
method wrappers (the metrics interceptor) once, when it is first looked up,
and every service is registered as a generic handler only.

Why not grpc.aio's "registered methods": for each registered method the aio
server keeps a pending request future and runs `asyncio.wait` over all of
them on every incoming call; with MovieService's four methods plus health's
and reflection's, that cost ~18 us of CPU per call (BENCHMARKS.md), more than
finding the handler among three generic handlers by name. The generated
`add_*_to_server` functions register both ways; this keeps the generic one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


class MethodWrapper(Protocol):
    def wrap(self, method: str, handler: Handler) -> Handler: ...


class Registrar:
    """Stands in for the server where services are added (`add_*_to_server(servicer, registrar)`)."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[MethodWrapper] = ()) -> None:
        self._server = server
        self._wrappers = tuple(wrappers)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_Wrapped(h, self._wrappers) for h in generic_rpc_handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Handler]) -> None:
        """Deliberately ignored: the same handlers come as a generic handler too (see the module docstring)."""


class _Wrapped(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, wrappers: Sequence[MethodWrapper]) -> None:
        self._inner = inner
        self._wrappers = wrappers
        self._handlers: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        try:
            return self._handlers[method]
        except KeyError:
            pass
        handler = self._inner.service(handler_call_details)
        if handler is not None:
            for wrapper in self._wrappers:
                handler = wrapper.wrap(method, handler)
        # Only known methods are remembered: unknown names must not grow the table.
        if handler is not None:
            self._handlers[method] = handler
        return handler
