"""BENCHMARKS.md: the rows of a run, the command that produced each, and what
the numbers mean."""

from __future__ import annotations

import os
import platform
import shlex
import time
from pathlib import Path

from movieservice.bench.session import Bench

COMMAND = "python -m movieservice.bench"


def command_line(arguments: list[str]) -> str:
    return shlex.join([*COMMAND.split(), *arguments])


def write_markdown(bench: Bench, path: Path, arguments: list[str]) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    machine = f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command_line(arguments)}` on {time.strftime('%Y-%m-%d')}; machine: {machine}.",
        "",
        "Method: every comparison is a ratio of runs taken in interleaved rounds within this one run "
        f"({bench.rounds} rounds after a warm-up round, each run once per round, the order rotating; the median "
        "of the per-round ratios, the middle half of them (quartiles) to show the spread, raw numbers beside it). "
        "Throughput rows also give each server's CPU time per request (user + system time of the server "
        "process and its workers over the h2load run, from /proc), and the same ratio computed from it, "
        "which moves less than requests per second on a shared core. "
        "Servers are pinned to core 0; h2load/ghz, Redis and FerretDB to core 1. Absolute numbers on these "
        "shared machines move by tens of percent from run to run; the ratios are what to compare. "
        "Store times come from the service's own `movieservice_dependency_seconds` histogram.",
        "",
        "| Measurement | Target | Result | Raw numbers | Command |",
        "|---|---|---|---|---|",
    ]
    for row in bench.rows:
        lines.append(f"| {row.name} | {row.target} | {row.result} | {row.raw} | `{row.command}` |")
    lines.append("")
    path.write_text("\n".join(lines) + NOTES)


NOTES = """
## What each optimisation bought, and what the numbers mean

See the README ("Performance") for the design; the measurements above are the evidence. Figures
marked "in process" come from calling the handlers in a loop against a real Redis and measuring the
process' CPU time per call (no gRPC), which is steadier than throughput on these machines.

- **The ceilings**: each server the service is compared with answers Get with a constant,
  pre-serialized GetResponse of the sample movie, so what separates the service from it is the
  service's own work. The targets are against the *stall-proof* ceiling: the service's own grpc.aio
  server (`grpcserver.server.new_server`) on uvloop with answers leaving in batches, the fastest
  constant server that keeps answering while calls stall. grpcio's threaded server (16 threads) is
  reported beside it: it reads a unary call's request inside a pool thread, so a handful of calls
  that never send their request stops it (the "Stalled calls" row shows both). Both have one
  generic handler; grpc.aio's `add_registered_method_handlers` is not used: measured, a registered
  method cost ~18 us more per call than a generic one.
- **Stalled calls**: 1,000 Gets over 10 connections whose request message is never sent (the client
  sends the call's headers, then nothing) and 100 health Watch streams never read, held by a
  helper process on the load core while ghz measures Gets. On grpc.aio a call waiting for its
  request is a suspended coroutine, and only calls whose request has arrived count against
  `MAX_CONCURRENT_CALLS`. The row also checks that the same calls stop grpcio's threaded
  ceiling: the proof that they stall what they should.
- **uvloop, answers in batches, Redis commands in batches** (the "what each optimisation bought"
  rows): grpc.aio alone served a constant answer at 0.58-0.64 of the threaded server on these
  machines (ENVIRONMENT.md; compare the rows above). uvloop replaces asyncio's event loop;
  `servicer.CompletionBatcher` holds each ready answer for a few turns of the event loop so that
  answers leave together and share the transport's writes and wake-ups (an idle server does not
  hold an answer back); and
  `cache.pipelining.AutoPipeline` writes the Redis commands issued within `BATCH_TURNS` turns of the
  loop together, over one connection. Both stop gathering once `QUIET_TURNS` (32) turns in a row
  brought nothing to join: gRPC events reach the loop one wake-up at a time, so under load a few
  turns pass between two calls reaching the same point; 32 instead of 8 took Get Redis hits from
  252 to 211 us of CPU per call (11 interleaved rounds) and made no difference to the constant
  server (15 rounds: 0.96-1.04). The first two rows are A/Bs between constant-answer
  servers; the third between two servers that each read the cached movie with one HMGET per call
  (the aio ceiling plus a Redis hit), at the default batch turns and at 0.
- **What a call costs the framework** (`perf stat` on the constant server under this load): ~32
  system calls and ~10 context switches per call, all grpc.aio's: its poller thread signals every
  completion-queue event (about 4 per unary call) with a write to a socket the event loop reads,
  each answer leaves in its own `sendmsg`, and asyncio's running-loop check costs a `getpid` per
  future. The service adds 1-3 system calls per call to that. What separates it from the ceiling
  is Python run per call, which costs 2-3x under load what the same code costs in a loop in process
  (cold caches between calls). Two experiments (not rows: one-off A/Bs, 7-9 rounds): the service's
  own process answering with the ceiling's constant handler ran at 0.99 of the ceiling, so the
  gap is the call path, not the process (its clients, threads, memory); and the call path's
  modules compiled with mypyc (core/reads, the near cache, the auto-pipeline, wire, deadline,
  validation, the metrics observer) made no measurable difference (Redis hits 0.69 vs 0.71, near
  hits 0.70 vs 0.70 of the ceiling). The servicer's wrapper itself cannot be compiled that way:
  grpc.aio does not see a compiled coroutine function as one and runs it on its thread pool (2.6x
  the CPU per call).
- **CPU per request**: the server's CPU time per request is what a core buys; with one server core
  and h2load on the other, rps follows it, but rps also moves with whatever else the machine runs.
  The difference between a service's CPU per request and the ceiling's is the service's own work
  per call (cache lookup, metrics, framing the answer).
- **Near cache** (`NEAR_CACHE_SIZE`, off by default): a hit is a dictionary lookup instead of a
  Redis round trip, the difference between the near-cache and the Redis rows. It is off by default
  because an invalidation reaches other server processes a moment after the write: the process that
  took a write reads it at once, another one can serve the previous version until Redis'
  invalidation message arrives (measured by `tests/test_consistency.py`; bounded there at 250 ms,
  measured ~0).
- **Pre-serialized hits**: Get returns the cached movie bytes behind GetResponse's field tag and
  length (`grpcserver/wire.py`), through an identity response serializer, instead of parsing and
  re-serializing it.
- **hiredis** (redis-py's C reply parser, a dependency; the auto-pipeline also packs commands with
  it): in process, on the threaded server before the grpc.aio rewrite, a TopRated call went from 488
  to 309 us of CPU and a Nearby call from 531 to 307 us; the Python parser spent most of that on the
  30-odd replies of a page.
- **Responses assembled with constant tags** (`internal/grpcserver/wire.py`): in process, on the
  threaded server before the rewrite, TopRated ~300 -> ~230 us and Nearby ~220 -> ~190 us per call;
  the bytes are checked against protobuf's own serialization by a property test.
- **Interceptor**: MovieService's calls report to their method's observer from inside the
  servicer's one wrapper, with label children bound once per method, rather than through a
  grpc.aio `ServerInterceptor` (a chain of coroutines run on every call before the handler is
  found: each layer costs ~10 us of CPU per call under load); a call costs a few counter
  increments and a histogram observation, on counters without locks that a collector reads at
  scrape time (`metrics.LoopCounter`, `LoopHistogram`: prometheus-client's own Counter and Histogram
  cost ~12 us of CPU per Get under load, measured by hand with the near cache: 199 against 187 us
  per request). With the near cache, where the rest of the call is cheapest, the row shows what the
  metrics cost.
- **Zipf**: Redis is given memory for 80%, then 70%, of the collection (bytes per cached movie
  measured after an unbounded warm-up, then `CONFIG SET maxmemory`), with LFU eviction that counts
  every access (`lfu-log-factor 0`, `maxmemory-samples 10`: 0.943 against 0.939 with Redis'
  defaults at 70% in an earlier run, within run-to-run noise). Two references sit beside each hit
  ratio, on the same draws. The "ideal" is the share of draws that fall on the movies the cache
  could hold, were they exactly the most popular ones; a cache has to learn which those are from
  the requests, and near the bound they are asked for a few times each, so no policy gets there.
  The other is a simulated cache of the same size that counted every earlier request exactly and
  admitted a movie only when it had been asked for more often than the one it would evict
  (TinyLFU's admission without its approximations): about the best a policy that learns can do.
  Redis' sampled LFU came within 0.001 to 0.006 of it across runs, so an admission policy in
  the service would buy at most that; with room for 70% of the movies even the reference barely
  reaches 0.95.
  Sizing: give Redis memory for about three quarters of the movies for 95% hits under Zipf(1.0).
- **WORKERS**: on these 2-core machines the load generator needs a core, so throughput cannot
  show scaling. The row gives both servers the same single core and compares the server
  CPU-seconds per 1,000 Gets with one and two workers: flat means a second worker adds no work per
  Get, so throughput scales where cores are free. (With WORKERS > 1 the per-call metrics are
  flushed every second into prometheus-client's multiprocess files; recorded there on every call,
  as prometheus-client's own counters do, they cost ~16% more CPU per Get, measured by hand.)
- **Traces** (`--only traces`): the default service (Redis hits) with traces off, and two copies
  sending OTLP to a real Jaeger on the load core, sampling 1 % (`parentbased_traceidratio`, 0.01)
  and 100 % of calls, in the same rounds. Off, a Get runs a do-nothing span object in the use case
  and one comparison in the Redis adapter (the in-process row); no interceptor, no exemplar lookup.
  At 1 %, a call without a client's trace context is drawn before any span is made
  (`tracing.ServerSpans`); opentelemetry-instrumentation-grpc's grpc.aio interceptor, measured
  first, cost ~90 us of CPU per call at any ratio, and its per-call code ~14 us even for a call it
  then did not sample. A call left out of the sample runs in a context made once with
  instrumentation suppressed (the in-process row: about a microsecond; made per call with
  `suppress_instrumentation()`, with an import per span, it was ~10 us, and the 1 % row read
  0.76-0.89). At 100 %, the SDK's span objects, the attributes and the exporter thread's encoding
  are the cost: a 1 % row's cost beyond the in-process one is about the 100 % row's divided by 100.
  These throughput rows move by ±10 % from round to round on a shared machine: read them with the
  in-process rows.
- **Capacity** (`--only capacity`): for each size a database of synthetic movies in the
  sample_mflix schema (23,500 is about the full collection; ten times that to see what grows) and a
  Redis of its own. Seeding goes through `movieservice seed`'s code. The rebuild times are those of
  the first TopRated and Nearby after a FLUSHALL (the service rebuilds an index the call finds
  missing; `REQUEST_TIMEOUT_SECONDS` raised so the call waits the whole rebuild out); memory is
  Redis' `used_memory` before and after each step. Per cached movie it is the hash of the movie
  (its serialized bytes, version, expiry and load time) with its key; the TopRated indexes hold each
  movie once in the all-genres set and once per genre.
- **TopRated / Nearby** each run one Redis script (a page of ids with their movie bodies; the
  theaters in range with their exact coordinates) and build a response of several movies or
  theaters: a page of ten movies costs gRPC more to send than one 881-byte movie.
- **Miss path / Upsert** are bounded by the store. FerretDB 1.24 on SQLite compares `_id` with an
  expression its own `_id` index does not match, so by itself it scans the table for every lookup
  by id: about half a second per read or write at 5,000 movies with 16 clients (31 misses/s and 6
  Upserts/s on 2026-11-25). The local stack adds an index on FerretDB's expression
  (`FerretDBProcess.index_ids`; the rows above are with it), and what is left of the store's time is
  mostly 16 clients queueing on FerretDB's one core. Against MongoDB expect the store times to drop
  to about a millisecond and the service's own share, the difference between the two columns, to stay.
"""
