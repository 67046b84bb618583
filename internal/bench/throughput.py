"""The throughput rows: h2load against the services and the reference
servers, the runs of a section in the same interleaved rounds."""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path

import grpc

from movieservice.bench.load import (
    H2LOAD_CONNECTIONS,
    H2LOAD_STREAMS,
    LOAD_CORE,
    Throughput,
    grpc_body_file,
    rss_mib,
)
from movieservice.bench.session import Bench, Service, answered, get, movie_service
from movieservice.bench.stats import Ratio, interleaved
from movieservice.cache.pipelining import BATCH_TURNS
from movieservice.core import tracing as core_tracing
from movieservice.devstack.jaeger import jaeger_server
from movieservice.proto.movies.v1 import movies_pb2

H2LOAD = f"h2load -c{H2LOAD_CONNECTIONS} -m{H2LOAD_STREAMS}"
TOP_RATED = movies_pb2.TopRatedRequest(genre="Drama", page_size=10)
NEARBY = movies_pb2.NearbyRequest(latitude=44.85, longitude=-93.24, radius_km=10)


def get_body(bench: Bench) -> Path:
    return grpc_body_file(bench.work / "get.bin", movies_pb2.GetRequest(id=bench.sample_id))


def rounds(bench: Bench, runs: Mapping[str, tuple[Service, str, Path]]) -> dict[str, list[Throughput]]:
    """h2load runs of (service, method, body), in interleaved rounds."""
    return interleaved({name: partial(bench.h2load, *run) for name, run in runs.items()}, bench.rounds)


def check_get(bench: Bench, *services: Service) -> None:
    """h2load counts HTTP statuses only: make sure the Get it sends is answered."""
    for service in services:
        answer = get(service, bench.sample_id)
        if answer.movie.id != bench.sample_id:
            raise RuntimeError(f"{service.name} answered a Get of {bench.sample_id} with movie {answer.movie.id!r}")


def compared(results: Mapping[str, list[Throughput]], a: str, b: str, label_a: str, label_b: str) -> tuple[Ratio, str]:
    """The rps ratio a/b over the rounds; and the raw numbers: the pairs, the
    median server CPU per request of each, and the ratio by CPU per request
    (b's over a's, so that, like the rps ratio, it is above 1 when a is the
    cheaper one), steadier than rps on a shared machine."""
    rps = Ratio.of([r.rps for r in results[a]], [r.rps for r in results[b]])
    by_cpu = Ratio.of([r.cpu_us_per_request for r in results[b]], [r.cpu_us_per_request for r in results[a]])
    pairs = "; ".join(
        f"{label_a} {x.rps:.0f} / {label_b} {y.rps:.0f} rps" for x, y in zip(results[a], results[b], strict=True)
    )
    cpu_a = statistics.median(r.cpu_us_per_request for r in results[a])
    cpu_b = statistics.median(r.cpu_us_per_request for r in results[b])
    raw = (
        f"{pairs}; server CPU per request (median): {label_a} {cpu_a:.0f} us, {label_b} {cpu_b:.0f} us; "
        f"ratio by CPU per request {by_cpu}"
    )
    return rps, raw


def hits(bench: Bench, command: str) -> None:
    body = get_body(bench)
    services = {
        "near": bench.near_cache_service(),
        "redis": bench.redis_hits_service(),
        "bare": bench.service("bare", metrics=False, NEAR_CACHE_SIZE="100000"),
        "aio": bench.ceiling("aio"),
        "threaded": bench.ceiling("threaded"),
    }
    check_get(bench, *services.values())
    # All in the same rounds: each comparison is between runs minutes apart at most.
    results = rounds(bench, {name: (service, "Get", body) for name, service in services.items()})

    near, redis = "NEAR_CACHE_SIZE=100000, METRICS_PORT set", "NEAR_CACHE_SIZE=0, METRICS_PORT set (the default)"
    for run, label, setting, target in (
        ("near", "Get near-cache hits", near, ">= 0.95"),
        ("redis", "Get Redis hits (the default)", redis, ">= 0.85"),
    ):
        ratio, raw = compared(results, run, "aio", "hits", "ceiling")
        bench.row(f"{label} vs the stall-proof ceiling (grpc.aio)", target, str(ratio), raw,
                  f"{command}: {H2LOAD} Get, {setting}; ceiling aio")  # fmt: skip
        ratio, raw = compared(results, run, "threaded", "hits", "threaded")
        bench.row(f"{label} vs grpcio's threaded ceiling", "(reported)", str(ratio), raw,
                  f"{command}: {H2LOAD} Get, {setting}; ceiling threaded")  # fmt: skip
    ratio, raw = compared(results, "near", "bare", "with", "without")
    bench.row("Interceptor cost on Get near-cache hits (with / without)", "cost <= 10%",
              f"cost {1 - ratio.median:.1%}; with/without {ratio}", raw,
              f"{command}: {H2LOAD} Get, NEAR_CACHE_SIZE=100000, METRICS_PORT set vs 0")  # fmt: skip
    ratio, raw = compared(results, "aio", "threaded", "aio", "threaded")
    bench.row("Stall-proof ceiling (grpc.aio, uvloop, batched answers) vs grpcio's threaded ceiling", "(reported)",
              str(ratio), raw, f"{command}: {H2LOAD} Get; ceilings aio and threaded, constant answer")  # fmt: skip


