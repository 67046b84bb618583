"""The load generators (h2load, ghz), run on the load core, and what the
benchmark reads of the processes they load (CPU time, resident memory)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from movieservice.devstack.processes import PROJECT_ROOT, find_tool

SERVER_CORE = "0"
LOAD_CORE = "1"
SERVICE = "movies.v1.MovieService"
PROTO = "proto/movies/v1/movies.proto"  # relative to PROJECT_ROOT, where ghz runs
# h2load's connections and streams per connection: enough concurrency to keep
# one server core busy, little enough that h2load itself stays light.
H2LOAD_CONNECTIONS = 8
H2LOAD_STREAMS = 16


def grpc_body_file(path: Path, message: Message) -> Path:
    """`message` framed as one gRPC message (flag byte 0, 4-byte big-endian
    length, the bytes): the body h2load posts."""
    data = message.SerializeToString()
    path.write_bytes(b"\0" + struct.pack(">I", len(data)) + data)
    return path


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (/proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class Throughput:
    """One h2load run: requests per second, and the server's CPU time for them."""

    requests: int
    rps: float
    server_cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_seconds * 1e6 / self.requests


class LoadFailed(RuntimeError):
    pass


def h2load(target: str, method: str, body: Path, requests: int, server_pids: Sequence[int]) -> Throughput:
    """`requests` unary calls of `method` with `body`, over HTTP/2 with h2load.

    h2load checks the HTTP status only, not grpc-status: callers check once
    with a real gRPC client that the call succeeds before loading it.
    """
    before = cpu_seconds(server_pids)
    started = time.perf_counter()
    result = subprocess.run(
        ["taskset", "-c", LOAD_CORE, find_tool("h2load"), "-n", str(requests),
         "-c", str(H2LOAD_CONNECTIONS), "-m", str(H2LOAD_STREAMS), "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{target}/{SERVICE}/{method}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    cpu = cpu_seconds(server_pids) - before
    finished = re.search(r"finished in .*?, ([\d.]+) req/s", result.stdout)
    failed = re.search(r"(\d+) failed", result.stdout)
    if finished is None or failed is None:
        raise LoadFailed(f"unexpected h2load output against {target}:\n{result.stdout}")
    if int(failed.group(1)):
        raise LoadFailed(f"h2load saw {failed.group(1)} failed requests against {target}/{method}")
    return Throughput(requests, float(finished.group(1)), cpu, wall)


@dataclass(frozen=True)
class GhzReport:
    """The parts of ghz's JSON report the rows use."""

    rps: float
    count: int
    status_codes: dict[str, int]
    # percentage -> latency in milliseconds
    percentiles_ms: dict[int, float]

    @classmethod
    def parse(cls, report: Mapping[str, Any]) -> GhzReport:
        return cls(
            rps=float(report["rps"]),
            count=int(report["count"]),
            status_codes={str(k): int(v) for k, v in (report.get("statusCodeDistribution") or {}).items()},
            percentiles_ms={
                int(entry["percentage"]): float(entry["latency"]) / 1e6
                for entry in report.get("latencyDistribution") or []
            },
        )

    def percentile_ms(self, percentage: int) -> float:
        return self.percentiles_ms.get(percentage, float("nan"))

    @property
    def all_ok(self) -> bool:
        return self.status_codes == {"OK": self.count}

    def summary(self) -> str:
        return f"{self.rps:.0f} rps, p50 {self.percentile_ms(50):.1f} ms, p99 {self.percentile_ms(99):.1f} ms"


def ghz(
    target: str,
    method: str,
    data: list[dict[str, Any]],
    *,
    total: int,
    concurrency: int,
    work: Path,
    metadata: dict[str, str] | None = None,
    connections: int = 4,
) -> GhzReport:
    """`total` calls of `method`, `concurrency` at a time, taking their
    requests from `data` in turn (ghz's JSON report, parsed)."""
    data_file = work / f"ghz-{method}.json"
    data_file.write_text(json.dumps(data))
    argv = [
        "taskset", "-c", LOAD_CORE, find_tool("ghz"), "--insecure", "--proto", PROTO,
        "-i", "proto", "--call", f"{SERVICE}.{method}", "--data-file", str(data_file),
        "-n", str(total), "-c", str(concurrency), "--connections", str(min(connections, concurrency)), "-O", "json",
    ]  # fmt: skip
    if metadata:
        argv += ["-m", json.dumps(metadata)]
    result = subprocess.run([*argv, target], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return GhzReport.parse(json.loads(result.stdout))
