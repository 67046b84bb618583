"""Clients that hold a server's resources without doing anything: unary Gets
whose HEADERS were sent but whose request message never is (a stream-unary
call on a request iterator that never yields), and grpc.health.v1 Watch
streams that are never read. What a frozen client, a bad mobile link or a
proxy that opens streams early leaves on a server.

Used by the tests (`StalledClients`, in the test process) and the benchmark
(`python -m movieservice.devstack.hostile TARGET CALLS CONNECTIONS STREAMS`,
a process of its own pinned to the load core; it prints "ready" once
everything is open and holds it until killed).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from movieservice.proto.movies.v1 import movies_pb2

GET = "/movies.v1.MovieService/Get"
READY = "ready"


class Held:
    """The channels, calls and streams `hold` opened; `close()` ends them."""

    def __init__(self, channels: list[grpc.aio.Channel], calls: list[Any], streams: list[Any]) -> None:
        self.channels, self.calls, self.streams = channels, calls, streams

    @property
    def still_open(self) -> int:
        """How many of the calls and streams the server has not ended."""
        return sum(not call.done() for call in [*self.calls, *self.streams])

    async def close(self) -> None:
        for call in [*self.calls, *self.streams]:
            call.cancel()
        for channel in self.channels:
            await channel.close()


async def hold(target: str, *, calls: int, connections: int, streams: int) -> Held:
    """Open `calls` stalled Gets and `streams` idle Watch streams over `connections` connections."""
    # A connection per channel: a local subchannel pool, and arguments that
    # differ (grpc shares a connection between channels with equal arguments).
    channels = [
        grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1), ("movieservice.hostile.connection", number)]
        )
        for number in range(connections)
    ]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    never = asyncio.Event()

    async def request_never_sent() -> AsyncIterator[movies_pb2.GetRequest]:
        await never.wait()
        yield movies_pb2.GetRequest()

    stalled = [
        channels[number % connections].stream_unary(
            GET,
            request_serializer=movies_pb2.GetRequest.SerializeToString,
            response_deserializer=movies_pb2.GetResponse.FromString,
        )(request_never_sent())
        for number in range(calls)
    ]
    watches = [
        health_pb2_grpc.HealthStub(channels[number % connections]).Watch(health_pb2.HealthCheckRequest())
        for number in range(streams)
    ]
    # A Watch's server sends its initial metadata with the first status: once
    # every one has it, the streams are open; the stalled calls' HEADERS went
    # out before them on the same connections.
    await asyncio.gather(*(watch.initial_metadata() for watch in watches))
    await asyncio.sleep(0.5)
    return Held(channels, stalled, watches)


class StalledClients:
    """`hold` on an event loop of its own, for a block of blocking code."""

    def __init__(self, target: str, *, calls: int = 1000, connections: int = 10, idle_streams: int = 100) -> None:
        self._args = (target, calls, connections, idle_streams)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stalled-clients", daemon=True)
        self._held: Held | None = None

    def __enter__(self) -> StalledClients:
        target, calls, connections, streams = self._args
        self._thread.start()
        opening = hold(target, calls=calls, connections=connections, streams=streams)
        self._held = asyncio.run_coroutine_threadsafe(opening, self._loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held is not None:
            asyncio.run_coroutine_threadsafe(self._held.close(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def still_open(self) -> int:
        return self._held.still_open if self._held is not None else 0


def established_connections(port: int | str, *, to_server: bool = False) -> int:
    """Established TCP connections on 127.0.0.1:`port`: the server's ends, or
    with `to_server` the clients' ends (by ss)."""
    side = "dport" if to_server else "sport"
    result = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( {side} = :{port} )"], capture_output=True, text=True, check=True
    )
    return sum(1 for line in result.stdout.splitlines() if line.strip())


def main(argv: Sequence[str]) -> int:
    target, calls, connections, streams = argv[0], *(int(a) for a in argv[1:4])

    async def run() -> None:
        held = await hold(target, calls=calls, connections=connections, streams=streams)
        print(READY, len(held.calls), len(held.streams), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
