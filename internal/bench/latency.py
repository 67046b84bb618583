"""The latency rows, with ghz: Gets with stalled calls open, the miss path,
Upserts, and a cold-key stampede. Store times come from the service's own
`movieservice_dependency_seconds` histogram."""

from __future__ import annotations

import statistics
from typing import Any

import grpc

from movieservice.bench.load import GhzReport, ghz
from movieservice.bench.session import TOKEN, ZIPF_MOVIES, Bench, Service, movie_service
from movieservice.bench.stalled import CALLS, CONNECTIONS, STREAMS, Stalled, stalled_calls
from movieservice.bench.stats import Ratio, grown, histogram_quantile, interleaved
from movieservice.proto.movies.v1 import movies_pb2

# The service's histogram of MongoDB and Redis operation times.
DEPENDENCY_SECONDS = "movieservice_dependency_seconds"
# How long a Get to the threaded ceiling may take, with the stalled calls open,
# before it counts as stopped.
STOPPED_AFTER_SECONDS = 2.0


def get_each(bench: Bench, service: Service, ids: list[str]) -> GhzReport:
    """A Get of every id in `ids`, in order, 16 at a time."""
    return ghz(service.target, "Get", [{"id": i} for i in ids], total=len(ids), concurrency=16, work=bench.work)


def stalled(bench: Bench, command: str) -> None:
    """Gets' latency on the default service without and with stalled calls
    open, in interleaved rounds; and, as the proof that the stalled calls
    stall something, what they do to grpcio's threaded server."""
    service = bench.redis_hits_service()
    gets = 2_000 if bench.quick else 5_000
    held: list[Stalled] = []

    def without() -> GhzReport:
        return get_each(bench, service, [bench.sample_id] * gets)

    def with_stalled() -> GhzReport:
        with stalled_calls(service.target) as opened:
            held.append(opened)
            return get_each(bench, service, [bench.sample_id] * gets)

    reports = interleaved({"with": with_stalled, "without": without}, bench.rounds)
    failed = [r.status_codes for runs in reports.values() for r in runs if not r.all_ok]
    if failed:
        raise RuntimeError(f"Gets failed during the stalled-calls rounds: {failed}")
    p99 = {name: [r.percentile_ms(99) for r in runs] for name, runs in reports.items()}
    ratio = Ratio.of(p99["with"], p99["without"])
    connections = sorted({h.connections for h in held})
    bench.row(
        f"Stalled calls: Get p99 with / without {CALLS:,} stalled calls over {CONNECTIONS} connections "
        f"and {STREAMS} idle streams open",
        "Gets keep their normal latency",
        f"p99 with/without {ratio}; p99 {statistics.median(p99['with']):.1f} ms with, "
        f"{statistics.median(p99['without']):.1f} ms without (medians)",
        "; ".join(f"with {x:.1f} / without {y:.1f} ms" for x, y in zip(p99["with"], p99["without"], strict=True))
        + f"; every Get OK ({sum(r.count for runs in reports.values() for r in runs):,} in the rounds); "
        f"connections the stalled calls held (ss): {connections}; {threaded_under_stall(bench)}",
        f"{command}: ghz -c16 -n{gets} Get, NEAR_CACHE_SIZE=0; the stalled calls: grpc.aio stream-unary Gets "
        "whose request never comes, Health/Watch streams never read",
    )


def threaded_under_stall(bench: Bench) -> str:
    """What the same stalled calls do to grpcio's threaded ceiling."""
    ceiling = bench.ceiling("threaded")
    with stalled_calls(ceiling.target), grpc.insecure_channel(ceiling.target) as channel:
        stub = movie_service(channel)
        try:
            stub.Get(movies_pb2.GetRequest(id=bench.sample_id), timeout=STOPPED_AFTER_SECONDS)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            return f"with them open, a Get to grpcio's threaded ceiling got no answer in {STOPPED_AFTER_SECONDS:g} s"
    # Reported as it is: then the stalled calls stall nothing, and the row above proves nothing.
    return f"with them open, grpcio's threaded ceiling still answered a Get within {STOPPED_AFTER_SECONDS:g} s"


def misses_service(bench: Bench) -> Service:
    return bench.service("miss", MONGO_DB="bench_zipf", NEAR_CACHE_SIZE="0")


def misses_and_upserts(bench: Bench, command: str) -> None:
    service = misses_service(bench)
    ids = bench.zipf_ids[:2000]
    before = service.metrics()
    report = get_each(bench, service, ids)
    after = service.metrics()
    labels = {"dependency": "mongodb", "operation": "get"}
    reads = grown(after, before, f"{DEPENDENCY_SECONDS}_count", **labels)
    store_mean = grown(after, before, f"{DEPENDENCY_SECONDS}_sum", **labels) / max(reads, 1)
    store_p99 = histogram_quantile(after, before, DEPENDENCY_SECONDS, 0.99, **labels)
    bench.row(f"Miss path: Get of {len(ids):,} distinct cold ids", "(measured)", report.summary(),
              f"store (FerretDB, {ZIPF_MOVIES:,} movies) per read: mean {store_mean * 1000:.1f} ms, "
              f"p99 {store_p99 * 1000:.1f} ms over {reads:.0f} reads; {report.status_codes}",
              f"{command}: ghz -c16, NEAR_CACHE_SIZE=0")  # fmt: skip

    upserts: list[dict[str, Any]] = [
        {"movie": {"id": f"{0xBE0C0000000000000000 + i:024x}", "title": f"Bench {i}", "year": 2000,
                   "genres": ["Drama"], "imdb": {"rating": 7.0, "votes": 1000 + i}}}
        for i in range(300)
    ]  # fmt: skip
    before = service.metrics()
    report = ghz(service.target, "Upsert", upserts, total=len(upserts), concurrency=4, work=bench.work,
                 metadata={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
    after = service.metrics()
    writes = grown(after, before, f"{DEPENDENCY_SECONDS}_count", dependency="mongodb", operation="upsert")
    write_seconds = grown(after, before, f"{DEPENDENCY_SECONDS}_sum", dependency="mongodb", operation="upsert")
    redis_seconds = grown(after, before, f"{DEPENDENCY_SECONDS}_sum", dependency="redis", operation="write")
    write_mean, redis_mean = write_seconds / max(writes, 1), redis_seconds / max(writes, 1)
    bench.row(f"Upsert (creating {len(upserts)} movies)", "(measured)", report.summary(),
              f"per write: store (FerretDB findAndModify) {write_mean * 1000:.1f} ms, Redis script "
              f"{redis_mean * 1000:.2f} ms; {report.status_codes}",
              f"{command}: ghz -c4")  # fmt: skip


def stampede(bench: Bench, command: str) -> None:
    service = misses_service(bench)
    cold = bench.zipf_ids[-1]  # the miss row reads the first 2,000 ids only
    before = service.metrics()
    report = ghz(service.target, "Get", [{"id": cold}], total=500, concurrency=500, work=bench.work)
    after = service.metrics()
    reads = grown(after, before, f"{DEPENDENCY_SECONDS}_count", dependency="mongodb", operation="get")
    bench.row("Cold-key stampede: 500 concurrent Gets of one id", "1 store read", f"{reads:.0f} store read(s)",
              f"{report.status_codes}; p99 {report.percentile_ms(99):.1f} ms",
              f"{command}: ghz -c500 -n500, one id never read before")  # fmt: skip
