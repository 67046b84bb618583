"""Clients that hold a server's resources without doing anything: unary calls
whose headers were sent but whose request never is, and server streams that
are never read. Held open by a grpc.aio client on an event loop of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class StalledClients:
    def __init__(self, target: str, *, calls: int = 1000, connections: int = 10, idle_streams: int = 100) -> None:
        self._target = target
        self._calls = calls
        self._connections = connections
        self._idle_streams = idle_streams
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stalled-clients", daemon=True)
        self._open: list[Any] = []
        self._channels: list[grpc.aio.Channel] = []
        self._never = asyncio.Event()

    def __enter__(self) -> StalledClients:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def still_open(self) -> int:
        """How many of the held calls and streams the server has not ended."""
        return sum(not call.done() for call in self._open)

    async def _start(self) -> None:
        # A subchannel pool of its own per channel: one TCP connection each.
        self._channels = [
            grpc.aio.insecure_channel(self._target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(self._connections)
        ]
        for channel in self._channels:
            await channel.channel_ready()
        never = self._never

        async def no_request() -> AsyncIterator[bytes]:
            await never.wait()
            yield b""

        for number in range(self._calls):
            channel = self._channels[number % self._connections]
            get = channel.stream_unary("/movies.v1.MovieService/Get")
            self._open.append(get(no_request()))
        for number in range(self._idle_streams):
            health = health_pb2_grpc.HealthStub(self._channels[number % self._connections])
            self._open.append(health.Watch(health_pb2.HealthCheckRequest(service="")))
        await asyncio.sleep(0.5)  # every header on the wire

    async def _stop(self) -> None:
        for call in self._open:
            call.cancel()
        for channel in self._channels:
            await channel.close()
