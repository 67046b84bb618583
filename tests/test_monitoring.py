"""The monitoring stack in deployments/: the Prometheus configuration and rules
checked and unit-tested by promtool, the Grafana files checked statically, and
all of it evaluated by a real Prometheus scraping a real server process that
was sent a known set of calls."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from movieservice.devstack.metrics import scrape
from movieservice.devstack.processes import free_port
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import PROJECT_ROOT
from tests.support.serving import start_serving, stop

DEPLOYMENTS = PROJECT_ROOT / "deployments"
PROMETHEUS_DIR = DEPLOYMENTS / "prometheus"
GRAFANA_DIR = DEPLOYMENTS / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "movieservice.json"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Debian's prometheus package ships both; scripts/install-tools.sh installs it.
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed: run `make setup`")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed: run `make setup`")

SERVICE = "movies.v1.MovieService"
MISSING_ID = "0" * 24  # well-formed, never in the data: NOT_FOUND
BAD_ID = "xyz"  # INVALID_ARGUMENT


# --- promtool ------------------------------------------------------------------


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    # From deployments/prometheus, so that rule_files: [alerts.yml] resolves.
    result = subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@needs_promtool
def test_prometheus_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_rules_are_valid():
    output = promtool("check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(rules_in_file())} rules found" in output


@needs_promtool
def test_rules_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def rules_in_file() -> list[str]:
    """The names of the recording and alerting rules in alerts.yml (no YAML parser in the venv)."""
    return re.findall(r"^\s*- (?:record|alert): (\S+)\s*$", (PROMETHEUS_DIR / "alerts.yml").read_text(), re.M)


def rule_groups_in_file() -> list[str]:
    return re.findall(r"^\s*- name: (\S+)\s*$", (PROMETHEUS_DIR / "alerts.yml").read_text(), re.M)


# --- Grafana, statically -------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_dashboard_panels_use_the_provisioned_datasource_and_have_queries():
    board = dashboard()
    assert board["uid"] == "movieservice"
    assert 36 <= board["schemaVersion"] <= 41
    panels = all_panels(board)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        assert panel.get("datasource", {}).get("uid") == "prometheus", panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", {"uid": "prometheus"})["uid"] == "prometheus", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    titles = " | ".join(panel["title"] for panel in panels).lower()
    for subject in ("requests per second", "error ratio", "latency", "hit ratio", "redis", "mongodb",
                    "errors", "circuit breaker", "coalesced", "fill lag"):  # fmt: skip
        assert subject in titles, subject


def test_dashboard_method_variable():
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "method"]
    assert variable["datasource"]["uid"] == "prometheus"
    assert re.fullmatch(r"label_values\(grpc_server_started_total(\{[^}]*\})?, grpc_method\)", method_query())
    # Every gRPC panel filters on it.
    grpc_exprs = [e for e in dashboard_exprs() if "grpc_server_" in e]
    assert grpc_exprs
    assert all('grpc_method=~"$method"' in e for e in grpc_exprs)


def method_query() -> str:
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "method"]
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in all_panels(dashboard()) for t in p.get("targets", [])]


def test_grafana_provisioning_files():
    datasource = (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s*- name: Prometheus\s*$", datasource, re.M)
    assert re.search(r"^\s*uid: prometheus\s*$", datasource, re.M)
    assert re.search(r"^\s*type: prometheus\s*$", datasource, re.M)
    assert re.search(r"^\s*url: http://prometheus:9090\s*$", datasource, re.M)
    provider = (GRAFANA_DIR / "provisioning" / "dashboards" / "movieservice.yml").read_text()
    assert re.search(r"^\s*type: file\s*$", provider, re.M)
    assert re.search(r"^\s*path: /var/lib/grafana/dashboards\s*$", provider, re.M)


# --- end to end: a real server, a real Prometheus ------------------------------


class PrometheusAPI:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.base}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400/422 carry the error as JSON
            body = json.loads(error.read())
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def by(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in self.query(expr)}


def wait_until(condition: Callable[[], Any], timeout: float, message: Callable[[], str] | str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (OSError, AssertionError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.1)


def start_prometheus(
    tmp_path: Path, metrics_port: int, *flags: str
) -> tuple[subprocess.Popen[bytes], PrometheusAPI, Path]:
    """The shipped prometheus.yml and alerts.yml, with 1 s intervals and the test server as the only
    target; `flags` added to Prometheus' command line."""
    assert PROMETHEUS is not None
    directory = tmp_path / "prometheus"
    directory.mkdir()
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", directory / "alerts.yml")
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    for pattern, replacement in (
        (r"(scrape_interval|evaluation_interval): 15s", r"\1: 1s"),
        (r'"movieservice:9464"', f'"127.0.0.1:{metrics_port}"'),
    ):
        config, count = re.subn(pattern, replacement, config)
        assert count, f"{pattern} not in prometheus.yml: the test's rewrite needs updating"
    (directory / "prometheus.yml").write_text(config)
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    api = PrometheusAPI(port)

    def ready() -> bool:
        assert process.poll() is None, f"prometheus exited:\n{log.read_text()}"
        with urllib.request.urlopen(f"{api.base}/-/ready", timeout=2) as response:
            return response.status == 200

    try:
        wait_until(ready, 30, lambda: f"prometheus did not become ready:\n{log.read_text()}")
    except BaseException:
        stop(process)
        raise
    return process, api, log


