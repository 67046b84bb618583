"""Auto-pipelining: every Redis command of this process goes over one
connection, and the commands issued within a few turns of the event loop are
written together and answered together, as rueidis (Go) and ioredis (Node)
do. Measured here (BENCHMARKS.md): a Redis command costs the process ~60 us of
CPU sent alone, a fraction of that within a batch, and a Redis hit is mostly
that cost.

The connection is redis-py's own (URL parsing, AUTH, TLS, the hiredis reply
parser); this module only decides when to write and matches replies to
callers, in order, as Redis answers a connection's commands in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from hiredis import pack_command
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)

# How many turns of the event loop a command waits for others to join its
# batch. Each turn lets the loop take in more gRPC events (other calls
# reaching the same point), so batches grow with the load; when idle, a turn
# costs about a microsecond. Chosen with the benchmark (BENCHMARKS.md).
BATCH_TURNS = 16


class AutoPipeline:
    """One connection shared by every caller; `execute(*args)` returns the reply.

    Errors: the command's own error reply (ResponseError), or a connection
    error or timeout (redis-py's ConnectionError/TimeoutError) for every
    command in flight when the connection failed; the next command reconnects.
    """

    def __init__(self, connect: Callable[[], AbstractConnection], *, batch_turns: int = BATCH_TURNS) -> None:
        self._connect = connect
        self._turns = batch_turns
        self._connection: AbstractConnection | None = None
        self._queued: list[tuple[Any, ...]] = []
        self._waiting: list[asyncio.Future[Any]] = []
        # Sent and not answered yet, in the order Redis will answer them.
        self._in_flight: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._work = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; await the result for its reply."""
        if self._closed:
            raise RedisConnectionError("the Redis connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append(args)
        self._waiting.append(future)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_batches())
        self._work.set()
        return future

    async def _write_batches(self) -> None:
        while True:
            await self._work.wait()
            for _ in range(self._turns):
                await asyncio.sleep(0)
            self._work.clear()
            commands, futures = self._queued, self._waiting
            self._queued, self._waiting = [], []
            try:
                connection = await self._connected()
                # hiredis packs in C; redis-py's asyncio connection packs in Python (~10 us a command).
                packed = b"".join([pack_command(command) for command in commands])
                self._in_flight.extend(futures)
                await connection.send_packed_command(packed, check_health=False)
            except (RedisError, OSError) as error:
                for future in futures:
                    _fail(future, error)
                self._reset(error)
                continue
            if self._reader is None or self._reader.done():
                self._reader = asyncio.ensure_future(self._read_replies(connection))

    async def _connected(self) -> AbstractConnection:
        if self._connection is None:
            connection = self._connect()
            await connection.connect()  # type: ignore[no-untyped-call]
            self._connection = connection
        return self._connection

    async def _read_replies(self, connection: AbstractConnection) -> None:
        """Read while commands are in flight, each reply for the oldest one.
        A reply that does not come within the connection's socket timeout
        fails every command in flight: later replies would be misattributed."""
        while self._in_flight and connection is self._connection:
            try:
                reply = await connection.read_response()
            except ResponseError as error:
                reply = error
            except (RedisError, OSError) as error:
                self._reset(error)
                return
            future = self._in_flight.popleft()
            if not future.done():
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def _reset(self, error: BaseException) -> None:
        """Drop the connection and fail what it had in flight."""
        connection, self._connection = self._connection, None
        in_flight, self._in_flight = self._in_flight, collections.deque()
        for future in in_flight:
            _fail(future, error)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader = None
        if connection is not None:
            closing = asyncio.ensure_future(connection.disconnect(nowait=True))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        log.debug("Redis connection dropped: %s", error)

    async def close(self) -> None:
        self._closed = True
        for task in (self._writer, self._reader):
            if task is not None:
                task.cancel()
        error = RedisConnectionError("the Redis connection is closed")
        for future in self._waiting:
            _fail(future, error)
        self._reset(error)
        if self._closing:
            await asyncio.wait(set(self._closing))


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error if isinstance(error, RedisError) else RedisConnectionError(str(error)))
