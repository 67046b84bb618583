"""Traces, against a real trace backend: Jaeger (built by `make setup`) on
free loopback ports, `movieservice serve` sending it OTLP/gRPC because
OTEL_EXPORTER_OTLP_ENDPOINT says so, calls made with a known W3C traceparent,
and the trace trees read back from Jaeger's query API. Plus what links the
traces to the rest: trace ids in log lines and as exemplars of the latency
histogram. The parts that need no server (the configuration, the exposition,
the log formats) run without one."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from movieservice import tracing
from movieservice.config import ConfigError, Settings
from movieservice.devstack.jaeger import JaegerProcess, jaeger_server
from movieservice.devstack.metrics import scrape
from movieservice.devstack.processes import ToolMissing, find_tool
from movieservice.devstack.stack import ServiceProcess, service_environment, spawn
from movieservice.grpcserver.interceptor import MethodObserver, PrometheusInterceptor, TracedMethodObserver
from movieservice.logs import JsonFormatter, TextFormatter
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import WRITER
from tests.support.serving import stop
from tests.test_monitoring import (
    all_panels,
    dashboard,
    grafana_to_promql,
    needs_prometheus,
    start_prometheus,
    wait_until,
)

GET = "/movies.v1.MovieService/Get"


# The configuration (no servers)


def test_traces_are_off_unless_an_endpoint_is_set():
    assert not tracing.enabled_in({})
    assert not tracing.enabled_in({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.enabled_in({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.enabled_in({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert not tracing.enabled_in({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled_in({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.active().enabled, "nothing in the test process started traces"


def test_otel_variables_in_dotenv_count_and_the_environment_wins(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("OTEL_EXPORTER_OTLP_ENDPOINT=http://from-dotenv:4317\nOTEL_SERVICE_NAME=dotenv\nOTHER=1\n")
    environ = {"OTEL_SERVICE_NAME": "environment"}
    assert tracing.configure_environment(dotenv, environ)
    assert environ == {"OTEL_SERVICE_NAME": "environment", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://from-dotenv:4317"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ],
)
def test_what_this_build_cannot_send_is_a_configuration_error(name: str, value: str):
    with pytest.raises(ConfigError, match=name):
        tracing.configure_environment(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", name: value})


def test_dropped_spans_counted_before_the_counter_exists_are_not_lost():
    drops = tracing.DropCounts()
    drops.add("queue_full", 3)
    metrics = Metrics(CollectorRegistry())
    tracing.Tracing(drops=drops).count_drops_in(metrics.trace_spans_dropped)
    drops.add("export_failed", 2)
    value = metrics.registry.get_sample_value
    assert value("movieservice_trace_spans_dropped_total", {"reason": "queue_full"}) == 3
    assert value("movieservice_trace_spans_dropped_total", {"reason": "export_failed"}) == 2


# Linking traces to metrics and logs (no servers: a local tracer provider,
# never installed globally, gives the spans)


@contextlib.contextmanager
def in_span(sampled: bool = True) -> Iterator[tuple[str, str]]:
    """A current span (of a provider of its own) and its trace id and span id."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    with provider.get_tracer("test").start_as_current_span("call") as span:
        context = span.get_span_context()
        yield format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_latency_exemplars_carry_sampled_trace_ids_in_the_openmetrics_exposition():
    metrics = Metrics(CollectorRegistry())
    assert type(PrometheusInterceptor(metrics.grpc).observer(GET)) is MethodObserver, "traces off: no exemplars"
    observer = PrometheusInterceptor(metrics.grpc, exemplars=True).observer(GET)
    assert isinstance(observer, TracedMethodObserver)
    with in_span() as (trace_id, _):
        observer.end(observer.start(), grpc.StatusCode.OK)
    with in_span(sampled=False):
        observer.end(observer.start(), grpc.StatusCode.OK)
    observer.end(observer.start(), grpc.StatusCode.OK)  # outside any trace

    exemplars = [
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(openmetrics(metrics.registry).decode())
        for sample in family.samples
        if sample.name == "grpc_server_handling_seconds_bucket" and sample.exemplar is not None
    ]
    assert exemplars == [trace_id], "only the sampled call's trace (there is nothing to see of the others)"
    count = metrics.registry.get_sample_value(
        "grpc_server_handling_seconds_count",
        {"grpc_type": "unary", "grpc_service": "movies.v1.MovieService", "grpc_method": "Get"},
    )
    assert count == 3


