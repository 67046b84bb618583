"""Loading `sample_mflix` data into the store (`movieservice seed`).

Reads mongoexport output: JSON Lines or a JSON array, plain or gzip, in
relaxed or canonical Extended JSON. Loading is idempotent: by default it
inserts the documents that are missing and leaves existing ones (and any
changes made to them through the API) alone; `--replace` overwrites them.
"""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONOptions

from movieservice.store import synthetic as generator
from movieservice.store.mongo import MOVIES, THEATERS, MongoStore

log = logging.getLogger(__name__)

EJSON_OPTIONS = JSONOptions(tz_aware=True, tzinfo=UTC)
COLLECTIONS = (MOVIES, THEATERS)
_BATCH = 1000


def parse_documents(text_lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Documents from Extended JSON text: one per line, or one JSON array."""
    lines = iter(text_lines)
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("["):
            rest = stripped + "".join(lines)
            yield from json_util.loads(rest, json_options=EJSON_OPTIONS)
            return
        yield json_util.loads(stripped, json_options=EJSON_OPTIONS)


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
        yield from parse_documents(text)


def find_exports(directory: Path) -> dict[str, Path]:
    """The export file of each collection in `directory`.

    Accepts the names mongoexport and the Atlas sample dumps use:
    movies.jsonl.gz, movies.json, sample_mflix.movies.json, ...
    """
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        name = path.name.removeprefix("sample_mflix.")
        for collection in COLLECTIONS:
            if name.split(".", 1)[0] == collection and name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
                found.setdefault(collection, path)
    return found


async def load(
    store: MongoStore, collection: str, docs: Iterable[dict[str, Any]], *, replace: bool = False
) -> tuple[int, int]:
    """Insert the documents not in `collection` yet (all of them with `replace`).

    Returns (documents read, documents inserted or replaced). Either way, loading
    the same data twice leaves the same collection.
    """
    total = written = 0
    for batch in _batches(docs):
        total += len(batch)
        if replace:
            await store.replace_documents(collection, batch)
            written += len(batch)
        else:
            written += await store.insert_missing(collection, batch)
    return total, written


class NoExports(ValueError):
    """A directory holds no movies or theaters export."""


async def seed(
    store: MongoStore,
    *,
    source: Path | None = None,
    synthetic: int | None = None,
    theaters: int | None = None,
    random_seed: int = 1,
    replace: bool = False,
) -> None:
    """Load the exports in `source`, and/or `synthetic` generated movies (with
    `theaters` theaters, by default as many as movies up to all 1,564), then
    make the indexes the service needs. NoExports when `source` has none."""
    if source is not None:
        exports = find_exports(source)
        if not exports:
            raise NoExports(f"no movies or theaters export found in {source}")
        for collection, path in exports.items():
            total, written = await load(store, collection, read_file(path), replace=replace)
            log.info("seeded %s from %s: %d documents, %d written", collection, path, total, written)
    if synthetic is not None:
        movies = parse_documents(generator.movie_lines(synthetic, seed=random_seed))
        total, written = await load(store, MOVIES, movies, replace=replace)
        log.info("seeded %d synthetic movies, %d written", total, written)
        count = theaters if theaters is not None else min(max(synthetic, 1), generator.MAX_THEATERS)
        places = parse_documents(generator.theater_lines(count, seed=random_seed))
        total, written = await load(store, THEATERS, places, replace=replace)
        log.info("seeded %d synthetic theaters, %d written", total, written)
    await store.ensure_indexes()


def _batches(docs: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
