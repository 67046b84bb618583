"""Several instances behind a real load balancer: Debian's nginx running
deployments/nginx/movieservice.conf in front of two service processes, and
gRPC's own client-side balancing with deployments/grpc-service-config.json.

An instance restarted gracefully under load through nginx (SIGTERM: health
NOT_SERVING, DRAIN_SECONDS of serving on during which the instance is taken out
of nginx's upstream with a reload, then a drain of the calls in flight) loses
no call; so does one restarted under clients balancing by themselves with
health checking; a write through one instance is read through the other at once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from movieservice.devstack.processes import ServerProcess, free_port, nginx_config, nginx_server
from movieservice.devstack.stack import ServiceProcess
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import PROJECT_ROOT
from tests.support.go import build_go_client, requires_go
from tests.support.scripts import load_script
from tests.support.stack import AUTH_TOKEN, Stack

pytestmark = pytest.mark.slow

SERVICE_CONFIG = PROJECT_ROOT / "deployments" / "grpc-service-config.json"
SERVICE = movies_pb2.DESCRIPTOR.services_by_name["MovieService"]
IDEMPOTENT_RPCS = {"Get", "TopRated", "Nearby"}
WRITER = (("authorization", f"Bearer {AUTH_TOKEN}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Long enough to see an instance draining (health NOT_SERVING, still answering).
DRAIN_SECONDS = 3
# The load lasts this long; an instance restarts within it (checked, not assumed).
LOAD_SECONDS = 30


@dataclass
class Instance:
    process: ServiceProcess
    metrics_port: int

    @property
    def target(self) -> str:
        return self.process.target


@dataclass
class Balanced:
    stack: Stack
    instances: list[Instance]
    nginx: ServerProcess

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.nginx.port}"

    @property
    def access_log(self) -> Path:
        return self.stack.directory / "nginx" / "access.log"

    def start_instance(self, port: int | None = None) -> Instance:
        return start_instance(self.stack, port)

    def reload_nginx(self, down: Instance | None = None) -> None:
        """Rewrite nginx's upstream (`down` marked down) and reload nginx
        gracefully; returns once its old worker, with the old upstream, exited."""
        log = self.stack.directory / "nginx" / "nginx.log"
        exited = log.read_text().count("exited with code")
        upstreams = [f"{i.target} down" if i is down else i.target for i in self.instances]
        nginx_config(self.stack.directory / "nginx", upstreams, self.nginx.port)
        self.nginx.process.send_signal(signal.SIGHUP)
        wait_until(lambda: log.read_text().count("exited with code") > exited, "nginx's old worker exits")


def start_instance(stack: Stack, port: int | None = None) -> Instance:
    """A service process of `stack` (on `port`, or a free one), with its own /metrics."""
    metrics_port = free_port()
    env = {
        "DRAIN_SECONDS": str(DRAIN_SECONDS),
        "METRICS_PORT": str(metrics_port),
        # Several instances serve one client: TopRated page tokens from one
        # must verify on the others.
        "PAGE_TOKEN_KEYS": "load-balancer-test-page-token-key",
        # Behind nginx every client has nginx's address.
        "AUTH_FAILURES_PER_MINUTE": "0",
    }
    if port is not None:
        env["GRPC_PORT"] = str(port)
    (process,) = stack.serve(1, **env)
    return Instance(process, metrics_port)


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    stack = Stack(tmp_path_factory.mktemp("load-balancer")).start(movies=200)
    try:
        instances = [start_instance(stack) for _ in range(2)]
        nginx = nginx_server(stack.directory / "nginx", [i.target for i in instances]).start()
        try:
            yield Balanced(stack, instances, nginx)
        finally:
            nginx.stop()
    finally:
        stack.close()


@pytest.fixture(scope="module")
def movie_id(balanced: Balanced) -> str:
    with grpc.insecure_channel(balanced.target) as channel:
        return stub(channel).TopRated(movies_pb2.TopRatedRequest(page_size=1), timeout=10).movies[0].id


def stub(channel: grpc.Channel) -> movies_pb2_grpc.MovieServiceStub:
    return movies_pb2_grpc.MovieServiceStub(channel)


def health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def handled(instance: Instance, method: str) -> float:
    """Calls of `method` the instance answered, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{instance.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "grpc_server_handled"
        for sample in family.samples
        if sample.name == "grpc_server_handled_total" and sample.labels.get("grpc_method") == method
    )


