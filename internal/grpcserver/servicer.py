"""The one thin servicer: each RPC parses nothing itself, calls its use case
with plain values and a deadline, and turns the answer into the response
bytes; errors become statuses in one place (status.py).

It registers its methods itself rather than subclassing the generated
servicer: Get, TopRated and Nearby answer with responses assembled from the
cached bytes (wire.py), so their response serializer is the identity.

Every call passes two gates (see `Admission` and `CompletionBatcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from movieservice.core.deadline import Deadline
from movieservice.core.errors import InvalidArgument, ServiceError, Violation
from movieservice.core.reads import CacheOutcome, MovieRead
from movieservice.core.service import MovieService
from movieservice.core.writers import Credentials
from movieservice.grpcserver import wire
from movieservice.grpcserver.interceptor import NoObserver, PrometheusInterceptor, ended_early
from movieservice.grpcserver.registrar import Registrar
from movieservice.grpcserver.status import internal_error, status_of
from movieservice.grpcserver.tls import client_identity
from movieservice.proto.movies.v1 import movies_pb2

SERVICE_NAME = movies_pb2.DESCRIPTOR.services_by_name["MovieService"].full_name
# How many turns of the event loop an answer may wait for others to leave
# with it. grpc.aio sends each answer as it comes; answers that leave together
# share the transport's writes and wake-ups. Measured (BENCHMARKS.md): a
# constant answer served ~1.5x as fast with answers batched as without; a Get
# hit ~10% faster with up to 128 turns than with 32. Waiting stops early when
# the loop is quiet, so an idle server adds tens of microseconds, not 128 turns.
COMPLETION_BATCH_TURNS = 128
# ...but an answer leaves once this many turns in a row brought no other. On
# Redis hits the answers come in groups (a batch of Redis replies at a time),
# and waiting longer for the next group paid: 32 quiet turns here and in the
# Redis batches (cache/pipelining.py) cost 0.84x the CPU per Get of 8 in both.
QUIET_TURNS = 32

Handle = Callable[[Any, grpc.aio.ServicerContext[Any, Any], Deadline], Awaitable[Any]]


class Admission:
    """At most `limit` calls handled at once in this process; the next gets
    RESOURCE_EXHAUSTED at once rather than waiting in an unbounded queue.

    A call counts from when its request has arrived (grpc.aio reads it before
    the handler runs) to when its answer is ready: calls whose request is
    still on its way, and idle streams, cost a coroutine, never a place here.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


