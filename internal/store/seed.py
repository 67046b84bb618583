"""Loading `sample_mflix` data into the store (`movieservice seed`).

Reads mongoexport output: JSON Lines or a JSON array, plain or gzip, in
relaxed or canonical Extended JSON. Loading is idempotent: by default it
inserts the documents that are missing and leaves existing ones (and any
changes made to them through the API) alone; `--replace` overwrites them.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONOptions

from movieservice.store.mongo import MOVIES, THEATERS, MongoStore

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


def load(
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
            store.replace_documents(collection, batch)
            written += len(batch)
        else:
            written += store.insert_missing(collection, batch)
    return total, written


def _batches(docs: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