@pytest.mark.parametrize("json_format", [False, True], ids=["text", "json"])
def test_log_lines_within_a_span_carry_its_ids(json_format: bool):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_tracing.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with in_span() as (trace_id, span_id):
            logger.warning("within a call")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    within, outside = stream.getvalue().splitlines()
    if json_format:
        assert json.loads(within) | {"trace_id": trace_id, "span_id": span_id} == json.loads(within)
        assert "trace_id" not in json.loads(outside)
    else:
        assert within == f"WARNING within a call trace_id={trace_id} span_id={span_id}"
        assert outside == "WARNING outside"


# Against Jaeger


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerProcess]:
    try:
        find_tool("jaeger")
    except ToolMissing as error:
        pytest.skip(str(error))
    process = jaeger_server(tmp_path_factory.mktemp("jaeger")).start()
    yield process
    process.stop()


def traced_service(settings: Settings, directory: Path, jaeger: JaegerProcess, **env: str) -> ServiceProcess:
    """`movieservice serve` sending its traces to `jaeger`, with a cache of its own (a key prefix)."""
    defaults = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": "movieservice-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: the test reads the traces soon after the calls
        "REDIS_KEY_PREFIX": f"traced-{secrets.token_hex(4)}:",
    }
    environment = service_environment(settings, **(defaults | env))
    return spawn(environment, directory, name="traced", metrics=True)


