"""What the web UI asks the service, and what it makes of the answers, without Streamlit.

A client like any other: it talks to `MovieService` and `grpc.health.v1` over
gRPC. Each call returns an `Answer`: the response or a `Problem` (a message a
person can act on, and the field violations of an INVALID_ARGUMENT), the
latency the UI measured, and, for Get, how the service's cache answered (the
`x-cache` and `server-timing` trailing metadata, the latter asked for with
`x-server-timing` request metadata; see the README's API section).
No call raises on a gRPC error, so a service that is down or restarting is a
message in the page, never a stack trace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc

T = TypeVar("T")

# What the service's health reports (internal/grpcserver/health.py): the whole
# service, then each dependency on its own.
HEALTH_SERVICES = {
    "service": "movies.v1.MovieService",
    "MongoDB": "movieservice.mongodb",
    "Redis": "movieservice.redis",
}

# A restarted service is found again within this long: gRPC's reconnect
# backoff otherwise grows to two minutes while the service is away.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


# Request metadata asking Get for `server-timing` as well as `x-cache` (README: the API).
TIMING_REQUEST = "x-server-timing"


@dataclass(frozen=True)
class CacheReport:
    """How the service's cache answered a Get: `outcome` is the `x-cache` value
    (hit, near_hit, negative_hit, miss, error), the times are milliseconds from
    `server-timing` (None when the entry is absent: no store read on a hit)."""

    outcome: str | None = None
    cache_ms: float | None = None
    store_ms: float | None = None

    @property
    def label(self) -> str:
        return OUTCOME_LABELS.get(self.outcome or "", self.outcome or "not reported")


OUTCOME_LABELS = {
    "hit": "cache hit (Redis)",
    "near_hit": "near-cache hit (the server's memory)",
    "negative_hit": "cached as not existing",
    "miss": "cache miss (read from MongoDB)",
    "error": "cache unavailable (read from MongoDB)",
}


def cache_report(metadata: Sequence[tuple[str, str | bytes]] | None) -> CacheReport:
    """The cache report in a call's trailing metadata; empty fields where the
    service sent none (another RPC, or an older server)."""
    # Binary entries (`-bin` keys, such as grpc-status-details-bin) come as bytes: not ours.
    values = {key: value for key, value in metadata or () if isinstance(value, str)}
    timings = server_timings(values.get("server-timing", ""))
    return CacheReport(values.get("x-cache"), timings.get("cache"), timings.get("store"))


def server_timings(header: str) -> dict[str, float]:
    """`cache;dur=0.184, store;dur=1.702` -> {"cache": 0.184, "store": 1.702}
    (W3C Server-Timing; entries without a readable `dur` are left out)."""
    found: dict[str, float] = {}
    for entry in header.split(","):
        name, *parameters = (part.strip() for part in entry.split(";"))
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if name and key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):
                    found[name] = float(value.strip().strip('"'))
    return found


@dataclass(frozen=True)
class Problem:
    """Why a call failed, for people: `title` (short), `message` (what happened
    and what to do), `fields` (field path -> what is wrong, for INVALID_ARGUMENT)."""

    code: str
    title: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)


def problem_of(error: grpc.RpcError, target: str) -> Problem:
    """A gRPC error as a message people understand (no exception text, no traceback)."""
    code: grpc.StatusCode = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if "MongoDB" in details or "Redis" in details:
            return Problem(code.name, "A dependency is down", f"{details}. Try again shortly.")
        return Problem(
            code.name,
            "The service is not answering",
            f"Nothing answers at {target}: the service may be stopped or restarting. "
            "This page keeps working and reconnects by itself; try again in a moment.",
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return Problem(code.name, "Not found", details[:1].upper() + details[1:] + ".")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        fields = field_violations(error)
        return Problem(code.name, "Invalid input", "Please correct: " + details, fields)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Problem(code.name, "Not signed in", "The write token is missing or wrong: writes need the token.")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return Problem(code.name, "Writes are disabled", "This server accepts no writes (it has no AUTH_TOKEN).")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Problem(code.name, "Too many requests", f"The service refused for now: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Problem(code.name, "Too slow", "The service did not answer in time; try again.")
    return Problem(code.name, "Something went wrong", f"The service answered {code.name}: {details}")


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """The google.rpc.BadRequest field violations an INVALID_ARGUMENT carries."""
    status = rpc_status.from_call(error)
    found: dict[str, str] = {}
    for detail in status.details if status else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            for violation in bad_request.field_violations:
                found[violation.field] = violation.description
    return found


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A call's response (or its problem), how long it took as the UI saw it, and
    the cache report of a Get."""

    value: T | None
    problem: Problem | None
    latency_ms: float
    cache: CacheReport = CacheReport()

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class NewMovie:
    """What the Upsert form asks for."""

    title: str
    year: int = 0
    genres: Sequence[str] = ()
    imdb_rating: float | None = None
    imdb_votes: int | None = None
    movie_id: str = ""

    def message(self) -> movies_pb2.Movie:
        movie = movies_pb2.Movie(id=self.movie_id, title=self.title, year=self.year, genres=list(self.genres))
        if self.imdb_rating is not None or self.imdb_votes is not None:
            movie.imdb.CopyFrom(movies_pb2.Imdb(rating=self.imdb_rating, votes=self.imdb_votes))
        return movie


