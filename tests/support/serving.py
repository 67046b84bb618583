"""`movieservice serve` as its own process with /metrics, as operators run it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from movieservice.config import Settings
from movieservice.devstack.processes import free_port, wait_for_port
from tests.conftest import VENV_BIN, service_env


def start_serving(
    settings: Settings, tmp_path: Path, metrics_port: int | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """The process, its gRPC and metrics ports and its log, once both ports accept connections."""
    grpc_port, metrics_port = free_port(), metrics_port or free_port()
    log = tmp_path / f"server-{grpc_port}.log"
    environment = service_env(settings) | {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(metrics_port)} | env
    process = spawn_movieservice(["serve"], environment, tmp_path, log)
    try:
        wait_for_port(grpc_port, 30, process)  # type: ignore[arg-type]
        wait_for_port(metrics_port, 30, process)  # type: ignore[arg-type]
    except BaseException:
        stop(process)
        raise
    return process, grpc_port, metrics_port, log


def spawn_movieservice(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`movieservice ARGS` from the project's virtualenv, run in `cwd`, its output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "movieservice"), *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a graceful drain), then the exit status; killed if it takes over 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
