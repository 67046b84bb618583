#!/usr/bin/env python3
"""ghz load tests for every RPC, with pass/fail thresholds (`make loadtest`).

Each scenario is a ghz config in scripts/loadtest/*.json; ghz has no
thresholds of its own, so each config carries them in its `tags`
(`max_error_rate`, a fraction, and `max_p99_ms`) and this script checks them
against ghz's JSON report. Data that depends on the running service (movie
ids) is generated into reports/loadtest/data/ first.

A scenario alone runs flat out (its `concurrency` requests always in flight).
The mixed scenario runs all four at once, each at a steady rate (its config's
`mixed_rps` tag, together about 40% of what a 2-core machine serves) for
MIXED_SECONDS: flat out, four load generators queue behind one another and
the p99 measures the queue, not the service.

Without --target, it starts the local stack (as `make run` does, data under
.data/loadtest) and a `movieservice serve` process, and stops them after.

Usage:
  scripts/loadtest.py [--target HOST:PORT --token TOKEN] [--quick] [SCENARIO ...]
Scenarios: get, upsert, top_rated, nearby, mixed (all four at once); default: all.
Reports: reports/loadtest/<scenario>.json (and .html unless --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from movieservice.devstack.processes import find_tool  # noqa: E402
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc  # noqa: E402

CONFIGS = ROOT / "scripts" / "loadtest"
REPORTS = ROOT / "reports" / "loadtest"
SCENARIOS = ("get", "upsert", "top_rated", "nearby")
# --quick checks that every scenario runs and answers without errors (in CI,
# on a shared machine beside the whole test stack); latency limits are for
# full runs, where the numbers mean something.
QUICK_TOTAL = 200
QUICK_CONCURRENCY = 4
MIXED_SECONDS = 20
UPSERT_MOVIES = 500


def load_config(name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return config


# Data that depends on the service


def seeded_ids(stub: movies_pb2_grpc.MovieServiceStub) -> list[str]:
    """Ids of the ranked movies, read through the API (works against any target)."""
    ids: list[str] = []
    token = ""
    while True:
        page = stub.TopRated(movies_pb2.TopRatedRequest(page_size=100, page_token=token), timeout=30)
        ids += [movie.id for movie in page.movies]
        token = page.next_page_token
        if not token:
            return ids


def get_requests(ids: list[str], count: int = 2000) -> list[dict[str, Any]]:
    rng = random.Random(7)
    # A skewed draw: a few movies often (cache hits), many rarely (first sightings miss).
    weights = [1 / (rank + 1) for rank in range(len(ids))]
    return [{"id": movie_id} for movie_id in rng.choices(ids, weights, k=count)]


def upsert_requests() -> list[dict[str, Any]]:
    genres = ["Drama", "Comedy", "War", "Western", "Film-Noir"]
    return [
        {
            "movie": {
                "id": f"{0x10AD7E570000000000000000 + i:024x}",
                "title": f"Load test movie {i}",
                "year": 1950 + i % 70,
                "genres": [genres[i % 5], genres[(i * 7) % 5]],
                "imdb": {"rating": round(1 + (i * 37 % 90) / 10, 1), "votes": 100 + i * 13},
            }
        }
        for i in range(UPSERT_MOVIES)
    ]


def write_data(target: str) -> dict[str, Path]:
    """Generate the data files the configs name; returns scenario -> path."""
    data = REPORTS / "data"
    data.mkdir(parents=True, exist_ok=True)
    with grpc.insecure_channel(target) as channel:
        ids = seeded_ids(movies_pb2_grpc.MovieServiceStub(channel))
    if not ids:
        raise SystemExit("loadtest: the service has no ranked movies; seed it first")
    files = {"get": data / "get.json", "upsert": data / "upsert.json"}
    files["get"].write_text(json.dumps(get_requests(ids)))
    files["upsert"].write_text(json.dumps(upsert_requests()))
    return files


# Running ghz and judging its report


def run_ghz(name: str, target: str, token: str, data: dict[str, Path], quick: bool, mixed: bool = False) -> Path:
    config = load_config(name)
    report = REPORTS / f"{'mixed-' if mixed else ''}{name}.json"
    options: list[str] = []
    total = int(config["total"])
    if mixed:
        rate = int(config["tags"]["mixed_rps"])
        options.append(f"--rps={rate}")
        total = rate * MIXED_SECONDS
    options.append(f"--total={QUICK_TOTAL if quick else total}")
    if quick:
        options.append(f"--concurrency={min(int(config['concurrency']), QUICK_CONCURRENCY)}")
    return ghz(name, target, token, data, options, report, ["json"] if quick else ["json", "html"])


def ghz(
    name: str, target: str, token: str, data: dict[str, Path], options: list[str], report: Path, formats: list[str]
) -> Path:
    """Run scenario `name`'s config with `options` added, once per report format; returns the JSON report."""
    argv = [find_tool("ghz"), f"--config={CONFIGS / f'{name}.json'}", *options]
    if name in data:
        argv.append(f"--data-file={data[name]}")
    if name == "upsert":
        argv.append("--metadata=" + json.dumps({"authorization": f"Bearer {token}"}))
    for fmt in formats:
        output = report.with_suffix(f".{fmt}")
        # The configs name the .proto relative to the project root.
        result = subprocess.run(
            [*argv, f"--format={fmt}", f"--output={output}", target], cwd=ROOT, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"loadtest: ghz failed on {name}: {result.stderr.strip()}")
    return report.with_suffix(".json")