def last_scrape(api: PrometheusAPI) -> float:
    """Unix time at which the latest scrape of the server started (0 before the first)."""
    # timestamp() of a bare selector is the sample's; of anything else
    # (`up == 1`, say) it would be the evaluation time.
    result = api.query('timestamp(up{job="movieservice"})')
    return float(result[0]["value"][1]) if result else 0.0


def wait_for_scrape_after(api: PrometheusAPI, moment: float) -> float:
    """Wait until Prometheus has scraped the server after `moment` (so it saw everything before)."""
    return float(wait_until(lambda: (ts := last_scrape(api)) > moment and ts, 20, "no scrape after the calls"))


def parse_time(text: str) -> float:
    # Prometheus writes nanoseconds; datetime takes microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def rule_groups_evaluated_after(api: PrometheusAPI, moment: float) -> list[dict[str, Any]]:
    groups = api.get("/api/v1/rules")["groups"]
    if groups and all(parse_time(g["lastEvaluation"]) > moment for g in groups):
        return list(groups)
    return []


def grafana_to_promql(expr: str, method: str = "Get") -> str:
    """What Grafana sends for a panel query with $method = `method`."""
    for variable, value in (
        ("$__rate_interval", "1m"),
        ("${__rate_interval}", "1m"),
        ("$__interval", "1m"),
        ("${__interval}", "1m"),
        ("${method}", method),
        ("$method", method),
    ):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unhandled Grafana variable in {expr}"
    return expr


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def prometheus(tmp_path, metrics_port) -> Iterator[PrometheusAPI]:
    # Started before the server: Prometheus passes new targets to its scrapers
    # only every 5 s, a wait that then overlaps the server's start-up.
    process, api, log = start_prometheus(tmp_path, metrics_port)
    try:
        yield api
    finally:
        assert stop(process) == 0, log.read_text()


@pytest.fixture
def service(settings, seeded_ids, redis_client, tmp_path, metrics_port) -> Iterator[tuple[int, Path]]:
    # An empty Redis makes every count below deterministic: the first Get of
    # each id misses, and the warm-up rebuilds both indexes exactly once.
    redis_client.flushall()
    process, grpc_port, _, log = start_serving(settings, tmp_path, metrics_port)
    try:
        yield grpc_port, log
    finally:
        assert stop(process) == 0, log.read_text()


