"""What the use cases need from tracing: spans around the work no library sees
(cache lookups, single-flight and lease waits, fills, index rebuilds, repairs).

A port, like the cache and the store: `movieservice.tracing` implements it with
OpenTelemetry when traces are on; otherwise the use cases hold `NO_TRACING`,
whose spans are one shared object doing nothing. Why not OpenTelemetry's API
here directly: without an SDK its spans are no-ops too, but each still attaches
and detaches a context (contextvars) and allocates on the way, a few
microseconds a span on every call; a Get hit opens one, and "tracing off costs
nothing measurable" is a promise (BENCHMARKS.md). The port also keeps the core
free of anything but the standard library, and lets unit tests record spans.

Span and attribute names are the service's own (`movieservice.*`), as the
semantic conventions ask of attributes outside them; the README lists them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

AttributeValue = str | bool | int | float

# The spans (see the README, "Traces").
CACHE_LOOKUP = "movieservice.cache.lookup"
SINGLE_FLIGHT = "movieservice.cache.single_flight"
LEASE_WAIT = "movieservice.cache.lease_wait"
CACHE_FILL = "movieservice.cache.fill"
INDEX_REBUILD = "movieservice.index.rebuild"
INDEX_WAIT = "movieservice.index.wait"
INDEX_WARM_UP = "movieservice.index.warm_up"
CACHE_REPAIR = "movieservice.cache.repair"
# Their attributes.
CACHE = "movieservice.cache"
RESULT = "movieservice.cache.result"
SHARED = "movieservice.single_flight.shared"
LEASE = "movieservice.cache.lease"
FILL_RESULT = "movieservice.cache.fill.result"
FILL_REASON = "movieservice.cache.fill.reason"
EARLY_REFRESH = "movieservice.cache.early_refresh"
INDEX = "movieservice.index"
ENTRIES = "movieservice.index.entries"
REPAIRS = "movieservice.cache.repairs"


class Span(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class Tracer(Protocol):
    def span(self, name: str) -> AbstractContextManager[Span]:
        """A span around the block, a child of the current one (the call's,
        when there is a call); an exception escaping the block marks it failed."""
        ...

    def untraced(self) -> AbstractContextManager[object]:
        """Work inside starts no spans, neither the service's nor the
        libraries' (Redis, MongoDB): for polls that run every second or two
        whether or not anything happens, which would otherwise each make a trace."""
        ...


class _NoSpan:
    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass


_NO_SPAN = _NoSpan()


class NoTracing:
    """Traces off: every span is the same object, and does nothing."""

    __slots__ = ()

    def span(self, name: str) -> _NoSpan:
        return _NO_SPAN

    def untraced(self) -> _NoSpan:
        return _NO_SPAN


NO_TRACING = NoTracing()
