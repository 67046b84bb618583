"""The auto-pipeline (internal/cache/pipelining.py) against a real redis-server,
on uvloop as the service runs it: whatever happens to the connection, the
next command after Redis is back gets an answer.

Every Redis command of a process goes through this one connection; if sending
ever stopped for good, every later command would wait forever (the breaker's
probe too, so the service would never use Redis again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from movieservice.cache.pipelining import AutoPipeline
from movieservice.cache.redis_cache import redis_pool
from movieservice.devstack.processes import ServerProcess
from tests.support.proxy import FaultProxy

TIMEOUT = 0.5


@pytest.fixture
def proxy(redis_process: ServerProcess) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_process.port)
    yield proxy
    proxy.close()


def run_with_pipeline(port: int, scenario: Callable[[AutoPipeline], Awaitable[None]]) -> None:
    async def main() -> None:
        pool = redis_pool(f"redis://127.0.0.1:{port}/0", TIMEOUT)
        pipeline = AutoPipeline(pool.make_connection, timeout_seconds=TIMEOUT)
        try:
            await asyncio.wait_for(scenario(pipeline), 60)
        finally:
            await pipeline.close()
            await pool.aclose()

    uvloop.run(main())


async def answered_soon(pipeline: AutoPipeline, within: float = 5.0) -> Any:
    """The reply to PING once Redis answers again, failing if it never does."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.wait_for(pipeline.execute("PING"), within)
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def test_commands_are_answered_after_every_outage(proxy: FaultProxy) -> None:
    async def scenario(pipeline: AutoPipeline) -> None:
        stop = asyncio.Event()

        async def traffic() -> None:
            # Commands in flight while connections are cut, as under load.
            while not stop.is_set():
                await asyncio.gather(*(pipeline.execute("GET", f"k{n}") for n in range(20)), return_exceptions=True)
                await asyncio.sleep(0)

        clients = [asyncio.ensure_future(traffic()) for _ in range(4)]
        for _ in range(25):
            proxy.refuse()
            await asyncio.sleep(0.02)
            proxy.forward()
            assert await answered_soon(pipeline) == b"PONG"
        stop.set()
        await asyncio.gather(*clients)

    run_with_pipeline(proxy.port, scenario)


def test_a_connection_closed_before_its_loss_is_reported_is_replaced(redis_process: ServerProcess) -> None:
    """uvloop refuses writes to a closed transport; the loss is reported a turn later."""

    async def scenario(pipeline: AutoPipeline) -> None:
        assert await pipeline.execute("PING") == b"PONG"
        transport = pipeline._transport
        assert transport is not None
        transport.set_protocol(asyncio.Protocol())  # the pipeline never hears of this close
        transport.close()
        assert await asyncio.wait_for(pipeline.execute("PING"), 5) == b"PONG"
        assert pipeline._transport is not transport

    run_with_pipeline(redis_process.port, scenario)


def test_an_unexpected_error_fails_its_batch_and_not_the_next(
    redis_process: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(pipeline: AutoPipeline) -> None:
        connect = pipeline._connected
        failures = iter([RuntimeError("something nobody expected")])

        async def connected_once_broken() -> asyncio.Transport:
            for error in failures:
                raise error
            return await connect()

        monkeypatch.setattr(pipeline, "_connected", connected_once_broken)
        with pytest.raises(RedisConnectionError, match="something nobody expected"):
            await asyncio.wait_for(pipeline.execute("PING"), 5)
        assert await asyncio.wait_for(pipeline.execute("PING"), 5) == b"PONG"

    run_with_pipeline(redis_process.port, scenario)


def test_an_unanswered_batch_resets_the_connection_even_when_its_callers_gave_up(proxy: FaultProxy) -> None:
    async def scenario(pipeline: AutoPipeline) -> None:
        assert await pipeline.execute("PING") == b"PONG"
        first = pipeline._transport
        proxy.forward(delay_seconds=3 * TIMEOUT)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pipeline.execute("PING"), TIMEOUT / 5)  # the caller gives up
        await asyncio.sleep(TIMEOUT * 1.5)
        assert pipeline._transport is None, "Redis did not answer in time: the connection must be dropped"
        proxy.forward()
        assert await answered_soon(pipeline) == b"PONG"
        assert pipeline._transport is not first

    run_with_pipeline(proxy.port, scenario)
