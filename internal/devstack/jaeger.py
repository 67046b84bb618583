"""Jaeger (the trace backend of the tests and the benchmark) on free loopback
ports: OTLP/gRPC in, traces kept in memory, its HTTP query API out.

Jaeger v2 (`cmd/jaeger`, built by scripts/install-tools.sh) is an
OpenTelemetry Collector distribution configured by a YAML file; this one has
the OTLP gRPC receiver, the in-memory store and the query extension only, each
on a port of its own, and no metrics endpoint (the default would take 8888).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movieservice.devstack.processes import ServerProcess, find_tool, free_port, wait_for_port

_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
"""


@dataclass
class JaegerProcess(ServerProcess):
    """`port` is the OTLP/gRPC receiver's; `query_port` serves /api/traces."""

    query_port: int = 0

    @property
    def otlp_endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT is set to for a service to send here."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> JaegerProcess:
        super().start(timeout)
        wait_for_port(self.query_port, timeout, self.process)
        return self

    def api(self, path: str, **query: str) -> Any:
        """GET the query API (`/api/...`), decoded."""
        url = f"http://127.0.0.1:{self.query_port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def trace(self, trace_id: str, *, spans: int = 1, root: str = "", timeout: float = 30.0) -> dict[str, Any]:
        """The trace `trace_id` (Jaeger's JSON: spans, processes) once it holds
        at least `spans` spans, among them one named `root` if given (a server
        span ends after its children, and may come in a later batch);
        TimeoutError when it does not in time."""
        deadline = time.monotonic() + timeout
        found: list[Any] = []
        while time.monotonic() < deadline:
            try:
                found = self.api(f"/api/traces/{trace_id}").get("data") or []
            except OSError:  # 404 until the first span arrives
                found = []
            complete = found and len(found[0]["spans"]) >= spans
            if complete and (not root or any(span["operationName"] == root for span in found[0]["spans"])):
                return dict(found[0])
            time.sleep(0.2)
        have = len(found[0]["spans"]) if found else 0
        raise TimeoutError(f"trace {trace_id}: {have} spans after {timeout}s, expected at least {spans}")

    def traces(self, service: str, limit: int = 1000, **query: str) -> list[dict[str, Any]]:
        """The latest traces with spans of `service` (Jaeger's search)."""
        return list(self.api("/api/traces", service=service, limit=str(limit), **query).get("data") or [])


def jaeger_server(directory: Path, *, cpus: str | None = None) -> JaegerProcess:
    """Jaeger with its config and log in `directory`, on free loopback ports; `cpus` pins it (taskset)."""
    directory.mkdir(parents=True, exist_ok=True)
    otlp_port, query_port = free_port(), free_port()
    config = directory / "jaeger.yaml"
    config.write_text(_CONFIG.format(otlp_port=otlp_port, query_port=query_port, query_grpc_port=free_port()))
    argv = [*(["taskset", "-c", cpus] if cpus else []), find_tool("jaeger"), f"--config=file:{config}"]
    return JaegerProcess("jaeger", otlp_port, argv, directory / "jaeger.log", query_port=query_port)
