"""Auto-pipelining: every Redis command of this process goes over one
connection, and the commands issued within a few turns of the event loop are
written together and answered together, as rueidis (Go) and ioredis (Node)
do. Measured here (BENCHMARKS.md): a Redis command costs the process ~60 us of
CPU sent alone, a fraction of that within a batch, and a Redis hit is mostly
that cost.

redis-py opens the connection (URL, AUTH, SELECT, TLS, the handshake); then
its transport is handed to a protocol that feeds the replies straight to
hiredis and hands each to the oldest command waiting, since Redis answers a
connection's commands in order. redis-py's own read path awaits every reply
inside a timeout context, which cost more CPU than the rest of a Redis hit's
client side; here one timer per batch bounds how long Redis may take.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

# How many turns of the event loop a command waits for others to join its
# batch. Each turn lets the loop take in more gRPC events (other calls
# reaching the same point), so batches grow with the load; when idle, a turn
# costs a few microseconds. Chosen with the benchmark (BENCHMARKS.md).
BATCH_TURNS = 128
# ...but a batch leaves once this many turns in a row added no command to it.
# gRPC events reach the loop one wake-up at a time (grpc.aio's poller thread
# signals each), so under load a few turns often pass between two calls
# reaching Redis: measured on Get Redis hits (h2load -c8 -m16, one core, 11
# interleaved rounds), 32 quiet turns (with 32 for the answers, see
# grpcserver/servicer.py) took 0.84x the CPU per Get that 8 did (211 vs 252
# us); with one call at a time (ghz -c1) p50 stayed within noise (0.95 vs
# 1.02 ms).
QUIET_TURNS = 32


class AutoPipeline:
    """One connection shared by every caller; `execute(*args)` returns the reply.

    Errors: the command's own error reply (ResponseError and its kinds, such
    as NoScriptError), or a connection error or timeout (redis-py's
    ConnectionError/TimeoutError) for every command in flight when the
    connection failed or Redis did not answer within `timeout_seconds`; the
    next command reconnects.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        *,
        timeout_seconds: float,
        batch_turns: int = BATCH_TURNS,
        quiet_turns: int = QUIET_TURNS,
    ) -> None:
        self._connect = connect
        self._timeout = timeout_seconds
        self._turns = batch_turns
        self._quiet_turns = quiet_turns
        self._transport: asyncio.Transport | None = None
        self._connection: AbstractConnection | None = None
        self._queued: list[tuple[Any, ...]] = []
        self._waiting: list[asyncio.Future[Any]] = []
        # Sent and not answered yet, in the order Redis will answer them.
        self._in_flight: collections.deque[asyncio.Future[Any]] = collections.deque()
        # Commands written to and replies read from the current connection.
        self._sent = 0
        self._received = 0
        # A batch is gathering (its turns are scheduled on the loop).
        self._gathering = False
        # Batches waiting for a connection, in order, while one is opened.
        self._unsent: list[tuple[list[tuple[Any, ...]], list[asyncio.Future[Any]]]] = []
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; await the result for its reply."""
        if self._closed:
            raise RedisConnectionError("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append(args)
        self._waiting.append(future)
        if not self._gathering:
            self._gathering = True
            loop.call_soon(self._turn, loop, 1, len(self._queued), 0)
        return future

    def _turn(self, loop: asyncio.AbstractEventLoop, turn: int, seen: int, quiet: int) -> None:
        """One turn of the loop while a batch gathers: callbacks, not a task
        sleeping turn after turn, since a turn costs a handle, not a task step."""
        queued = len(self._queued)
        quiet = quiet + 1 if queued == seen else 0
        if turn < self._turns and quiet < self._quiet_turns:
            loop.call_soon(self._turn, loop, turn + 1, queued, quiet)
            return
        self._gathering = False
        commands, futures = self._queued, self._waiting
        self._queued, self._waiting = [], []
        transport = self._transport
        if transport is not None and transport.is_closing():
            # Closed by the peer before its connection_lost ran (uvloop
            # raises on writing to a closed transport): start afresh.
            self._lost(RedisConnectionError("the Redis connection was closed"))
            transport = None
        if transport is None or self._unsent:
            self._unsent.append((commands, futures))
            if self._connecting is None or self._connecting.done():
                self._connecting = loop.create_task(self._connect_and_send())
            return
        self._send(loop, transport, commands, futures)

    async def _connect_and_send(self) -> None:
        try:
            transport = await self._connected()
        except Exception as error:  # these commands failed; the next ones try again
            if not isinstance(error, (RedisError, OSError)):
                log.warning("connecting to Redis failed unexpectedly", exc_info=True)
            unsent, self._unsent = self._unsent, []
            for _, futures in unsent:
                for future in futures:
                    _fail(future, error)
            return
        loop = asyncio.get_running_loop()
        while self._unsent and self._transport is transport:
            commands, futures = self._unsent.pop(0)
            self._send(loop, transport, commands, futures)
        # Left only if that connection was lost meanwhile.
        unsent, self._unsent = self._unsent, []
        for _, futures in unsent:
            for future in futures:
                _fail(future, RedisConnectionError("the Redis connection was lost"))

    def _send(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        commands: list[tuple[Any, ...]],
        futures: list[asyncio.Future[Any]],
    ) -> None:
        try:
            # hiredis packs in C; redis-py's asyncio connection packs in Python (~10 us a command).
            payload = b"".join([hiredis.pack_command(command) for command in commands])
        except Exception as error:  # a command Redis cannot take (a bad argument): only this batch fails
            log.warning("a Redis batch could not be encoded", exc_info=True)
            for future in futures:
                _fail(future, error)
            return
        self._in_flight.extend(futures)
        self._sent += len(futures)
        try:
            transport.write(payload)
        except (RuntimeError, OSError) as error:  # uvloop: RuntimeError once closed; the stream is lost
            self._lost(RedisConnectionError(f"writing to Redis failed: {error}"))
            return
        loop.call_later(self._timeout, self._check_answered, self._sent, transport)

    async def _connected(self) -> asyncio.Transport:
        connection = self._connect()
        await connection.connect()  # type: ignore[no-untyped-call]
        # The handshake is done: from here on this module reads and writes.
        transport: asyncio.Transport = connection._writer.transport  # type: ignore[union-attr,assignment]
        transport.set_protocol(_Replies(self, transport))
        if transport.is_closing():
            raise RedisConnectionError("the Redis connection closed during the handshake")
        self._transport = transport
        self._sent = self._received = 0
        # Kept while the transport lives: its stream writer closes the transport when collected.
        self._connection = connection
        return transport

    def _answered(self, reply: Any) -> None:
        if not self._in_flight:
            self._lost(RedisConnectionError("Redis sent a reply nobody asked for"))
            return
        future = self._in_flight.popleft()
        self._received += 1
        if future.done():  # its caller was cancelled meanwhile
            return
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
        else:
            future.set_result(reply)

    def _check_answered(self, sent: int, transport: asyncio.Transport) -> None:
        """A batch's last reply must have come by now (whether or not its
        caller still waits for it): later replies would be misattributed
        after a reset, so a late one resets the connection."""
        if transport is self._transport and self._received < sent:
            self._lost(RedisTimeoutError(f"Redis did not answer within {self._timeout:g} s"))

    def _lost(self, error: BaseException) -> None:
        """Drop the connection and fail what it had in flight."""
        transport, self._transport, self._connection = self._transport, None, None
        in_flight, self._in_flight = self._in_flight, collections.deque()
        for future in in_flight:
            _fail(future, error)
        if transport is not None:
            transport.abort()
        log.debug("Redis connection dropped: %s", error)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        error = RedisConnectionError("the Redis connection is closed")
        for future in [*self._waiting, *(future for _, futures in self._unsent for future in futures)]:
            _fail(future, error)
        self._lost(error)


class _Replies(asyncio.Protocol):
    def __init__(self, pipeline: AutoPipeline, transport: asyncio.Transport) -> None:
        self._pipeline = pipeline
        self._transport = transport
        self._reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        answered = self._pipeline._answered
        while (reply := self._reader.gets()) is not False:
            answered(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pipeline._transport is self._transport:
            self._pipeline._lost(RedisConnectionError(f"the Redis connection was lost: {exc or 'closed'}"))


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error if isinstance(error, RedisError) else RedisConnectionError(str(error)))
