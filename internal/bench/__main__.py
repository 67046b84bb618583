"""python -m movieservice.bench [--quick] [--rounds N] [--requests N] [--only SECTION]... [--output FILE]

The helper processes the benchmark starts itself:
  python -m movieservice.bench ceiling aio|aio-uvloop|aio-plain|threaded PORT RESPONSE_FILE
  python -m movieservice.bench redis-hits PORT REDIS_URL KEY TURNS
  python -m movieservice.bench unfrozen   (the service, environment as usual)
(and python -m movieservice.devstack.hostile for the stalled calls)
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from movieservice.bench import __doc__ as BENCH_DOC
from movieservice.bench import capacity, ceiling, latency, throughput, zipf
from movieservice.bench.report import command_line, write_markdown
from movieservice.bench.session import Bench, benchmark
from movieservice.devstack.processes import PROJECT_ROOT

# The parts of a run, in the order they run (`--only` picks some).
SECTIONS: dict[str, Callable[[Bench, str], None]] = {
    "hits": throughput.hits,
    "traces": throughput.traces,
    "toprated-nearby": throughput.toprated_and_nearby,
    "stalled": latency.stalled,
    "optimisations": throughput.optimisations,
    "scaling": throughput.scaling,
    "misses": latency.misses_and_upserts,
    "zipf": zipf.zipf,
    "stampede": latency.stampede,
    "memory": throughput.memory,
    "capacity": capacity.capacity,
}


def helper(argv: Sequence[str]) -> int:
    """The helper processes (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m movieservice.bench")
    helpers = parser.add_subparsers(dest="helper", required=True)
    ceiling_parser = helpers.add_parser("ceiling", help="a constant-answer reference server")
    ceiling_parser.add_argument("mode", choices=ceiling.MODES)
    ceiling_parser.add_argument("port", type=int)
    ceiling_parser.add_argument("response_file", type=Path)
    redis_hits = helpers.add_parser("redis-hits", help="the aio ceiling answering with a cached movie from Redis")
    redis_hits.add_argument("port", type=int)
    redis_hits.add_argument("redis_url")
    redis_hits.add_argument("key")
    redis_hits.add_argument("turns", type=int)
    helpers.add_parser("unfrozen", help="the service without gc.freeze() after start-up")
    args = parser.parse_args(argv)
    if args.helper == "unfrozen":
        return ceiling.serve_unfrozen()
    if args.helper == "ceiling":
        return ceiling.serve_ceiling(args.mode, args.port, args.response_file)
    return ceiling.serve_redis_hits(args.port, args.redis_url, args.key, args.turns)


HELPERS = ("ceiling", "redis-hits", "unfrozen")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in HELPERS:
        return helper(arguments)
    parser = argparse.ArgumentParser(
        prog="python -m movieservice.bench",
        description=BENCH_DOC,
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds (minutes, not tens)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per comparison (default 11, quick 3)")
    parser.add_argument("--requests", type=int, help="h2load requests per run (default 12000, quick 6000)")
    parser.add_argument("--only", action="append", choices=list(SECTIONS),
                        help="run only this part (repeatable); printed, not written, unless --output")  # fmt: skip
    parser.add_argument("--output", type=Path, help="where to write the table (default BENCHMARKS.md for a full run)")
    parser.add_argument("--work-dir", type=Path, help="keep the servers' data and logs here (default: a temporary one)")
    args = parser.parse_args(arguments)
    rounds = args.rounds or (3 if args.quick else 11)
    requests = args.requests or (6_000 if args.quick else 12_000)
    output = args.output or (None if args.only else PROJECT_ROOT / "BENCHMARKS.md")
    sections = [name for name in SECTIONS if name in (args.only or SECTIONS)]
    # What each row's Command column names: the options that change what is measured.
    command = command_line(
        [*(["--quick"] if args.quick else []), *(f"--only={name}" for name in sections if args.only)]
    )
    failed = []
    with benchmark(requests, rounds, args.quick, args.work_dir) as bench:
        for name in sections:
            try:
                SECTIONS[name](bench, command)
            except Exception as error:  # noqa: BLE001 - one broken section must not cost the others' rows
                traceback.print_exc()
                failed.append(name)
                bench.row(f"Section {name!r}", "(runs)", "FAILED", f"{type(error).__name__}: {error}", command)
        if output is not None:
            write_markdown(bench, output, arguments)
            print(f"wrote {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