def traces(bench: Bench, command: str) -> None:
    """Get Redis hits (the default configuration) with traces off, on sampling
    1% of calls and on sampling all of them, exported to a real Jaeger on the
    load core, in the same rounds."""
    collector = jaeger_server(bench.work / "jaeger", cpus=LOAD_CORE).start()
    bench.servers.append(collector)
    arguments = {"1%": "0.01", "100%": "1.0"}
    services = {"off": bench.redis_hits_service()}
    for sampled, argument in arguments.items():
        services[sampled] = bench.serve(
            f"traced-{sampled.rstrip('%')}",
            NEAR_CACHE_SIZE="0",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_endpoint,
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=argument,
        )
    check_get(bench, *services.values())
    body = get_body(bench)
    results = rounds(bench, {name: (service, "Get", body) for name, service in services.items()})
    setting = "NEAR_CACHE_SIZE=0, METRICS_PORT set; OTEL_EXPORTER_OTLP_ENDPOINT: Jaeger on the load core"
    for sampled, target in (("1%", ">= 0.95"), ("100%", "(reported)")):
        ratio, raw = compared(results, sampled, "off", "on", "off")
        samples = services[sampled].metrics()
        lost = sum(v for (name, _), v in samples.items() if name == "movieservice_trace_spans_dropped_total")
        bench.row(f"Traces on, {sampled} of calls sampled (parentbased_traceidratio) / off: Get Redis hits",
                  target, str(ratio), f"{raw}; spans dropped {lost:.0f}",
                  f"{command}: {H2LOAD} Get, {setting}, OTEL_TRACES_SAMPLER_ARG={arguments[sampled]}")  # fmt: skip
    left_out = unsampled_call_cost_ns()
    cpu_on = statistics.median(r.cpu_us_per_request for r in results["1%"])
    bench.row("Traces on: what the tracing code adds to a call left out of the sample (in process), of CPU per request",
              "(reported)", f"{left_out:.0f} ns of {cpu_on:.0f} us ({left_out / 1000 / cpu_on:.2%})",
              "a handler with one lookup span, wrapped by ServerSpans at ratio 0 vs the same on NO_TRACING, "
              "awaited in a loop, CPU time, best of 5 alternating runs; the rest of a 1% row's cost is the "
              "sampled calls' spans and their export (the 100% row, divided by 100)",
              f"{command}: in the benchmark's process")  # fmt: skip
    added = tracing_off_cost_ns()
    cpu_off = statistics.median(r.cpu_us_per_request for r in results["off"])
    bench.row("Traces off: what the tracing code adds to a Get hit (in process), of the CPU per request",
              "nothing measurable", f"{added:.0f} ns of {cpu_off:.0f} us ({added / 1000 / cpu_off:.2%})",
              "the use case's lookup span on NO_TRACING (enter, two attributes, exit) and the outcome, timed "
              "with timeit (best of 5); the Redis adapter's check is one comparison; no interceptor, no "
              "exemplar lookup; CPU per request: the off rows above",
              f"{command}: timeit in the benchmark's process")  # fmt: skip