def run_steady(target: str, token: str, data: dict[str, Path], seconds: float, reports: Path) -> dict[str, Path]:
    """Every RPC at once, each at its steady rate (its config's `mixed_rps`), for
    `seconds`: the mixed scenario's load for as long as a caller needs it (the
    load-balancer test restarts an instance meanwhile). Returns each scenario's
    JSON report, in `reports`."""
    reports.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    failures: dict[str, str] = {}

    def one(name: str) -> None:
        rate = int(load_config(name)["tags"]["mixed_rps"])
        options = [f"--rps={rate}", f"--total={int(rate * seconds)}"]
        try:
            paths[name] = ghz(name, target, token, data, options, reports / f"{name}.json", ["json"])
        except SystemExit as failure:  # (a thread would swallow it)
            failures[name] = str(failure)

    threads = [threading.Thread(target=one, args=(name,)) for name in SCENARIOS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("; ".join(failures.values()))
    return paths


def judge(name: str, report_path: Path, *, latency_limits: bool = True) -> tuple[bool, str]:
    report = json.loads(report_path.read_text())
    thresholds = load_config(name)["tags"]
    count = report["count"]
    ok = report.get("statusCodeDistribution", {}).get("OK", 0)
    error_rate = (count - ok) / count if count else 1.0
    p99_ms = next((d["latency"] for d in report["latencyDistribution"] or [] if d["percentage"] == 99), 0) / 1e6
    fast_enough = p99_ms <= float(thresholds["max_p99_ms"]) or not latency_limits
    passed = error_rate <= float(thresholds["max_error_rate"]) and fast_enough
    limit = thresholds["max_p99_ms"] if latency_limits else "not judged"
    line = (
        f"{name:10} {'PASS' if passed else 'FAIL'}  {count:6d} calls  {report['rps']:8.0f} rps  "
        f"p99 {p99_ms:7.1f} ms (max {limit})  "
        f"errors {error_rate:.2%} (max {float(thresholds['max_error_rate']):.2%})"
    )
    if error_rate:
        line += f"  {report.get('statusCodeDistribution')}"
    return passed, line


def run(target: str, token: str, scenarios: list[str], quick: bool) -> bool:
    REPORTS.mkdir(parents=True, exist_ok=True)
    data = write_data(target)
    results: list[tuple[bool, str]] = []
    for name in scenarios:
        if name == "mixed":
            results += run_mixed(target, token, data, quick)
        else:
            results.append(judge(name, run_ghz(name, target, token, data, quick), latency_limits=not quick))
    for _, line in results:
        print(line)
    summary = [{"scenario": line.split()[0], "passed": passed, "line": line} for passed, line in results]
    (REPORTS / "summary.json").write_text(json.dumps(summary, indent=2))
    return all(passed for passed, _ in results)


def run_mixed(target: str, token: str, data: dict[str, Path], quick: bool) -> list[tuple[bool, str]]:
    """All four RPCs at once, each at its steady rate, each judged by its own thresholds."""
    reports: dict[str, Path] = {}

    def one(name: str) -> None:
        reports[name] = run_ghz(name, target, token, data, quick, mixed=True)

    threads = [threading.Thread(target=one, args=(name,)) for name in SCENARIOS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = []
    for name in SCENARIOS:
        passed, line = judge(name, reports[name], latency_limits=not quick)
        results.append((passed, "mixed/" + line))
    return results


# The local stack, when no target is given


@contextmanager
def local_service() -> Iterator[tuple[str, str]]:
    """The local stack (as `make run` starts it, data under .data/loadtest) and a service process."""
    from dataclasses import replace

    from movieservice.config import configured_names, load_settings
    from movieservice.devstack.stack import local_dependencies, service_environment, spawn

    token = "loadtest-token"
    data = ROOT / ".data" / "loadtest"
    with ExitStack() as stack:
        settings = stack.enter_context(local_dependencies(load_settings(), data, configured_names()))
        env = service_environment(replace(settings, auth_token=token), LOG_LEVEL="WARNING")
        server = spawn(env, data, name="loadtest-service")
        stack.callback(server.stop)
        yield server.target, token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="get, upsert, top_rated, nearby, mixed")
    parser.add_argument("--target", help="HOST:PORT of a running service (default: start the local stack)")
    parser.add_argument("--token", default=os.environ.get("AUTH_TOKEN", ""), help="bearer token for Upsert")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TOTAL} calls per scenario, JSON reports only")
    args = parser.parse_args()
    scenarios = args.scenarios or [*SCENARIOS, "mixed"]
    unknown = set(scenarios) - {*SCENARIOS, "mixed"}
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if args.target:
        return 0 if run(args.target, args.token, scenarios, args.quick) else 1
    with local_service() as (target, token):
        return 0 if run(target, token, scenarios, args.quick) else 1


if __name__ == "__main__":
    sys.exit(main())
