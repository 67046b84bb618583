"""`movieservice serve` as its own process with /metrics, as operators run it
(started by the project's harness, movieservice.devstack.stack)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from movieservice.config import Settings
from movieservice.devstack.stack import MOVIESERVICE, ServiceProcess, service_environment, spawn


def start_serving(
    settings: Settings, tmp_path: Path, metrics_port: int | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """The process, its gRPC and metrics ports and its log, once both ports accept connections."""
    environment = service_environment(settings) | env
    if metrics_port is not None:
        environment["METRICS_PORT"] = str(metrics_port)
        service = spawn(environment, tmp_path, name="server")
        service.metrics_port = metrics_port
    else:
        service = spawn(environment, tmp_path, name="server", metrics=True)
    return service.process, service.port, service.metrics_port, service.log


def spawn_movieservice(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`movieservice ARGS` from the project's virtualenv, run in `cwd`, its output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen([str(MOVIESERVICE), *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a graceful drain), then the exit status; killed if it takes over 30 s."""
    return ServiceProcess(process, 0, 0, Path()).stop()
