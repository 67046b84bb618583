"""In-process request coalescing ("single flight"): concurrent callers asking
for the same key share one execution of the work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]], timeout: float) -> tuple[T, bool]:
        """The result of `work()` for `key`, and whether this caller shared
        another caller's execution instead of starting it.

        The work runs as a task of its own: a caller that gives up (its
        cancellation, or for a caller that joined another's work its
        `timeout`: TimeoutError) does not stop it for the others. The caller
        that started the work waits for it: the work bounds its own time, and
        its own error (a store timeout, say) says more than a TimeoutError.
        Its exception is raised in every caller.
        """
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
            return await asyncio.shield(task), False
        async with asyncio.timeout(timeout):
            return await asyncio.shield(task), True

    def running(self, key: Hashable) -> bool:
        """Whether a caller of `run(key, ...)` now would join work already under way."""
        return key in self._flights

    def _landed(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: callers that gave up do not leave it unobserved
