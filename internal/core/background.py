"""Work that outlives the call that started it (cache fills, early refreshes,
writes whose caller went away)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Background:
    """Runs coroutines as tasks it keeps track of, so that none is lost to the
    garbage collector, none fails silently, and `drain()` can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Start `work`; nobody waits for it, so a failure is logged."""
        self._track(asyncio.ensure_future(work), log_failure=True)

    async def finish(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to the end even if the caller is cancelled (its client went
        away or its deadline passed) and return its result to the caller."""
        task = asyncio.ensure_future(work)
        self._track(task, log_failure=False)
        return await asyncio.shield(task)

    def _track(self, task: asyncio.Task[Any], *, log_failure: bool) -> None:
        self._tasks.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and (error := done.exception()) is not None and log_failure:
                log.error("background work failed", exc_info=error)

        task.add_done_callback(finished)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the work in progress, then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
