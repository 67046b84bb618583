"""Stalled calls: `stalled_calls(target)` holds calls whose request never
arrives and idle streams open against a server while a block runs, from a
helper process on the load core (movieservice.devstack.hostile, which the
tests use too)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from movieservice.bench.load import LOAD_CORE
from movieservice.devstack.hostile import READY, established_connections

CALLS = 1000
CONNECTIONS = 10
STREAMS = 100


@dataclass(frozen=True)
class Stalled:
    """What `stalled_calls` opened: calls, streams, and the connections the
    server had from the helper when they were open (counted with ss)."""

    calls: int
    streams: int
    connections: int


@contextmanager
def stalled_calls(
    target: str, calls: int = CALLS, connections: int = CONNECTIONS, streams: int = STREAMS
) -> Iterator[Stalled]:
    """Hold `calls` stalled calls over `connections` connections and `streams`
    idle streams open against `target` while the block runs."""
    port = target.rsplit(":", 1)[1]
    before = established_connections(port, to_server=True)
    helper = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "movieservice.devstack.hostile", target,
         str(calls), str(connections), str(streams)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert helper.stdout is not None
        line = helper.stdout.readline()
        if not line.startswith(READY):
            raise RuntimeError(f"the stalled-calls helper did not start (exit status {helper.wait(10)})")
        opened = established_connections(port, to_server=True) - before
        if opened != connections:
            raise RuntimeError(f"the stalled-calls helper opened {opened} connections to {target}, not {connections}")
        yield Stalled(calls, streams, opened)
    finally:
        helper.terminate()
        helper.wait(30)
        # The server sees the connections close a moment later; the next run should not share the core with that.
        time.sleep(0.2)
