"""In-process request coalescing ("single flight"): concurrent callers asking
for the same key share one execution of the work."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Future[T]] = {}

    def run(self, key: Hashable, work: Callable[[], T], timeout: float | None = None) -> tuple[T, bool]:
        """The result of `work()` for `key`, and whether this caller shared
        another caller's execution instead of running it.

        Followers wait at most `timeout` seconds (TimeoutError); the leader's
        exception is raised in every caller.
        """
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = Future()
        if not leader:
            return flight.result(timeout), True
        try:
            flight.set_result(work())
        except BaseException as error:  # noqa: BLE001 - handed to every caller, re-raised below
            flight.set_exception(error)
        finally:
            with self._lock:
                del self._flights[key]
        return flight.result(), False