@pytest.fixture(scope="module")
def service(settings: Settings, jaeger: JaegerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    process = traced_service(settings, tmp_path_factory.mktemp("traced"), jaeger)
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def stub(service: ServiceProcess) -> Iterator[Any]:
    with grpc.insecure_channel(service.target) as channel:
        yield movies_pb2_grpc.MovieServiceStub(channel)


def traceparent() -> tuple[str, str, tuple[tuple[str, str]]]:
    """A client's trace id and span id, and the metadata that carries them (sampled)."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, (("traceparent", f"00-{trace_id}-{parent}-01"),)


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


class Tree:
    """A Jaeger trace as a tree: each span's parent, children and tags."""

    def __init__(self, trace: dict[str, Any]) -> None:
        self.spans = {span["spanID"]: span for span in trace["spans"]}
        self.processes = trace["processes"]

    def parent(self, span: dict[str, Any]) -> str | None:
        return next((ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"), None)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [span for span in self.spans.values() if span["operationName"] == name]

    def one(self, name: str) -> dict[str, Any]:
        (span,) = self.named(name)
        return span

    def under(self, ancestor: dict[str, Any]) -> list[dict[str, Any]]:
        """Every span below `ancestor`."""
        found = []
        for span in self.spans.values():
            parent = self.parent(span)
            while parent in self.spans:
                if parent == ancestor["spanID"]:
                    found.append(span)
                    break
                parent = self.parent(self.spans[parent])
        return found

    def with_tag(self, key: str, value: Any) -> list[dict[str, Any]]:
        return [span for span in self.spans.values() if tags(span).get(key) == value]


def server_span_checks(
    tree: Tree, parent: str | None, method: str = "Get", code: int = 0, service: str = "movieservice-test"
) -> dict[str, Any]:
    server = tree.one(f"/movies.v1.MovieService/{method}")
    assert tree.parent(server) == parent
    assert tags(server) | {
        "span.kind": "server",
        "rpc.system": "grpc",
        "rpc.service": "movies.v1.MovieService",
        "rpc.method": method,
        "rpc.grpc.status_code": code,
    } == tags(server)
    assert tree.processes[server["processID"]]["serviceName"] == service
    return server


@pytest.mark.slow
def test_a_miss_reads_mongodb_and_a_hit_does_not_each_one_trace_under_the_clients(jaeger, service, stub, seeded_ids):
    movie_id = seeded_ids[0]
    miss_trace, miss_parent, metadata = traceparent()
    stub.Get(movies_pb2.GetRequest(id=movie_id), metadata=metadata, timeout=10)
    time.sleep(0.5)  # the fill lands (in the background) before the second Get
    hit_trace, hit_parent, metadata = traceparent()
    stub.Get(movies_pb2.GetRequest(id=movie_id), metadata=metadata, timeout=10)

    # The miss: the lookup's HMGET, then (single flight) the fill lease, the
    # look again, MongoDB's find, and the fill in the background.
    miss = Tree(jaeger.trace(miss_trace, spans=9, root=GET))
    server = server_span_checks(miss, miss_parent)
    assert {span["spanID"] for span in miss.under(server)} == set(miss.spans) - {server["spanID"]}
    lookup = miss.one("movieservice.cache.lookup")
    assert tags(lookup) | {"movieservice.cache": "movie", "movieservice.cache.result": "miss"} == tags(lookup)
    (find,) = miss.with_tag("db.system", "mongodb")
    assert find["operationName"].endswith(".find")
    assert tags(find) | {
        "span.kind": "client",
        "db.name": "sample_mflix_test",
        "db.mongodb.collection": "movies",
        "db.statement": "find",
    } == tags(find)
    assert isinstance(tags(find)["net.peer.port"], int)
    flight = miss.one("movieservice.cache.single_flight")
    assert tags(flight)["movieservice.single_flight.shared"] is False
    assert find in miss.under(flight)
    redis_spans = miss.with_tag("db.system", "redis")
    assert {(s["operationName"], tags(s)["movieservice.redis.operation"]) for s in redis_spans} == {
        ("HMGET", "get"),  # the lookup, and the look again under the lease
        ("SET", "lease"),
        ("EVALSHA put_movie", "put"),
    }
    for span in redis_spans:
        assert tags(span) | {"span.kind": "client", "db.redis.database_index": 0, "net.transport": "ip_tcp"} == tags(
            span
        )
        assert tags(span)["db.operation"] == span["operationName"].split()[0]
        assert isinstance(tags(span)["net.peer.port"], int)
    fill = miss.one("movieservice.cache.fill")
    assert tags(fill)["movieservice.cache.fill.result"] == "applied"
    assert [s["operationName"] for s in miss.under(fill)] == ["EVALSHA put_movie"]

    # The hit: the lookup and its one HMGET, nothing to MongoDB.
    hit = Tree(jaeger.trace(hit_trace, spans=3, root=GET))
    server = server_span_checks(hit, hit_parent)
    assert not hit.with_tag("db.system", "mongodb")
    lookup = hit.one("movieservice.cache.lookup")
    assert tags(lookup)["movieservice.cache.result"] == "hit"
    assert [s["operationName"] for s in hit.under(lookup)] == ["HMGET"]
    assert len(hit.spans) == 3


@pytest.mark.slow
def test_status_codes_as_the_conventions_say(jaeger, stub):
    trace_id, parent, metadata = traceparent()
    with pytest.raises(grpc.RpcError) as raised:
        stub.Get(movies_pb2.GetRequest(id="0" * 24), metadata=metadata, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    tree = Tree(jaeger.trace(trace_id, spans=2, root=GET))
    server = server_span_checks(tree, parent, code=grpc.StatusCode.NOT_FOUND.value[0])
    # A client's error, not the server's: the span's status stays unset.
    assert "error" not in tags(server) and tags(server).get("otel.status_code") != "ERROR"

    trace_id, parent, metadata = traceparent()
    with pytest.raises(grpc.RpcError) as raised:
        stub.Get(movies_pb2.GetRequest(id="xyz"), metadata=metadata, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    server_span_checks(Tree(jaeger.trace(trace_id, root=GET)), parent, code=grpc.StatusCode.INVALID_ARGUMENT.value[0])


@pytest.mark.slow
def test_a_call_without_traceparent_starts_a_trace_of_its_own(jaeger, service, stub, seeded_ids):
    before = {t["traceID"] for t in jaeger.traces("movieservice-test", operation=GET)}
    answer = stub.Get(movies_pb2.GetRequest(id=seeded_ids[1]), timeout=10)
    assert answer.movie.id == seeded_ids[1]
    deadline = time.monotonic() + 30
    while not (new := [t for t in jaeger.traces("movieservice-test", operation=GET) if t["traceID"] not in before]):
        assert time.monotonic() < deadline, "the call's trace never reached Jaeger"
        time.sleep(0.2)
    (trace,) = new
    tree = Tree(trace)
    server_span_checks(tree, None)


@pytest.mark.slow
def test_log_lines_of_a_call_name_its_trace(jaeger, service, stub):
    trace_id, _, metadata = traceparent()
    movie = movies_pb2.Movie(title="Traced", year=2024)
    answer = stub.Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=metadata + WRITER, timeout=10)
    upsert = "/movies.v1.MovieService/Upsert"
    server = Tree(jaeger.trace(trace_id, root=upsert)).one(upsert)
    (line,) = [line for line in service.log.read_text().splitlines() if f"upsert movie={answer.movie.id}" in line]
    assert line.endswith(f"trace_id={trace_id} span_id={server['spanID']}")


@pytest.mark.slow
def test_the_latency_histogram_links_to_traces_jaeger_has(jaeger, service, stub, seeded_ids):
    _, _, metadata = traceparent()
    stub.Get(movies_pb2.GetRequest(id=seeded_ids[2]), metadata=metadata, timeout=10)
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.metrics_port}/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    exemplars = {
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handling_seconds_bucket"
        and sample.labels["grpc_method"] == "Get"
        and sample.exemplar is not None
    }
    assert exemplars
    for exemplar in exemplars:  # each leads to a trace of a Get
        assert Tree(jaeger.trace(exemplar, root=GET)).named(GET)
    # The Prometheus text format (what a scrape without exemplar storage asks for) is unchanged.
    assert " # {" not in urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics").read().decode()


@pytest.mark.slow
def test_background_polls_make_no_traces(jaeger, service, stub):
    time.sleep(3)  # health checks every 2 s, the repairs' to-do list every 1 s
    roots = set()
    for trace in jaeger.traces("movieservice-test", limit=5000):
        tree = Tree(trace)
        roots |= {s["operationName"] for s in tree.spans.values() if tree.parent(s) not in tree.spans}
    assert roots <= {f"/movies.v1.MovieService/{m}" for m in ("Get", "Upsert")} | {"movieservice.index.warm_up"}
    assert "movieservice.index.warm_up" in roots, "the start-up's index rebuilds are one trace"


@pytest.mark.slow
def test_with_ratio_sampling_the_clients_decision_holds_and_calls_without_context_are_drawn(
    settings, seeded_ids, jaeger, tmp_path: Path
):
    process = traced_service(
        settings,
        tmp_path,
        jaeger,
        OTEL_SERVICE_NAME="movieservice-ratio",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",  # no call without a client's context is traced
    )
    try:
        with grpc.insecure_channel(process.target) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)
            for movie_id in seeded_ids[:5]:
                stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10)
            sampled, sampled_parent, metadata = traceparent()
            stub.Get(movies_pb2.GetRequest(id=seeded_ids[5]), metadata=metadata, timeout=10)
            unsampled, parent = secrets.token_hex(16), secrets.token_hex(8)
            movie = movies_pb2.Movie(title="Not sampled")
            answer = stub.Upsert(
                movies_pb2.UpsertRequest(movie=movie),
                metadata=(("traceparent", f"00-{unsampled}-{parent}-00"), *WRITER),
                timeout=10,
            )
        tree = Tree(jaeger.trace(sampled, spans=9, root=GET))
        server_span_checks(tree, sampled_parent, service="movieservice-ratio")
        assert tree.with_tag("db.system", "mongodb") and tree.with_tag("db.system", "redis")
        time.sleep(1)  # what else was exported has arrived
        traces = jaeger.traces("movieservice-ratio")
        assert {t["traceID"] for t in traces if Tree(t).named(GET)} == {sampled}
        assert not [t for t in traces if t["traceID"] == unsampled]
        # Not exported, but its log line names the client's trace all the same.
        (line,) = [line for line in process.log.read_text().splitlines() if f"upsert movie={answer.movie.id}" in line]
        assert f"trace_id={unsampled}" in line
    finally:
        assert process.stop() == 0


@needs_prometheus
@pytest.mark.slow
def test_prometheus_keeps_the_exemplars_the_dashboard_links_to_jaeger(jaeger, service, stub, seeded_ids, tmp_path):
    """What Grafana asks for the latency panel's exemplars (its queries, to
    /api/v1/query_exemplars of a Prometheus storing them) leads to traces Jaeger has."""
    process, api, log = start_prometheus(tmp_path, service.metrics_port, "--enable-feature=exemplar-storage")
    try:
        (panel,) = [p for p in all_panels(dashboard()) if p["title"].startswith("Latency")]
        queries = [grafana_to_promql(target["expr"]) for target in panel["targets"] if target.get("exemplar")]
        assert queries, "the latency panel asks for exemplars"
        sent = set()
        started = time.time() - 60

        def linked() -> set[str]:
            trace_id, _, metadata = traceparent()
            stub.Get(movies_pb2.GetRequest(id=seeded_ids[3]), metadata=metadata, timeout=10)
            sent.add(trace_id)
            found = set()
            for query in queries:
                for series in api.get("/api/v1/query_exemplars", query=query, start=str(started), end=str(time.time())):
                    assert series["seriesLabels"]["grpc_method"] == "Get"
                    found |= {exemplar["labels"]["trace_id"] for exemplar in series["exemplars"]}
            return found & sent

        for trace_id in wait_until(linked, 30, lambda: f"no exemplar of ours stored:\n{log.read_text()[-2000:]}"):
            assert Tree(jaeger.trace(trace_id, root=GET)).named(GET)
    finally:
        assert stop(process) == 0


# Under load, with the collector slow, then gone


async def hammer(target: str, ids: list[str], stop: asyncio.Event, concurrency: int = 32) -> tuple[int, list[str]]:
    """Gets (hits, after the first round) until `stop`: how many succeeded, and the errors."""
    errors: list[str] = []
    done = 0

    async def worker(stub: Any, offset: int) -> None:
        nonlocal done
        index = offset
        while not stop.is_set():
            try:
                await stub.Get(movies_pb2.GetRequest(id=ids[index % len(ids)]), timeout=10)
                done += 1
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")
            index += 1

    async with grpc.aio.insecure_channel(target) as channel:
        stub = movies_pb2_grpc.MovieServiceStub(channel)
        await asyncio.gather(*(worker(stub, n) for n in range(concurrency)))
    return done, errors


def dropped(samples: dict[Any, float]) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "movieservice_trace_spans_dropped_total"
    }


