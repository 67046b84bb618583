"""The Prometheus interceptor counts every outcome with the code the client saw.

A tiny generic service stands in for the real one so that each outcome can be
provoked directly: success, context.abort, an exception escaping the handler,
an expired deadline, a cancelled call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from movieservice.grpcserver.interceptor import PrometheusInterceptor
from movieservice.grpcserver.registrar import Registrar
from movieservice.metrics import GrpcMetrics

SERVICE = "test.v1.Dummy"
release = threading.Event()


async def ok(request: bytes, context: Any) -> bytes:
    return request


async def aborts(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
    raise AssertionError("abort returned")


async def raises(request: bytes, context: Any) -> bytes:
    raise RuntimeError("a bug")


async def sets_code(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    context.set_details("not now")
    return b""


async def slow(request: bytes, context: Any) -> bytes:
    deadline = time.monotonic() + 5
    while not release.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return request


HANDLERS = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
            {"Ok": ok, "Aborts": aborts, "Raises": raises, "SetsCode": sets_code, "Slow": slow}.items()}  # fmt: skip


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="module")
def channel(registry, server_loop) -> Iterator[grpc.Channel]:
    metrics = GrpcMetrics(registry, (0.005, 0.1, 1.0))

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        Registrar(server, [PrometheusInterceptor(metrics)]).add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, HANDLERS)]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = server_loop.run(start())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    release.set()
    server_loop.run(server.stop(None))


def call(channel: grpc.Channel, method: str, **kwargs) -> grpc.StatusCode:
    try:
        channel.unary_unary(f"/{SERVICE}/{method}")(b"x", **kwargs)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def value(registry: CollectorRegistry, name: str, method: str, **labels: str) -> float:
    sample = registry.get_sample_value(
        name, {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method, **labels}
    )
    return sample or 0.0


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("Ok", grpc.StatusCode.OK),
        ("Aborts", grpc.StatusCode.NOT_FOUND),
        ("Raises", grpc.StatusCode.UNKNOWN),
        ("SetsCode", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_each_outcome_is_counted_with_the_clients_code(channel, registry, method, code):
    for _ in range(3):
        assert call(channel, method) == code
    assert value(registry, "grpc_server_started_total", method) == 3
    # An aborted call is counted once its status is on its way: a moment after the client may have it.
    wait_for(lambda: value(registry, "grpc_server_handled_total", method, grpc_code=code.name) == 3)
    assert value(registry, "grpc_server_msg_received_total", method) == 3
    assert value(registry, "grpc_server_msg_sent_total", method) == (3 if code is grpc.StatusCode.OK else 0)
    assert value(registry, "grpc_server_handling_seconds_count", method) == 3


def test_deadline_exceeded_is_counted_as_such(channel, registry):
    release.clear()
    assert call(channel, "Slow", timeout=0.2) == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.3)
    release.set()
    wait_for(lambda: value(registry, "grpc_server_handled_total", "Slow", grpc_code="DEADLINE_EXCEEDED") == 1)
    assert value(registry, "grpc_server_handled_total", "Slow", grpc_code="OK") == 0


def test_cancelled_calls_are_counted_as_such(channel, registry):
    release.clear()
    future = channel.unary_unary(f"/{SERVICE}/Slow").future(b"x", timeout=10)
    time.sleep(0.2)
    future.cancel()
    time.sleep(0.2)  # the server learns of the cancellation while the handler still works
    release.set()
    wait_for(
        lambda: value(registry, "grpc_server_handled_total", "Slow", grpc_code="CANCELLED") == 1,
        lambda: {
            c.name: value(registry, "grpc_server_handled_total", "Slow", grpc_code=c.name)
            for c in grpc.StatusCode
            if value(registry, "grpc_server_handled_total", "Slow", grpc_code=c.name)
        },
    )


def test_unknown_methods_are_not_instrumented(channel, registry):
    assert call(channel, "NoSuchMethod") == grpc.StatusCode.UNIMPLEMENTED
    assert value(registry, "grpc_server_started_total", "NoSuchMethod") == 0


def test_the_wrapped_handler_is_built_once_per_method():
    """Wrapping happens when a method is first looked up, never again on later calls."""
    wrapped: list[str] = []

    class Wrapper:
        def wrap(self, method, handler):
            wrapped.append(method)
            return handler

    class Server:
        def add_generic_rpc_handlers(self, handlers):
            self.handlers = handlers

    class Details:
        method = f"/{SERVICE}/Ok"

    server = Server()
    Registrar(server, [Wrapper()]).add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, HANDLERS)])
    (generic,) = server.handlers
    first = generic.service(Details())
    assert generic.service(Details()) is first
    assert wrapped == [f"/{SERVICE}/Ok"]


def wait_for(condition, explain=lambda: "", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, explain()
        time.sleep(0.02)