def tracing_off_cost_ns() -> float:
    """What a Get hit runs of the tracing code when traces are off, in ns (best of 5 timeit runs)."""
    tracer = core_tracing.NO_TRACING

    def lookup_span() -> None:
        with tracer.span(core_tracing.CACHE_LOOKUP) as span:
            span.set_attribute(core_tracing.CACHE, "movie")
            span.set_attribute(core_tracing.RESULT, "hit")

    runs = 200_000
    return min(timeit.repeat(lookup_span, number=runs, repeat=5)) / runs * 1e9


def unsampled_call_cost_ns() -> float:
    """What tracing adds to a call left out of the sample, in ns: the handler
    wrapper's draw, the suppressed context and the use case's span check (best of 5)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    from movieservice.tracing import ServerSpans, Tracing

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))  # as tracing.start() sets it up, without an exporter
    traced_tracer = Tracing(provider).tracer()

    def handler(tracer: core_tracing.Tracer) -> Callable[[object, object], Awaitable[None]]:
        async def behavior(request: object, context: object) -> None:
            with tracer.span(core_tracing.CACHE_LOOKUP) as span:
                span.set_attribute(core_tracing.RESULT, "hit")

        return behavior

    class Context:
        @staticmethod
        def invocation_metadata() -> tuple[tuple[str, str], ...]:
            return (("user-agent", "grpc-c/49.0.0"), ("te", "trailers"))

    plain = handler(core_tracing.NO_TRACING)
    wrapped = ServerSpans(provider, root_ratio=0.0).wrap(
        "/movies.v1.MovieService/Get", grpc.unary_unary_rpc_method_handler(handler(traced_tracer))
    )

    async def timed(behavior: Callable[[object, object], Awaitable[None]], runs: int = 50_000) -> float:
        context, started = Context(), time.process_time()
        for _ in range(runs):
            await behavior(None, context)
        return (time.process_time() - started) / runs * 1e9

    async def compare() -> float:
        plains, wrappeds = [], []
        for _ in range(5):
            plains.append(await timed(plain))
            wrappeds.append(await timed(wrapped.unary_unary))
        return min(wrappeds) - min(plains)

    return asyncio.run(compare())


def toprated_and_nearby(bench: Bench, command: str) -> None:
    service = bench.redis_hits_service()
    check_get(bench, service)
    with grpc.insecure_channel(service.target) as channel:  # the indexes are built before the first round
        stub = movie_service(channel)
        top = answered(lambda: stub.TopRated(TOP_RATED, timeout=120))
        if not top.movies or not answered(lambda: stub.Nearby(NEARBY, timeout=120)).theaters:
            raise RuntimeError("TopRated or Nearby answered nothing: the rows would measure empty answers")
    bodies = {
        "Get": get_body(bench),
        "TopRated": grpc_body_file(bench.work / "top.bin", TOP_RATED),
        "Nearby": grpc_body_file(bench.work / "nearby.bin", NEARBY),
    }
    results = rounds(bench, {method: (service, method, body) for method, body in bodies.items()})
    for method, label in (("TopRated", "TopRated (Drama, 10 per page)"), ("Nearby", "Nearby (10 km, 10 theaters)")):
        ratio, raw = compared(results, method, "Get", method, "Get")
        bench.row(f"{label} vs Get Redis hits", ">= 0.8", str(ratio), raw,
                  f"{command}: {H2LOAD}, NEAR_CACHE_SIZE=0 server")  # fmt: skip


def optimisations(bench: Bench, command: str) -> None:
    """What each optimisation of the serving model bought, each an A/B in the same rounds."""
    if BATCH_TURNS == 0:
        raise RuntimeError("cache.pipelining.BATCH_TURNS is 0: nothing to compare the unbatched server with")
    body = get_body(bench)
    servers = {
        "plain": bench.ceiling("aio-plain"),
        "uvloop": bench.ceiling("aio-uvloop"),
        "batched": bench.ceiling("aio"),
        "pipelined": bench.redis_hits_server(BATCH_TURNS),
        "unpipelined": bench.redis_hits_server(0),
        "frozen": bench.near_cache_service(),
        "unfrozen": bench.unfrozen_service("unfrozen", NEAR_CACHE_SIZE="100000"),
    }
    check_get(bench, *servers.values())
    results = rounds(bench, {name: (server, "Get", body) for name, server in servers.items()})
    ratio, raw = compared(results, "uvloop", "plain", "uvloop", "asyncio")
    bench.row("uvloop: constant-answer grpc.aio server on uvloop / on asyncio's own loop", "(reported)",
              str(ratio), raw, f"{command}: {H2LOAD} Get; ceilings aio-uvloop and aio-plain")  # fmt: skip
    ratio, raw = compared(results, "batched", "uvloop", "batched", "unbatched")
    bench.row("Answers leaving in batches (servicer.CompletionBatcher): constant-answer server on uvloop, "
              "with / without", "(reported)", str(ratio), raw,
              f"{command}: {H2LOAD} Get; ceilings aio and aio-uvloop")  # fmt: skip
    ratio, raw = compared(results, "pipelined", "unpipelined", f"{BATCH_TURNS} turns", "0 turns")
    bench.row(f"Redis commands sent in batches (cache.pipelining.AutoPipeline): a Redis-hit server at "
              f"{BATCH_TURNS} batch turns (the default) / at 0", "(reported)", str(ratio), raw,
              f"{command}: {H2LOAD} Get; redis-hits servers (aio ceiling + one HMGET per call)")  # fmt: skip
    ratio, raw = compared(results, "frozen", "unfrozen", "frozen", "unfrozen")
    bench.row("Start-up objects out of the garbage collector's reach (gc.freeze()): Get near-cache hits "
              "with / without", "(reported)", str(ratio), raw,
              f"{command}: {H2LOAD} Get, NEAR_CACHE_SIZE=100000; the service and `python -m movieservice.bench "
              "unfrozen`")  # fmt: skip


def scaling(bench: Bench, command: str) -> None:
    """2 cores, shared with h2load: WORKERS=2 cannot show a 2x. What can be
    shown is that the work per Get does not grow with the workers, which is
    what lets throughput scale where cores are free: both servers get the same
    one core, so a second worker can only add work, not cores."""
    one = bench.serve("w1", cpus="0", WORKERS="1", NEAR_CACHE_SIZE="100000")
    two = bench.serve("w2", cpus="0", WORKERS="2", NEAR_CACHE_SIZE="100000")
    check_get(bench, one, two)
    body = get_body(bench)
    results = rounds(bench, {"w2": (two, "Get", body), "w1": (one, "Get", body)})
    rps = Ratio.of([r.rps for r in results["w2"]], [r.rps for r in results["w1"]])
    cpu = {name: [r.server_cpu_seconds * 1000 / r.requests for r in runs] for name, runs in results.items()}
    per_get = Ratio.of(cpu["w2"], cpu["w1"])
    cores = statistics.median(r.server_cpu_seconds / r.wall_seconds for r in results["w2"])
    bench.row("WORKERS=2 vs WORKERS=1 on Get near-cache hits: server CPU-seconds per 1,000 Gets",
              "flat (the same work per Get: it scales where cores are free)",
              f"1 worker {statistics.median(cpu['w1']):.3f}, 2 workers {statistics.median(cpu['w2']):.3f} "
              f"CPU-s per 1,000 Gets (2/1: {per_get}); rps 2/1 {rps.median:.2f}x "
              f"(middle half of the rounds {rps.low:.2f}x to {rps.high:.2f}x)",
              "; ".join(f"2 workers {x.rps:.0f} / 1 worker {y.rps:.0f} rps"
                        for x, y in zip(results["w2"], results["w1"], strict=True))
              + f"; 2 workers used {cores:.2f} cores",
              f"{command}: {H2LOAD} Get, NEAR_CACHE_SIZE=100000, both servers (all their workers) on core 0, "
              "h2load on core 1")  # fmt: skip


def memory(bench: Bench, command: str) -> None:
    total = 200_000 if bench.quick else 1_000_000
    service = bench.near_cache_service()
    check_get(bench, service)
    body = get_body(bench)
    step = total // 5
    samples = [rss_mib(service.pid)]
    for _ in range(5):
        bench.h2load(service, "Get", body, requests=step)
        samples.append(rss_mib(service.pid))
    bench.row(f"Resident memory of a worker over {total:,} Get hits", "no growth after warm-up",
              f"{samples[1]:.1f} MiB after {step:,}, {samples[-1]:.1f} MiB after {total:,}",
              "RSS every {:,} requests: {}".format(step, ", ".join(f"{s:.1f}" for s in samples)),
              f"{command}: {H2LOAD} Get, NEAR_CACHE_SIZE=100000")  # fmt: skip
