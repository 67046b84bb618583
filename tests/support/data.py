"""Where the real sample data is, and plain-JSON readers independent of the service's loader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

MFLIX_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "mflix"


def has_real_data() -> bool:
    return (MFLIX_DIR / "movies.jsonl.gz").is_file() and (MFLIX_DIR / "theaters.jsonl.gz").is_file()


def require_real_data() -> Path:
    if not has_real_data():
        pytest.skip(f"real sample_mflix data not found in {MFLIX_DIR}")
    return MFLIX_DIR


def read_raw(name: str) -> list[dict[str, Any]]:
    """The documents of `<name>.jsonl.gz` as plain JSON (Extended JSON left as is)."""
    with gzip.open(require_real_data() / f"{name}.jsonl.gz", "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