class MovieClient:
    """Calls to the service at `target` (host:port, plaintext), each bounded by
    `timeout` seconds. One channel, kept: it reconnects by itself after a restart."""

    def __init__(self, target: str, *, timeout: float = 5.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = movies_pb2_grpc.MovieServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def get(self, movie_id: str) -> Answer[movies_pb2.Movie]:
        answer = self._call(self._stub.Get, movies_pb2.GetRequest(id=movie_id.strip()), ((TIMING_REQUEST, "1"),))
        movie = answer.value.movie if answer.value is not None else None
        return Answer(movie, answer.problem, answer.latency_ms, answer.cache)

    def top_rated(self, genre: str, page_size: int, page_token: str = "") -> Answer[movies_pb2.TopRatedResponse]:
        request = movies_pb2.TopRatedRequest(genre=genre, page_size=page_size, page_token=page_token)
        return self._call(self._stub.TopRated, request)

    def nearby(
        self, latitude: float, longitude: float, radius_km: float, limit: int
    ) -> Answer[movies_pb2.NearbyResponse]:
        request = movies_pb2.NearbyRequest(latitude=latitude, longitude=longitude, radius_km=radius_km, limit=limit)
        return self._call(self._stub.Nearby, request)

    def upsert(self, movie: NewMovie, token: str) -> Answer[movies_pb2.UpsertResponse]:
        request = movies_pb2.UpsertRequest(movie=movie.message())
        return self._call(self._stub.Upsert, request, (("authorization", f"Bearer {token.strip()}"),))

    def rank(self, movie_id: str, genre: str = "", max_pages: int = 20) -> Answer[int]:
        """The movie's place (1 = best) in TopRated of `genre` (value None: not
        ranked, as movies without a rating are not), paging 100 at a time."""
        place, token, spent = 0, "", 0.0
        for _ in range(max_pages):
            page = self.top_rated(genre, 100, token)
            spent += page.latency_ms
            if page.value is None:
                return Answer(None, page.problem, spent)
            for movie in page.value.movies:
                place += 1
                if movie.id == movie_id:
                    return Answer(place, None, spent)
            token = page.value.next_page_token
            if not token:
                break
        return Answer(None, None, spent)

    def health(self) -> dict[str, str]:
        """Each of HEALTH_SERVICES' names -> SERVING, NOT_SERVING or UNREACHABLE."""
        states: dict[str, str] = {}
        for name, service in HEALTH_SERVICES.items():
            try:
                response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                states[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError:
                states[name] = "UNREACHABLE"
        return states

    def _call(self, method: Any, request: Any, metadata: Sequence[tuple[str, str]] | None = None) -> Answer[Any]:
        call: Callable[..., tuple[Any, grpc.Call]] = method.with_call
        started = time.perf_counter()
        try:
            response, outcome = call(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as error:
            elapsed = (time.perf_counter() - started) * 1000
            trailers = error.trailing_metadata() if isinstance(error, grpc.Call) else None
            return Answer(None, problem_of(error, self.target), elapsed, cache_report(trailers))
        elapsed = (time.perf_counter() - started) * 1000
        return Answer(response, None, elapsed, cache_report(outcome.trailing_metadata()))
