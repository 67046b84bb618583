"""The `movieservice` command: serve, seed, dev."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from movieservice.config import ConfigError, Settings, configured_names, load_settings, redact_url
from movieservice.logs import configure_logging

log = logging.getLogger("movieservice")

DEFAULT_DATA_DIR = Path(".data")
# The real sample data beside the project, where this workplace keeps it.
SHARED_SAMPLE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mflix"
DEV_AUTH_TOKEN = "dev-token"


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

    from movieservice import client

    client.add_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "client":
        return client.run(args)
    try:
        settings = load_settings()
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
    return run_dev(settings, args.data_dir, args.source, args.synthetic)


def serve(settings: Settings) -> int:
    """One process, or a supervisor forking WORKERS processes."""
    if settings.workers > 1:
        from movieservice.supervisor import supervise

        return supervise(settings)
    from movieservice import server

    return server.serve(settings)


def _add_seed_source(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(flag, dest="source", type=Path, help="directory of mongoexport files (movies, theaters)")
    parser.add_argument(
        "--synthetic", type=int, metavar="N", help="generate N movies (and theaters) in the sample_mflix schema"
    )


def seed_store(
    settings: Settings, source: Path | None, synthetic: int | None, *, replace: bool = False, clear_cache: bool
) -> int:
    from movieservice.store import seed
    from movieservice.store import synthetic as generator
    from movieservice.store.mongo import MOVIES, THEATERS, MongoStore

    store = MongoStore(settings.mongo_url, settings.mongo_db)
    try:
        if source is not None:
            exports = seed.find_exports(source)
            if not exports:
                log.error("no movies or theaters export found in %s", source)
                return 1
            for collection, path in exports.items():
                total, written = seed.load(store, collection, seed.read_file(path), replace=replace)
                log.info("seeded %s from %s: %d documents, %d written", collection, path, total, written)
        if synthetic is not None:
            movies = seed.parse_documents(generator.movie_lines(synthetic))
            total, written = seed.load(store, MOVIES, movies, replace=replace)
            log.info("seeded %d synthetic movies, %d written", total, written)
            theaters = seed.parse_documents(generator.theater_lines(min(max(synthetic, 1), 1564)))
            total, written = seed.load(store, THEATERS, theaters, replace=replace)
            log.info("seeded %d synthetic theaters, %d written", total, written)
        store.ensure_indexes()
    finally:
        store.close()
    if clear_cache:
        _clear_cache(settings)
    return 0


def _clear_cache(settings: Settings) -> None:
    """Seeding replaces documents behind the cache's back: drop what it holds."""
    from movieservice.cache.redis_cache import RedisCache
    from movieservice.service.ports import CacheUnavailable

    cache = RedisCache(settings.redis_url, key_prefix=settings.redis_key_prefix)
    try:
        log.info("cleared %d cache keys in %s", cache.clear(), redact_url(settings.redis_url))
    except CacheUnavailable as error:
        log.warning("could not clear the cache (%s); cached copies expire after MOVIE_TTL_SECONDS", error)
    finally:
        cache.close()


def run_dev(settings: Settings, data_dir: Path, source: Path | None, synthetic: int | None) -> int:
    from movieservice.devstack.processes import ToolMissing

    with ExitStack() as servers:
        try:
            settings = servers.enter_context(
                local_dependencies(settings, data_dir.resolve(), configured_names(), source, synthetic)
            )
        except (ToolMissing, SeedFailed) as error:
            log.error("%s", error)
            return 1
        if "AUTH_TOKEN" not in configured_names():
            settings = replace(settings, auth_token=DEV_AUTH_TOKEN)
            log.info("writes need 'authorization: Bearer %s' (set AUTH_TOKEN to change it)", DEV_AUTH_TOKEN)
        return serve(settings)


@contextmanager
def local_dependencies(
    settings: Settings, data_dir: Path, explicit: set[str], source: Path | None = None, synthetic: int | None = None
) -> Iterator[Settings]:
    """Start FerretDB and redis-server under `data_dir`, each unless its URL is
    in `explicit`; seed the store (see `seed_if_needed`; SeedFailed if that
    fails); yield the settings pointing at them; stop them after."""
    from movieservice.devstack.processes import FerretDBProcess, ferretdb_server, redis_server

    with ExitStack() as servers:
        mongo: FerretDBProcess | None = None
        if "MONGO_URL" not in explicit:
            mongo = ferretdb_server(data_dir / "ferretdb").start()
            servers.callback(mongo.stop)
            settings = replace(settings, mongo_url=f"mongodb://127.0.0.1:{mongo.port}/")
            log.info("started FerretDB at %s (data in %s)", settings.mongo_url, data_dir / "ferretdb")
        if not {"REDIS_URL", "REDIS_HOST"} & explicit:
            cache = redis_server(data_dir / "redis").start()
            servers.callback(cache.stop)
            settings = replace(settings, redis_url=f"redis://127.0.0.1:{cache.port}/0")
            log.info("started redis-server at %s", settings.redis_url)
        if seed_if_needed(settings, source, synthetic) != 0:
            raise SeedFailed("seeding the local store failed")
        if mongo is not None:
            mongo.index_ids()  # seeding may have created the collections
        yield settings


class SeedFailed(RuntimeError):
    pass


def seed_if_needed(settings: Settings, source: Path | None, synthetic: int | None) -> int:
    """Seed when asked to, or when the database has no movies: the real sample
    data beside the project if it is there, else 1,000 synthetic movies."""
    from movieservice.store.mongo import MOVIES, MongoStore

    store = MongoStore(settings.mongo_url, settings.mongo_db)
    try:
        empty = store.count(MOVIES) == 0
    finally:
        store.close()
    if not (empty or source is not None or synthetic is not None):
        return 0
    if source is None and synthetic is None:
        if SHARED_SAMPLE_DATA.is_dir():
            source = SHARED_SAMPLE_DATA
        else:
            synthetic = 1000
    return seed_store(settings, source, synthetic, clear_cache=True)


if __name__ == "__main__":
    sys.exit(main())