class CompletionBatcher:
    """Answers leave in batches: `released()` resolves once `turns` turns of
    the event loop have passed since the first answer of the batch was ready,
    or sooner, once `quiet_turns` turns in a row brought no answer to join it
    (an idle server does not hold an answer back for nothing)."""

    def __init__(self, turns: int = COMPLETION_BATCH_TURNS, quiet_turns: int = QUIET_TURNS) -> None:
        self._turns = turns
        self._quiet_turns = quiet_turns
        self._waiting: list[asyncio.Future[None]] = []

    def released(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        if len(self._waiting) == 1:
            loop.call_soon(self._turn, loop, 1, 1, 0)
        return future

    def _turn(self, loop: asyncio.AbstractEventLoop, turn: int, seen: int, quiet: int) -> None:
        waiting = len(self._waiting)
        quiet = quiet + 1 if waiting == seen else 0
        if turn < self._turns and quiet < self._quiet_turns:
            loop.call_soon(self._turn, loop, turn + 1, waiting, quiet)
            return
        batch, self._waiting = self._waiting, []
        for future in batch:
            if not future.done():  # a caller that was cancelled meanwhile
                future.set_result(None)


class MovieServicer:
    def __init__(
        self,
        service: MovieService,
        *,
        request_timeout_seconds: float,
        max_concurrent_calls: int,
        completion_batch_turns: int = COMPLETION_BATCH_TURNS,
    ) -> None:
        self._service = service
        self._timeout = request_timeout_seconds
        self.admission = Admission(max_concurrent_calls)
        self._batcher = CompletionBatcher(completion_batch_turns)
        self._interceptor: PrometheusInterceptor | None = None

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "Get": self._unary("Get", self._get, movies_pb2.GetRequest.FromString, None),
            "Upsert": self._unary("Upsert", self._upsert, movies_pb2.UpsertRequest.FromString, _serialize),
            "TopRated": self._unary("TopRated", self._top_rated, movies_pb2.TopRatedRequest.FromString, None),
            "Nearby": self._unary("Nearby", self._nearby, movies_pb2.NearbyRequest.FromString, None),
        }

    def register(self, server: Registrar, interceptor: PrometheusInterceptor | None = None) -> None:
        """Add the methods to `server`; with `interceptor`, every call reports to it."""
        self._interceptor = interceptor
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, self.method_handlers()),))

    # The RPCs

    async def _get(self, request: movies_pb2.GetRequest, context: Any, deadline: Deadline) -> bytes:
        read = await self._service.reads.read(request.id, deadline)
        # Before the answer or NOT_FOUND: an abort without metadata of its own keeps these.
        context.set_trailing_metadata(cache_metadata(read, timing=asks_for_timing(context)))
        return wire.get_response(read.movie())

    async def _upsert(
        self, request: movies_pb2.UpsertRequest, context: grpc.aio.ServicerContext[Any, Any], deadline: Deadline
    ) -> movies_pb2.UpsertResponse:
        movie = request.movie if request.HasField("movie") else None
        outcome = await self._service.writes.upsert(movie, credentials_of(context), deadline)
        return movies_pb2.UpsertResponse(movie=outcome.stored.movie, created=outcome.created)

    async def _top_rated(self, request: movies_pb2.TopRatedRequest, context: Any, deadline: Deadline) -> bytes:
        page = await self._service.top_rated.page(request.genre, request.page_size, request.page_token, deadline)
        return wire.top_rated_response(page.movies, page.next_page_token)

    async def _nearby(self, request: movies_pb2.NearbyRequest, context: Any, deadline: Deadline) -> bytes:
        theaters = await self._service.nearby.search(
            request.latitude, request.longitude, request.radius_km, request.limit, deadline
        )
        return wire.nearby_response(theaters)

    # What every call goes through

    def _unary(
        self,
        name: str,
        handle: Handle,
        deserializer: Callable[[bytes], Message],
        serializer: Callable[[Any], bytes] | None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        admission, batcher, longest = self.admission, self._batcher, self._timeout
        parse = _parser(name, deserializer)
        method = f"/{SERVICE_NAME}/{name}"
        # Metrics inside this one wrapper rather than another coroutine around it (see interceptor.py).
        observer = self._interceptor.observer(method) if self._interceptor else NoObserver()

        async def behavior(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = observer.start()
            code = grpc.StatusCode.OK
            try:
                if admission.active >= admission.limit:
                    code = grpc.StatusCode.RESOURCE_EXHAUSTED
                    await context.abort(
                        code, f"the server is handling its limit of {admission.limit} calls; retry with backoff"
                    )
                admission.active += 1
                try:
                    request = parse(body)
                    remaining = context.time_remaining()
                    deadline = Deadline.within(longest if remaining is None else min(remaining, longest))
                    response = await handle(request, context, deadline)
                except ServiceError as error:
                    status = status_of(error)
                    code = status.code
                    await context.abort(status.code, status.details, status.trailing_metadata)
                except Exception:  # noqa: BLE001 - the last resort: no exception text reaches a client
                    status = internal_error(method)
                    code = status.code
                    await context.abort(status.code, status.details, status.trailing_metadata)
                finally:
                    admission.active -= 1
                await batcher.released()
                return response
            except asyncio.CancelledError:
                code = ended_early(context)
                raise
            finally:
                observer.end(started, code)

        # The request arrives as bytes and is parsed here, where a body that is
        # not the method's message can be INVALID_ARGUMENT: grpc.aio answers a
        # deserializer's exception with UNKNOWN and the exception's text.
        return grpc.unary_unary_rpc_method_handler(behavior, None, serializer)


def _parser(name: str, deserializer: Callable[[bytes], Message]) -> Callable[[bytes], Message]:
    def parse(body: bytes) -> Message:
        try:
            return deserializer(body)
        except DecodeError:
            raise InvalidArgument([Violation("request", f"is not a valid {name} request message")]) from None

    return parse


def credentials_of(context: grpc.aio.ServicerContext[Any, Any]) -> Credentials:
    """What the caller presented: its bearer token, its address and (mTLS) its certificate's subject."""
    authorization = next(
        (str(value) for key, value in context.invocation_metadata() or () if key == "authorization"), None
    )
    return Credentials(authorization, peer_address(context.peer()), client_identity(context))


def peer_address(peer: str) -> str:
    """ "ipv4:10.0.0.7:52044" -> "ipv4:10.0.0.7", "ipv6:[::1]:52044" -> "ipv6:[::1]": a
    client's connections share its failure allowance whatever their port."""
    address, colon, port = peer.rpartition(":")
    return address if colon and port.isdigit() and address.count(":") >= 1 else peer


# The x-cache values, made once (one tuple per outcome, not one per call).
_X_CACHE = {outcome: ("x-cache", outcome.value) for outcome in CacheOutcome}
_X_CACHE_ONLY = {outcome: (entry,) for outcome, entry in _X_CACHE.items()}
# A Get sends `server-timing` only when its request metadata holds this key
# (any value), as CDNs send their debug headers on request: a value that is
# new on every call cost Get hits 2-10% of their CPU under load (A/Bs of 11
# rounds), `x-cache` alone (one of five constant entries) ~2%.
TIMING_REQUEST = "x-server-timing"


def asks_for_timing(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    for key, _ in context.invocation_metadata() or ():  # noqa: SIM110 - on every Get: no generator
        if key == TIMING_REQUEST:
            return True
    return False


def cache_metadata(read: MovieRead, *, timing: bool) -> tuple[tuple[str, str], ...]:
    """A Get's trailing metadata: `x-cache: <outcome>`, and with `timing` a W3C
    Server-Timing entry with the milliseconds spent in the cache lookup and (when
    it was read) the store, `server-timing: cache;dur=0.184, store;dur=1.702`."""
    if not timing:
        return _X_CACHE_ONLY[read.outcome]
    if read.store_seconds:
        spent = f"cache;dur={read.cache_seconds * 1000:.3f}, store;dur={read.store_seconds * 1000:.3f}"
    else:
        spent = f"cache;dur={read.cache_seconds * 1000:.3f}"
    return (_X_CACHE[read.outcome], ("server-timing", spent))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