@pytest.mark.slow
def test_a_slow_then_stopped_collector_fails_no_call_and_dropped_spans_are_counted(
    settings, seeded_ids, tmp_path: Path
):
    collector = jaeger_server(tmp_path / "jaeger").start()
    process = traced_service(
        settings,
        tmp_path,
        collector,
        # A small queue and a short export timeout, so that the queue fills within seconds.
        OTEL_BSP_MAX_QUEUE_SIZE="256",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="64",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    try:

        async def load() -> tuple[int, list[str]]:
            stop = asyncio.Event()
            running = asyncio.ensure_future(hammer(process.target, seeded_ids[:20], stop))
            await asyncio.sleep(1.5)
            collector.pause()  # slow: connections open, nothing answers
            await asyncio.sleep(4)
            collector.stop()  # gone
            await asyncio.sleep(4)
            stop.set()
            return await running

        done, errors = asyncio.run(load())
        assert errors == []
        assert done > 0
        drops = dropped(scrape(process.metrics_port))
        assert drops["queue_full"] + drops["export_failed"] > 0, drops
        handled = scrape(process.metrics_port)
        ok = sum(
            value
            for (name, labels), value in handled.items()
            if name == "grpc_server_handled_total" and dict(labels)["grpc_code"] == "OK"
        )
        assert ok >= done
    finally:
        collector.stop()
        assert process.stop() == 0, "the exporter's retries do not hold the exit"


@pytest.mark.slow
def test_each_worker_sets_up_traces_after_the_fork(settings, seeded_ids, jaeger, tmp_path: Path):
    process = traced_service(settings, tmp_path, jaeger, WORKERS="2", OTEL_SERVICE_NAME="movieservice-workers")
    try:
        trace_ids = []
        for connection in range(16):
            # A connection per channel: the kernel spreads them over the workers (SO_REUSEPORT).
            with grpc.insecure_channel(process.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                trace_id, _, metadata = traceparent()
                stub = movies_pb2_grpc.MovieServiceStub(channel)
                stub.Get(movies_pb2.GetRequest(id=seeded_ids[connection]), metadata=metadata, timeout=10)
                trace_ids.append(trace_id)
        pids = set()
        for trace_id in trace_ids:
            tree = Tree(jaeger.trace(trace_id, spans=3, root=GET))
            (server,) = tree.named(GET)
            process_tags = {t["key"]: t["value"] for t in tree.processes[server["processID"]]["tags"]}
            pids.add(process_tags["process.pid"])
        assert len(pids) == 2, "both workers sent traces"
        assert dropped(scrape(process.metrics_port)) == {"queue_full": 0, "export_failed": 0}
    finally:
        assert process.stop() == 0