def wait_until(condition, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


_UPSTREAM = re.compile(r"upstream=\[([^\]]*)\]")


def calls_sent_to(access_log: Path, target: str, after: float = 0.0) -> int:
    """Calls nginx sent to `target` (first try or retry) that it logged after `after` (epoch seconds)."""
    count = 0
    for line in access_log.read_text().splitlines():
        stamp, _, rest = line.partition(" ")
        match = _UPSTREAM.search(rest)
        if match and float(stamp) > after and target in match.group(1):
            count += 1
    return count


# nginx


def test_health_and_every_rpc_through_nginx(balanced):
    assert health(balanced.target) == SERVING
    assert health(balanced.target, "movies.v1.MovieService") == SERVING
    with grpc.insecure_channel(balanced.target) as channel:
        page = stub(channel).TopRated(movies_pb2.TopRatedRequest(page_size=5), timeout=10)
        assert len(page.movies) == 5
        # The next page, wherever nginx sends it: the instances share PAGE_TOKEN_KEYS.
        for _ in range(4):
            request = movies_pb2.TopRatedRequest(page_size=5, page_token=page.next_page_token)
            assert stub(channel).TopRated(request, timeout=10).movies
        movie = stub(channel).Get(movies_pb2.GetRequest(id=page.movies[0].id), timeout=10).movie
        assert movie.id == page.movies[0].id
        nearby = stub(channel).Nearby(
            movies_pb2.NearbyRequest(latitude=40.7, longitude=-74.0, radius_km=1000), timeout=10
        )
        assert nearby.theaters
        with pytest.raises(grpc.RpcError) as refused:
            stub(channel).Upsert(movies_pb2.UpsertRequest(movie=movies_pb2.Movie(title="x")), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # least_conn spread those calls over both instances.
    for instance in balanced.instances:
        assert calls_sent_to(balanced.access_log, instance.target) > 0, instance.target


def test_no_instance_left_is_unavailable_with_a_message(tmp_path):
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    nginx = nginx_server(tmp_path / "nginx", [nowhere]).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{nginx.port}") as channel, pytest.raises(grpc.RpcError) as failed:
            stub(channel).Get(movies_pb2.GetRequest(id="0" * 24), timeout=10)
    finally:
        nginx.stop()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value.details() == "movieservice: no instance available"


def test_a_write_through_one_instance_is_read_through_the_other_at_once(balanced):
    first, second = balanced.instances
    movie_id = "5ca1ab1e0000000000000001"
    with grpc.insecure_channel(first.target) as one, grpc.insecure_channel(second.target) as other:
        for version in range(1, 6):
            writer, reader = (one, other) if version % 2 else (other, one)
            movie = movies_pb2.Movie(id=movie_id, title=f"Two instances, version {version}", year=2000 + version)
            stub(writer).Upsert(movies_pb2.UpsertRequest(movie=movie), metadata=WRITER, timeout=10)
            # The reader had the previous version cached (it read it last round).
            read = stub(reader).Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie
            assert (read.title, read.year) == (movie.title, movie.year)
            stub(writer).Get(movies_pb2.GetRequest(id=movie_id), timeout=10)


def test_a_graceful_restart_under_load_through_nginx_fails_no_call(balanced, movie_id, tmp_path):
    loadtest = load_script("loadtest")
    data = loadtest.write_data(balanced.target)
    reports: dict[str, Path] = {}
    load = threading.Thread(
        target=lambda: reports.update(
            loadtest.run_steady(balanced.target, AUTH_TOKEN, data, LOAD_SECONDS, tmp_path / "reports")
        )
    )
    started = time.time()
    load.start()
    restarted = balanced.instances[1]
    try:
        wait_until(lambda: calls_sent_to(balanced.access_log, restarted.target, after=started) >= 100, "load")

        # A graceful restart as a deploy tool runs it. SIGTERM: health turns
        # NOT_SERVING at once, and the instance keeps answering for DRAIN_SECONDS.
        restarted.process.process.send_signal(signal.SIGTERM)
        wait_until(lambda: health(restarted.target, "movieservice.instance") == NOT_SERVING, "NOT_SERVING")
        with grpc.insecure_channel(restarted.target) as channel:
            assert stub(channel).Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie.id == movie_id
        # Open-source nginx does not watch health: the tool takes the instance
        # out of the upstream and reloads nginx within the drain.
        balanced.reload_nginx(down=restarted)
        assert restarted.process.process.poll() is None, "the drain ended before nginx stopped sending"
        assert restarted.process.process.wait(timeout=60) == 0
        stopped = time.time()
        log = restarted.process.log.read_text()
        assert f"health is NOT_SERVING; serving {DRAIN_SECONDS}s more" in log and "stopped" in log

        balanced.instances[1] = replacement = balanced.start_instance(port=restarted.process.port)
        balanced.reload_nginx()
        wait_until(lambda: calls_sent_to(balanced.access_log, replacement.target, after=stopped) >= 20, "traffic back")
        assert load.is_alive(), f"the load ended before the restart did: raise LOAD_SECONDS ({LOAD_SECONDS})"
    finally:
        load.join()

    # Every call nginx took was answered by an instance (the last it tried):
    # none was lost to the restart.
    answered = Counter(
        (status, upstream.split(", ")[-1]) for status, upstream in _STATUSES.findall(balanced.access_log.read_text())
    )
    assert set(answered) == {("200", "200")}, answered
    # What the clients saw, by status code.
    codes: dict[str, dict[str, int]] = {}
    errors: Counter[str] = Counter()
    for name, path in reports.items():
        report = json.loads(path.read_text())
        codes[name] = report["statusCodeDistribution"]
        errors.update(report.get("errorDistribution") or {})
    calls = sum(sum(c.values()) for c in codes.values())
    failed = sum(n for c in codes.values() for code, n in c.items() if code != "OK")
    print(f"\n{calls} calls through nginx while an instance restarted, {failed} failed: {json.dumps(codes)}")
    # The one failure left is ghz's own (grpc-go 1.56): a call it starts on a
    # connection at the moment nginx's reload closes that connection (GOAWAY)
    # is retried only once, and fails when the retry meets the same connection.
    # It never reaches nginx, and happens at any nginx reload (see README).
    assert failed == errors[_GHZ_GOAWAY_RACE], errors


_STATUSES = re.compile(r'" (\d+) [\d.]+ upstream=\[[^\]]*\] upstream_status=\[([^\]]*)\]')
_GHZ_GOAWAY_RACE = "rpc error: code = Unavailable desc = the connection is draining"


# Client-side balancing


def service_config() -> dict:  # type: ignore[type-arg]
    return json.loads(SERVICE_CONFIG.read_text())  # type: ignore[no-any-return]


def test_the_service_config_retries_only_idempotent_rpcs_and_names_real_ones():
    config = service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    retried: set[str] = set()
    for entry in config["methodConfig"]:
        for name in entry["name"]:
            assert name["service"] == SERVICE.full_name and name["method"] in SERVICE.methods_by_name, name
            if "retryPolicy" in entry:
                assert entry["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
                retried.add(name["method"])
    assert retried == IDEMPOTENT_RPCS


def test_a_channel_with_the_service_config_balances_over_both_instances(balanced, movie_id):
    """round_robin over a target listing both instances: the calls reach both
    (pick_first, the default, would send them all to one), also while one of
    them restarts gracefully."""
    targets = ",".join(instance.target for instance in balanced.instances)
    options = [("grpc.service_config", SERVICE_CONFIG.read_text()), ("grpc.enable_retries", 1)]
    before = [handled(instance, "Get") for instance in balanced.instances]
    with grpc.insecure_channel(f"ipv4:{targets}", options=options) as channel:
        for _ in range(40):
            stub(channel).Get(movies_pb2.GetRequest(id=movie_id), timeout=10)
        after = [handled(instance, "Get") for instance in balanced.instances]
        assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)

        outcomes: Counter[str] = Counter()
        stop = threading.Event()

        def call_until_stopped() -> None:
            while not stop.is_set():
                try:
                    stub(channel).Get(movies_pb2.GetRequest(id=movie_id), timeout=10)
                    outcomes["OK"] += 1
                except grpc.RpcError as error:
                    outcomes[error.code().name] += 1

        callers = [threading.Thread(target=call_until_stopped) for _ in range(4)]
        for caller in callers:
            caller.start()
        try:
            restarted = balanced.instances[0]
            assert restarted.process.stop(60) == 0
            balanced.instances[0] = balanced.start_instance(port=restarted.process.port)
            calls = handled(balanced.instances[0], "Get")
            wait_until(lambda: handled(balanced.instances[0], "Get") > calls, "calls reach the new instance")
        finally:
            stop.set()
            for caller in callers:
                caller.join()
    print(f"\nclient-side balancing across a graceful restart: {dict(outcomes)}")
    assert set(outcomes) == {"OK"}, outcomes


@requires_go
def test_a_go_client_with_the_service_config_balances_and_rides_out_a_graceful_restart(
    balanced, movie_id, tmp_path_factory
):
    """The same service config in grpc-go (tests/interop/go -balance): its
    calls reach both instances, and none fails while one restarts gracefully."""
    client = build_go_client(tmp_path_factory.mktemp("interop-go"))
    targets = ",".join(instance.target for instance in balanced.instances)
    still = balanced.instances[1]
    before = handled(still, "Get")
    command = [*client, f"-balance={targets}", f"-service-config={SERVICE_CONFIG}", f"-id={movie_id}"]
    with subprocess.Popen([*command, f"-seconds={LOAD_SECONDS}"], stdout=subprocess.PIPE, text=True) as go:
        restarted = balanced.instances[0]
        wait_until(lambda: handled(restarted, "Get") > 0 and handled(still, "Get") > before, "calls reach both")
        assert restarted.process.stop(60) == 0
        balanced.instances[0] = balanced.start_instance(port=restarted.process.port)
        wait_until(lambda: handled(balanced.instances[0], "Get") > 0, "calls reach the new instance")
        output, _ = go.communicate(timeout=LOAD_SECONDS + 60)
    assert go.returncode == 0
    (line,) = output.splitlines()
    report = json.loads(line)
    print(f"\nGo client balancing across a graceful restart: {report['codes']}")
    assert set(report["codes"]) == {"OK"}, report


def test_workers_drain_together_under_the_supervisor(balanced, movie_id):
    """WORKERS > 1: the supervisor forwards SIGTERM to every worker, and each drains as one process does."""
    (supervisor,) = balanced.stack.serve(1, WORKERS="2", GRPC_PORT=str(free_port()), DRAIN_SECONDS=str(DRAIN_SECONDS))
    # The port answers once one worker serves; the signal waits for both (a worker
    # still starting has no handler yet, and SIGTERM would end it outright).
    wait_until(lambda: supervisor.log.read_text().count("serving movies.v1.MovieService") == 2, "both workers serving")
    supervisor.process.send_signal(signal.SIGTERM)
    # Every worker (a new connection may land on either) reports NOT_SERVING and still answers.
    for _ in range(10):
        wait_until(lambda: health(supervisor.target, "movieservice.instance") == NOT_SERVING, "NOT_SERVING")
        with grpc.insecure_channel(supervisor.target) as channel:
            assert stub(channel).Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie.id == movie_id
    assert supervisor.process.wait(timeout=60) == 0
    assert supervisor.log.read_text().count(f"health is NOT_SERVING; serving {DRAIN_SECONDS}s more") == 2
