"""How the local FerretDB's SQLite files answer FerretDB's lookups by `_id`."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

# The statement FerretDB 1.24 runs to find a document by `_id`
# (internal/backends/sqlite/collection.go, Query and UpdateAll).
FERRETDB_ID_LOOKUP = "SELECT _ferretdb_sjson FROM \"{table}\" WHERE _ferretdb_sjson->'$._id' = ?"


def id_lookup_plans(data_dir: Path, database: str) -> dict[str, str]:
    """Collection name -> SQLite's query plan for FerretDB's lookup by `_id`."""
    uri = f"file:{data_dir / (database + '.sqlite')}?mode=ro"
    plans = {}
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        for name, table in connection.execute("SELECT name, table_name FROM _ferretdb_collections").fetchall():
            rows = connection.execute(f"EXPLAIN QUERY PLAN {FERRETDB_ID_LOOKUP.format(table=table)}", ('"x"',))
            plans[name] = " ".join(row[-1] for row in rows)
    return plans
