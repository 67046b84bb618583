"""The web UI's tests: a `movieservice serve` process of their own (which a test
may stop and start again on the same ports), with /metrics, over the session's
Redis (under a key prefix of its own) and FerretDB."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from movieservice.config import Settings
from movieservice.devstack.processes import free_port, wait_for_port
from movieservice.devstack.stack import ServiceProcess, service_environment, spawn

UI_TOKEN = "ui-token"


def ui_service(
    settings: Settings, directory: Path, prefix: str, port: int = 0, metrics_port: int = 0, name: str = "ui-service"
) -> ServiceProcess:
    """Start the service on `port` and `metrics_port` (or free ones), writes allowed with UI_TOKEN."""
    port, metrics_port = port or free_port(), metrics_port or free_port()
    environment = service_environment(
        settings, AUTH_TOKEN=UI_TOKEN, REDIS_KEY_PREFIX=prefix, GRPC_PORT=str(port), METRICS_PORT=str(metrics_port)
    )
    service = spawn(environment, directory, name=name)
    wait_for_port(metrics_port, 60, service.process)
    return dataclasses.replace(service, metrics_port=metrics_port)


def metrics_url(service: ServiceProcess) -> str:
    return f"http://127.0.0.1:{service.metrics_port}/metrics"
