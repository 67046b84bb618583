"""The reference servers the service is measured against, each run as its own
process (`python -m movieservice.bench ceiling MODE PORT RESPONSE_FILE`):
Get answered with a constant, pre-serialized GetResponse of the same size as
the service's answer, so that what separates the service from them is the
service's own work.

  aio          the stall-proof ceiling: the service's own grpc.aio server
               (grpcserver.server.new_server), on uvloop, answers leaving in
               batches (servicer.CompletionBatcher): the fastest constant
               server that keeps answering while calls stall (see the
               "Stalled calls" row)
  aio-uvloop   the same without the CompletionBatcher
  aio-plain    the same on asyncio's own event loop, without the batcher
  threaded     grpcio's threaded server (16 threads), which a few stalled
               calls stop: reported, as the speed the rewrite gave up and won
               back

And `python -m movieservice.bench unfrozen`: the service itself, configured
as usual by its environment, without `gc.freeze()` after start-up, for the
row that shows what that bought.

And the Redis-hit servers of the auto-pipelining comparison
(`python -m movieservice.bench redis-hits PORT REDIS_URL KEY TURNS`): the
aio ceiling whose handler first reads a cached movie with one HMGET through
cache.pipelining.AutoPipeline with `TURNS` batch turns, as the service's
Get does on a Redis hit, and answers with it.

All of them have one generic handler for movies.v1.MovieService/Get and
nothing else. grpc.aio's `add_registered_method_handlers` is not used:
measured, a registered method cost ~18 us more per call than a generic one.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from movieservice.proto.movies.v1 import movies_pb2

AIO_MODES = ("aio", "aio-uvloop", "aio-plain")
MODES = (*AIO_MODES, "threaded")
SERVICE_NAME = "movies.v1.MovieService"
THREADED_WORKERS = 16
# How long a Redis-hit server waits at start for the cached movie to be there
# (the service fills its cache in the background after the first Get).
_KEY_WAIT_SECONDS = 10.0


def serve_ceiling(mode: str, port: int, response_file: Path) -> int:
    body = response_file.read_bytes()
    if mode == "threaded":
        return _serve_threaded(port, body)
    if mode not in AIO_MODES:
        raise ValueError(f"unknown ceiling mode {mode!r}; one of {', '.join(MODES)}")
    batched = mode == "aio"

    def handler() -> Callable[[Any, Any], Awaitable[bytes]]:
        from movieservice.grpcserver.servicer import CompletionBatcher

        batcher = CompletionBatcher()

        async def get(request: Any, context: Any) -> bytes:
            if batched:
                await batcher.released()
            return body

        return get

    return _run_aio(port, handler, uvloop=mode != "aio-plain")


def serve_redis_hits(port: int, redis_url: str, key: str, turns: int) -> int:
    def handler() -> Callable[[Any, Any], Awaitable[bytes]]:
        from movieservice.cache.pipelining import AutoPipeline
        from movieservice.cache.redis_cache import redis_pool
        from movieservice.grpcserver.servicer import CompletionBatcher
        from movieservice.grpcserver.wire import get_response

        redis = AutoPipeline(redis_pool(redis_url, 0.5).make_connection, timeout_seconds=0.5, batch_turns=turns)
        batcher = CompletionBatcher()

        async def get(request: Any, context: Any) -> bytes:
            _version, movie = await redis.execute("HMGET", key, "v", "b")
            await batcher.released()
            return get_response(movie)

        return get

    async def key_is_there() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            for _ in range(int(_KEY_WAIT_SECONDS / 0.1)):
                if await client.hget(key, "b"):
                    return
                await asyncio.sleep(0.1)
            raise SystemExit(f"redis-hits: {key} has no cached movie in {redis_url}")
        finally:
            await client.aclose()

    return _run_aio(port, handler, uvloop=True, before=key_is_there)


def _run_aio(
    port: int,
    make_handler: Callable[[], Callable[[Any, Any], Awaitable[bytes]]],
    *,
    uvloop: bool,
    before: Callable[[], Awaitable[None]] | None = None,
) -> int:
    from movieservice.config import Settings
    from movieservice.grpcserver.server import listen, new_server, settle_garbage_collector

    async def serve() -> None:
        if before is not None:
            await before()
        settings = Settings(grpc_host="127.0.0.1", grpc_port=port)
        server = new_server(settings)
        server.add_generic_rpc_handlers((_generic_handler(make_handler()),))
        listen(server, settings)
        await server.start()
        settle_garbage_collector()  # as the service does
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    if uvloop:
        import uvloop as uvloop_module

        uvloop_module.install()
    asyncio.run(serve())
    return 0


def _serve_threaded(port: int, body: bytes) -> int:
    from movieservice.grpcserver.server import settle_garbage_collector

    server = grpc.server(ThreadPoolExecutor(max_workers=THREADED_WORKERS), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_generic_handler(lambda request, context: body),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    settle_garbage_collector()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)
    return 0


def serve_unfrozen() -> int:
    """`movieservice serve` with start-up's objects left to the garbage
    collector (grpcserver.server.settle_garbage_collector made a no-op)."""
    from movieservice import cli
    from movieservice.grpcserver import server

    server.settle_garbage_collector = lambda: None
    return cli.main(["serve"])


def _generic_handler(behavior: Callable[[Any, Any], Any]) -> grpc.GenericRpcHandler:
    # Response serializer None: the handler returns the serialized response itself.
    get: grpc.RpcMethodHandler[Any, bytes]
    get = grpc.unary_unary_rpc_method_handler(behavior, movies_pb2.GetRequest.FromString, None)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Get": get})
