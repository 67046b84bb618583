"""The service in this test process: apps served by grpc.aio on one event
loop that runs on a thread of its own for the whole session (grpc.aio binds
its completion queue to the first loop that uses it), so that tests call it
with ordinary blocking gRPC clients and can still reach into it with
`loop.run(coroutine)`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
import uvloop

from movieservice.app import App
from movieservice.grpcserver.server import create_server

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="server-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run `coroutine` on the loop and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class ServedApp:
    """An App built on the loop and served on a free port (its settings' GRPC_PORT 0)."""

    def __init__(self, loop: LoopThread, build: Callable[[], App], *, warm_up: bool = True) -> None:
        self.loop = loop

        async def start() -> tuple[App, grpc.aio.Server, int]:
            app = build()
            server, port = create_server(app.settings, app)
            await app.start(warm_up=warm_up)
            await server.start()
            return app, server, port

        self.app, self.server, self.port = loop.run(start())

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self.loop.run(coroutine, timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        async def stop() -> None:
            await self.server.stop(grace)
            await self.app.close()

        self.loop.run(stop())
