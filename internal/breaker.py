"""A circuit breaker: stop calling a dependency that keeps failing, probe it now and then.

closed -> open after `failure_threshold` consecutive failures (or `trip()`);
open -> half-open once `reset_seconds` have passed: the next caller starts
the probe in the background (`probe()` must succeed) and the breaker closes,
or it opens again. While open or probing, callers fail at once instead of
each waiting for a timeout. Used from one event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 1.0,
        probe: Callable[[], Awaitable[None]] | None = None,
        close_on_success: bool = False,
        on_change: Callable[[str, BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._probe = probe
        # Whether a call that succeeds while the circuit is open (one let through
        # before it opened) closes it. Not when closing needs the probe's work.
        self._close_on_success = close_on_success
        self._on_change = on_change
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._closed_at = float("-inf")
        self._last_success = float("-inf")
        self._probing: asyncio.Task[None] | None = None
        # How many times the circuit closed again after opening.
        self.recoveries = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """True when a call may go ahead. Once the circuit has been open for
        `reset_seconds`, this starts the probe (without waiting for it)."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN or self._clock() - self._opened_at < self._reset:
            return False
        self._set(BreakerState.HALF_OPEN)
        if self._probe is None:
            self._recovered()
            return True
        self._probing = asyncio.ensure_future(self._run_probe(self._probe))
        return False

    async def _run_probe(self, probe: Callable[[], Awaitable[None]]) -> None:
        try:
            await probe()
        except Exception:  # noqa: BLE001 - any failure of the probe keeps the circuit open
            self._open()
            return
        self._recovered()

    async def wait_for_probe(self) -> None:
        """Return once a probe in progress (if any) has finished."""
        if self._probing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._probing)

    def _recovered(self) -> None:
        self._failures = 0
        self.recoveries += 1
        self._closed_at = self._clock()
        self._set(BreakerState.CLOSED)

    def success(self) -> None:
        self._last_success = self._clock()
        if self._failures:
            self._failures = 0
        if self._close_on_success and self._state is BreakerState.OPEN:
            self._recovered()

    def now(self) -> float:
        """The breaker's clock: pass its value at the start of a call to `failure`."""
        return self._clock()

    def failure(self, started_at: float | None = None) -> None:
        """Count a failed call. A call that started before the dependency last
        answered (or before the circuit last closed) says nothing about it now:
        it was caught by an earlier outage, and is not counted."""
        if started_at is not None and started_at < max(self._closed_at, self._last_success):
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self._threshold:
            self._open()

    def trip(self) -> None:
        """Open now (a health check saw the dependency down)."""
        if self._state is BreakerState.CLOSED:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    async def close(self) -> None:
        """Stop a probe in progress (at shutdown)."""
        if self._probing is not None and not self._probing.done():
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
