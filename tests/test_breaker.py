"""The circuit breaker's state machine (unit tests with a fake clock)."""

from __future__ import annotations

import pytest

from movieservice.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, probe=None, **kwargs) -> CircuitBreaker:
    return CircuitBreaker("dep", failure_threshold=3, reset_seconds=1.0, probe=probe, clock=clock, **kwargs)


def test_opens_after_consecutive_failures_and_fails_fast():
    clock = Clock()
    b = breaker(clock)
    b.failure(clock())
    b.failure(clock())
    b.success()
    b.failure(clock())
    b.failure(clock())
    assert b.state is BreakerState.CLOSED, "a success resets the count"
    clock.now += 0.1
    b.failure(clock())
    assert b.state is BreakerState.OPEN
    assert not b.allow()


async def test_probes_in_the_background_after_the_reset_time_and_closes_when_the_probe_succeeds():
    clock = Clock()
    probes = []

    async def probe() -> None:
        probes.append(clock())

    b = breaker(clock, probe=probe)
    b.trip()
    clock.now += 0.5
    assert not b.allow() and probes == []
    clock.now += 0.6
    # The caller that notices does not wait for the probe: it is told no, at once.
    assert not b.allow() and b.state is BreakerState.HALF_OPEN
    assert not b.allow(), "callers fail fast while the probe runs"
    await b.wait_for_probe()
    assert probes == [clock.now]
    assert b.allow() and b.state is BreakerState.CLOSED and b.recoveries == 1


async def test_a_failing_probe_keeps_it_open():
    clock = Clock()

    async def probe() -> None:
        raise ConnectionError("still down")

    b = breaker(clock, probe=probe)
    b.trip()
    clock.now += 2
    assert not b.allow()
    await b.wait_for_probe()
    assert b.state is BreakerState.OPEN and b.recoveries == 0
    assert not b.allow(), "the next probe waits for another reset period"


def test_failures_of_calls_older_than_the_last_success_are_ignored():
    """Calls caught by an outage fail after the dependency is back: they must not reopen it."""
    clock = Clock()
    b = breaker(clock)
    started_during_outage = clock()
    clock.now += 1
    b.success()
    for _ in range(5):
        b.failure(started_during_outage)
    assert b.state is BreakerState.CLOSED


def test_close_on_success_only_when_asked():
    clock = Clock()
    closing = breaker(clock, close_on_success=True)
    keeping = breaker(clock)
    for b in (closing, keeping):
        b.trip()
        b.success()
    assert closing.state is BreakerState.CLOSED
    assert keeping.state is BreakerState.OPEN, "this one must run its probe before closing"


def test_state_changes_are_reported():
    clock = Clock()
    changes = []
    b = breaker(clock, on_change=lambda name, state: changes.append((name, state)))
    b.trip()
    clock.now += 2
    assert b.allow(), "without a probe, the first call after the reset time closes it"
    assert changes == [("dep", BreakerState.OPEN), ("dep", BreakerState.HALF_OPEN), ("dep", BreakerState.CLOSED)]


@pytest.mark.parametrize("threshold", [1, 3])
def test_threshold(threshold):
    clock = Clock()
    b = CircuitBreaker("dep", failure_threshold=threshold, clock=clock)
    for _ in range(threshold - 1):
        b.failure(clock())
    assert b.state is BreakerState.CLOSED
    b.failure(clock())
    assert b.state is BreakerState.OPEN
