"""The `movieservice` command: serve, seed, dev, client, ui."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from movieservice import tracing
from movieservice.config import ConfigError, Settings, configured_names, load_settings
from movieservice.logs import configure_logging

log = logging.getLogger("movieservice")

DEFAULT_DATA_DIR = Path(".data")
DEV_AUTH_TOKEN = "dev-token"
DEFAULT_UI_PORT = 8501  # Streamlit's own default; UI_PORT in the environment changes it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="movieservice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the gRPC API (configured by the environment and .env)")

    seed = commands.add_parser("seed", help="load sample_mflix data into MONGO_URL (idempotent)")
    _add_seed_source(seed, "--from")
    seed.add_argument("--replace", action="store_true", help="overwrite movies and theaters that already exist")
    seed.add_argument("--keep-cache", action="store_true", help="do not clear the Redis cache afterwards")

    dev = commands.add_parser(
        "dev",
        help="run everything locally: Redis and FerretDB (unless REDIS_URL / MONGO_URL are set), data, the server",
    )
    dev.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where local servers keep data")
    _add_seed_source(dev, "--seed-from")
    dev.add_argument("--ui", action="store_true", help="start the web UI too (on --ui-port)")
    dev.add_argument("--ui-port", type=int, default=_ui_port(), help="the web UI's port (default $UI_PORT or 8501)")

    from movieservice import client

    client.add_parser(commands)
    ui = commands.add_parser("ui", help="the web UI (Streamlit), a client of a running service")
    ui.add_argument("--port", type=int, default=_ui_port(), help="the page's port (default $UI_PORT or 8501)")
    ui.add_argument("--host", default="127.0.0.1", help="address the page listens on (default 127.0.0.1)")
    ui.add_argument("--target", help="the service, host:port (default $UI_TARGET or localhost:$GRPC_PORT)")
    ui.add_argument("--metrics-url", help="its /metrics (default $UI_METRICS_URL or 127.0.0.1:$METRICS_PORT)")

    args = parser.parse_args(argv)
    if args.command == "client":
        return client.run(args)
    if args.command == "ui":
        return run_ui(args.port, args.host, args.target, args.metrics_url)
    try:
        settings = load_settings()
        tracing.configure_environment()
    except ConfigError as error:
        print(f"movieservice: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        return serve(settings)
    if args.command == "seed":
        source = args.source
        if source is None and args.synthetic is None:
            parser.error("seed needs --from DIR or --synthetic N")
        return seed_store(settings, source, args.synthetic, replace=args.replace, clear_cache=not args.keep_cache)
    return run_dev(settings, args.data_dir, args.source, args.synthetic, args.ui_port if args.ui else None)


def serve(settings: Settings) -> int:
    """One process, or a supervisor forking WORKERS processes."""
    if not settings.page_token_keys:
        # One key for every worker, made before they fork, so a page token
        # issued by one is good at all of them.
        settings = replace(settings, page_token_keys=(secrets.token_urlsafe(32),))
        log.info("PAGE_TOKEN_KEYS not set: TopRated page tokens last until this server stops")
    if settings.workers > 1:
        from movieservice.supervisor import supervise

        return supervise(settings)
    from movieservice.grpcserver import server

    return server.serve(settings)


def _add_seed_source(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(flag, dest="source", type=Path, help="directory of mongoexport files (movies, theaters)")
    parser.add_argument(
        "--synthetic", type=int, metavar="N", help="generate N movies (and theaters) in the sample_mflix schema"
    )


def seed_store(
    settings: Settings, source: Path | None, synthetic: int | None, *, replace: bool = False, clear_cache: bool
) -> int:
    from movieservice.devstack.stack import clear_cache as clear
    from movieservice.devstack.stack import seed_database
    from movieservice.store.seed import NoExports

    try:
        seed_database(settings.mongo_url, settings.mongo_db, source=source, synthetic=synthetic, replace=replace)
    except NoExports as error:
        log.error("%s", error)
        return 1
    if clear_cache:
        clear(settings)
    return 0


def _ui_port() -> int:
    import os

    return int(os.environ.get("UI_PORT") or DEFAULT_UI_PORT)


def run_ui(port: int, host: str, target: str | None, metrics_url: str | None) -> int:
    """The web UI in the foreground until Ctrl-C (it reads UI_TARGET and UI_METRICS_URL)."""
    import os
    import subprocess

    from movieservice.devstack.processes import ui_argv

    environment = dict(os.environ)
    environment.update({"UI_TARGET": target} if target else {})
    environment.update({"UI_METRICS_URL": metrics_url} if metrics_url else {})
    print(f"movieservice web UI: http://{host}:{port}", file=sys.stderr)
    ui = subprocess.Popen(ui_argv(port, host), env=environment)

    # Handlers of its own rather than Python's KeyboardInterrupt: a command a
    # script starts in the background inherits SIGINT ignored (POSIX), and then
    # Python installs none, so Ctrl-C (or a make that passes it on) did nothing.
    # The first signal stops Streamlit gracefully, a second one kills it.
    def stop(signum: int, frame: object) -> None:
        if ui.poll() is None:
            if stopping:
                ui.kill()
            else:
                ui.terminate()
        stopping.append(signum)

    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    status = ui.wait()
    return 0 if stopping or status == 0 else status


def run_dev(
    settings: Settings, data_dir: Path, source: Path | None, synthetic: int | None, ui_port: int | None = None
) -> int:
    from movieservice.devstack.processes import ToolMissing, ui_server
    from movieservice.devstack.stack import local_dependencies
    from movieservice.store.seed import NoExports

    with ExitStack() as servers:
        try:
            settings = servers.enter_context(
                local_dependencies(settings, data_dir.resolve(), configured_names(), source, synthetic)
            )
        except ToolMissing as error:
            log.error("%s", error)
            return 1
        except NoExports as error:
            log.error("seeding the local store failed: %s", error)
            return 1
        configured = configured_names()
        if not configured & {"AUTH_TOKEN", "AUTH_TOKENS"}:
            settings = replace(settings, auth_token=DEV_AUTH_TOKEN)
            log.info("writes need 'authorization: Bearer %s' (set AUTH_TOKEN to change it)", DEV_AUTH_TOKEN)
        if "METRICS_HOST" not in configured:
            settings = replace(settings, metrics_host="127.0.0.1")  # a laptop's metrics stay on it
        if ui_port is not None:
            metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
            page = ui_server(f"localhost:{settings.grpc_port}", metrics_url, data_dir.resolve(), ui_port).start(60)
            servers.callback(page.stop)
            log.info("web UI at http://127.0.0.1:%d (log in %s)", page.port, page.log_path)
        return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