@needs_prometheus
@pytest.mark.slow
def test_prometheus_scrapes_the_service_and_evaluates_every_dashboard_and_rule_expression(
    prometheus, service, metrics_port, seeded_ids
):
    api = prometheus
    grpc_port, service_log = service
    ids = seeded_ids[:7]

    def metric(name: str, **labels: str) -> float:
        return scrape(metrics_port).get((name, tuple(sorted(labels.items()))), 0.0)

    def fills() -> float:
        return metric("movieservice_cache_fill_lag_seconds_count")

    # The warm-up rebuilds the TopRated and geo indexes in the background: wait
    # for it, so that the calls below find both indexes ready.
    wait_until(
        lambda: (
            metric("movieservice_index_rebuilds_total", index="top_rated")
            and metric("movieservice_index_rebuilds_total", index="geo")
        ),
        30,
        lambda: f"the warm-up did not rebuild the indexes:\n{service_log.read_text()}",
    )

    # A first successful scrape before any call: the cache counters (created at
    # 0 when the service starts) then have a zero sample, so rates over them
    # count every call made below.
    wait_until(
        lambda: api.query('movieservice_cache_lookups_total{job="movieservice", cache="movie"}'),
        30,
        "Prometheus did not scrape the server",
    )
    assert api.value('up{job="movieservice"}') == 1

    expected: dict[tuple[str, str], int] = {}

    def called(method: str, code: grpc.StatusCode, n: int = 1) -> None:
        expected[method, code.name] = expected.get((method, code.name), 0) + n

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = movies_pb2_grpc.MovieServiceStub(ch)

        def fails(code: grpc.StatusCode, call: Callable[..., Any], request: Any, **kwargs: Any) -> None:
            with pytest.raises(grpc.RpcError) as error:
                call(request, timeout=10, **kwargs)
            assert error.value.code() == code, error.value

        # Round 1: 7 misses, then wait until their background cache fills are done.
        for movie_id in ids:
            stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10)
        called("Get", grpc.StatusCode.OK, 7)
        wait_until(lambda: fills() >= 7, 10, "the misses were not cached")
        # Let Prometheus see round 1, so that rates over Get see round 2 at least.
        wait_for_scrape_after(api, time.time())

        # Round 2: 7 hits.
        for movie_id in ids:
            stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10)
        called("Get", grpc.StatusCode.OK, 7)
        # 3 NOT_FOUND: a miss that caches "does not exist", then 2 negative hits.
        fails(grpc.StatusCode.NOT_FOUND, stub.Get, movies_pb2.GetRequest(id=MISSING_ID))
        wait_until(lambda: fills() >= 8, 10, "the negative entry was not cached")
        for _ in range(2):
            fails(grpc.StatusCode.NOT_FOUND, stub.Get, movies_pb2.GetRequest(id=MISSING_ID))
        called("Get", grpc.StatusCode.NOT_FOUND, 3)
        # 4 INVALID_ARGUMENT: rejected before any cache lookup.
        for _ in range(4):
            fails(grpc.StatusCode.INVALID_ARGUMENT, stub.Get, movies_pb2.GetRequest(id=BAD_ID))
        called("Get", grpc.StatusCode.INVALID_ARGUMENT, 4)

        for genre in ("", "Drama", ""):
            stub.TopRated(movies_pb2.TopRatedRequest(genre=genre, page_size=5), timeout=10)
        called("TopRated", grpc.StatusCode.OK, 3)
        fails(grpc.StatusCode.INVALID_ARGUMENT, stub.TopRated, movies_pb2.TopRatedRequest(page_size=-1))
        called("TopRated", grpc.StatusCode.INVALID_ARGUMENT)

        for latitude, longitude in ((44.85, -93.24), (40.71, -74.0)):
            stub.Nearby(movies_pb2.NearbyRequest(latitude=latitude, longitude=longitude, radius_km=50), timeout=10)
        called("Nearby", grpc.StatusCode.OK, 2)
        fails(grpc.StatusCode.INVALID_ARGUMENT, stub.Nearby, movies_pb2.NearbyRequest(latitude=100.0))
        called("Nearby", grpc.StatusCode.INVALID_ARGUMENT)

        # Upsert without a token: a client error (nothing is written).
        for _ in range(2):
            fails(grpc.StatusCode.UNAUTHENTICATED, stub.Upsert, movies_pb2.UpsertRequest())
        called("Upsert", grpc.StatusCode.UNAUTHENTICATED, 2)
    done = time.time()

    scraped = wait_for_scrape_after(api, done)

    # What Prometheus stored is exactly what was driven.
    selector = f'job="movieservice", grpc_service="{SERVICE}"'
    handled = api.by(
        f"sum by (grpc_method, grpc_code) (grpc_server_handled_total{{{selector}}})", "grpc_method", "grpc_code"
    )
    assert {key: value for key, value in handled.items() if value} == expected
    started = api.by(f"sum by (grpc_method) (grpc_server_started_total{{{selector}}})", "grpc_method")
    per_method: dict[tuple[str], float] = {}
    for (method, _), n in expected.items():
        per_method[(method,)] = per_method.get((method,), 0) + n
    assert started == per_method
    lookups = api.by('sum by (result) (movieservice_cache_lookups_total{cache="movie"})', "result")
    assert lookups == {("hit",): 7, ("miss",): 8, ("negative_hit",): 2, ("error",): 0}

    # Rules: every group evaluated after that scrape, and healthy. (A scrape's
    # samples carry its start time but are stored when it ends, a few ms later:
    # the half second keeps an evaluation in between from counting.)
    groups = wait_until(
        lambda: rule_groups_evaluated_after(api, scraped + 0.5),
        20,
        "the rule groups were not evaluated after the scrape",
    )
    assert sorted(g["name"] for g in groups) == sorted(rule_groups_in_file())
    loaded = [rule for g in groups for rule in g["rules"]]
    assert sorted(rule["name"] for rule in loaded) == sorted(rules_in_file())
    for rule in loaded:
        assert rule["health"] == "ok", rule
        assert not rule.get("lastError"), rule

    # The movie cache hit ratio, as the recording rule and the dashboard
    # compute it: (7 hits + 2 negative hits) / 17 lookups.
    hit_ratio = 9 / 17
    assert api.value('movieservice:cache_hits:ratio_rate5m{job="movieservice", cache="movie"}') == pytest.approx(
        hit_ratio, rel=1e-9
    )
    (stat,) = [p for p in all_panels(dashboard()) if p["title"] == "Movie cache hit ratio"]
    # [5m] rather than [1m]: the window must reach back to the zero sample
    # scraped before the calls, however long the test took.
    stat_expr = stat["targets"][0]["expr"].replace("$__rate_interval", "5m")
    assert api.value(stat_expr) == pytest.approx(hit_ratio, rel=1e-9)
    # No server-side error was driven; the client errors are not counted.
    errors = api.by(f'movieservice:grpc_server_errors:ratio_rate5m{{grpc_service="{SERVICE}"}}', "grpc_method")
    assert errors[("Get",)] == 0, errors
    p99 = api.value('movieservice:grpc_server_handling_seconds:p99_rate5m{grpc_method="Get"}')
    assert 0 < p99 <= 10, p99

    # Every rule's expression, as Prometheus loaded it, also runs as a query.
    for rule in loaded:
        api.query(rule["query"])

    # Every dashboard expression runs, and the panels that the calls above
    # feed return data (a label typo would leave them silently empty).
    panels_with_data = set()
    for panel in all_panels(dashboard()):
        for target in panel.get("targets", []):
            if api.query(grafana_to_promql(target["expr"])):
                panels_with_data.add(panel["title"])
    may_be_empty = {
        "Dependency errors per second by kind",  # no Redis or MongoDB errors here
    }
    with_queries = {p["title"] for p in all_panels(dashboard()) if p.get("targets")}
    assert with_queries - may_be_empty <= panels_with_data, with_queries - may_be_empty - panels_with_data

    # The $method variable's query, as Grafana runs it (the series API).
    variable = re.fullmatch(r"label_values\((.+), grpc_method\)", method_query())
    assert variable
    methods = api.get("/api/v1/label/grpc_method/values", **{"match[]": variable.group(1)})
    assert set(methods) == {"Get", "TopRated", "Nearby", "Upsert"}

    # A healthy service: nothing fires.
    alerts = api.get("/api/v1/alerts")["alerts"]
    assert not [a for a in alerts if a["state"] == "firing"], alerts
