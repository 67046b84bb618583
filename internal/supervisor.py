"""WORKERS > 1: a parent process that forks the gRPC workers and watches them.

- Forks before any gRPC object exists (gRPC's fork rules); every worker binds
  GRPC_PORT with SO_REUSEPORT and the kernel spreads connections over them.
- Restarts a worker that dies (pausing a second if workers die right after
  starting, so a broken configuration does not spin).
- Forwards SIGTERM/SIGINT to the workers, which drain their calls; exits when
  they are gone.
- Serves one /metrics on METRICS_PORT with the sum over all workers, through
  prometheus-client's multiprocess mode; a dead worker's gauges are dropped,
  its counters kept.

This module must be imported before prometheus_client is (see `supervise`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from types import FrameType

from movieservice.config import Settings

log = logging.getLogger(__name__)

_CRASH_LOOP_SECONDS = 1.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# A worker's exit statuses after it was told to stop that are not failures:
# 0 (it drained and stopped), or ended by the signal itself, which happens
# only while it is still starting (before serve() handles the signal), when
# it has answered no call and there is nothing to drain.
STOPPED_CLEANLY = (0, -signal.SIGTERM, -signal.SIGINT)


def supervise(settings: Settings) -> int:
    directory = tempfile.mkdtemp(prefix="movieservice-metrics-")
    # prometheus_client decides at import time whether values live in files.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, multiprocess

    from movieservice.grpcserver import server
    from movieservice.metrics import UnaryMessageCounts

    workers: dict[int, tuple[int, float]] = {}  # pid -> (worker number, start time)
    stopping = False

    def spawn(number: int) -> None:
        # Blocked across the fork: a signal that comes meanwhile reaches the
        # worker once it has the default action back, not the parent's `forward`.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                # Until serve() installs its own handlers, a stop signal ends a
                # worker at once: it has no call to drain yet (see STOPPED_CLEANLY).
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                status = server.serve(settings, metrics_http=False)
            finally:
                os._exit(status)
        workers[pid] = (number, time.monotonic())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        log.info("worker %d started (pid %d)", number, pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(workers))
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # Before the first fork: a stop signal during start-up stops the workers started so far.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for number in range(settings.workers):
        if not stopping:
            spawn(number)
    registry = CollectorRegistry()
    workers_collector = multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(UnaryMessageCounts(workers_collector))
    metrics_server = server.start_metrics_http(settings, registry)
    failed = False
    try:
        while workers:
            pid, status = os.wait()
            if pid not in workers:
                continue
            number, started = workers.pop(pid)
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                log.info("worker %d (pid %d) stopped with status %d", number, pid, code)
                failed = failed or code not in STOPPED_CLEANLY
                continue
            log.warning("worker %d (pid %d) died with status %d: restarting it", number, pid, code)
            if time.monotonic() - started < _CRASH_LOOP_SECONDS:
                time.sleep(_CRASH_LOOP_SECONDS)
            if not stopping:
                spawn(number)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    log.info("stopped")
    return 1 if failed else 0
