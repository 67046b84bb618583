"""`movieservice seed`: real exports in every supported form, synthetic data, idempotence."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pymongo
import pytest

from tests.conftest import VENV_BIN, service_env
from tests.support.data import read_raw


def run_seed(settings, mongo_url: str, database: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = service_env(settings) | {"MONGO_URL": mongo_url, "MONGO_DB": database}
    result = subprocess.run(
        [str(VENV_BIN / "movieservice"), "seed", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def counts(mongo_url: str, database: str) -> tuple[int, int]:
    with pymongo.MongoClient(mongo_url) as client:
        db = client[database]
        return db.movies.count_documents({}), db.theaters.count_documents({})


def canonical(value):
    """Relaxed -> canonical Extended JSON for the numbers a canonical export wraps."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {"$numberInt": str(value)} if -(2**31) <= value < 2**31 else {"$numberLong": str(value)}
    if isinstance(value, float):
        return {"$numberDouble": repr(value)}
    if isinstance(value, dict):
        if "$date" in value or "$oid" in value:
            return value
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def test_seeding_real_exports_twice_is_idempotent(settings, mongo_url, tmp_path):
    from tests.support.data import require_real_data

    source = require_real_data()
    first = run_seed(settings, mongo_url, "seed_real", tmp_path, "--from", str(source))
    assert "1000 documents, 1000 written" in first.stderr and "1564 documents, 1564 written" in first.stderr
    second = run_seed(settings, mongo_url, "seed_real", tmp_path, "--from", str(source))
    assert "1000 documents, 0 written" in second.stderr
    assert counts(mongo_url, "seed_real") == (1000, 1564)


@pytest.mark.parametrize("form", ["canonical-array", "relaxed-jsonl-plain"])
def test_other_export_forms_load_the_same_documents(settings, mongo_url, tmp_path, form):
    movies, theaters = read_raw("movies")[:50], read_raw("theaters")[:20]
    export = tmp_path / "export"
    export.mkdir()
    if form == "canonical-array":
        (export / "sample_mflix.movies.json").write_text(json.dumps([canonical(m) for m in movies]))
        with gzip.open(export / "theaters.json.gz", "wt") as out:
            json.dump([canonical(t) for t in theaters], out)
    else:
        (export / "movies.jsonl").write_text("\n".join(json.dumps(m) for m in movies) + "\n")
        (export / "theaters.jsonl").write_text("\n\n".join(json.dumps(t) for t in theaters))
    database = f"seed_{form.replace('-', '_')}"
    run_seed(settings, mongo_url, database, tmp_path, "--from", str(export))
    assert counts(mongo_url, database) == (50, 20)
    with pymongo.MongoClient(mongo_url) as client:
        doc = client[database].movies.find_one({"title": movies[0]["title"]})
        assert doc["imdb"]["rating"] == movies[0]["imdb"]["rating"]
        assert isinstance(doc["year"], int)


def test_synthetic_seeding_is_idempotent(settings, mongo_url, tmp_path):
    run_seed(settings, mongo_url, "seed_synthetic", tmp_path, "--synthetic", "300")
    again = run_seed(settings, mongo_url, "seed_synthetic", tmp_path, "--synthetic", "300")
    assert "300 synthetic movies, 0 written" in again.stderr
    assert counts(mongo_url, "seed_synthetic") == (300, 300)


def test_seeding_clears_the_cache(settings, mongo_url, tmp_path, redis_client):
    redis_client.set("movieservice:movie:stale", "x")
    run_seed(settings, mongo_url, "seed_synthetic", tmp_path, "--synthetic", "10")
    assert not redis_client.exists("movieservice:movie:stale")


def test_seed_without_a_source_is_a_usage_error(settings, tmp_path):
    result = subprocess.run(
        [str(VENV_BIN / "movieservice"), "seed"],
        env=service_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "seed needs --from DIR or --synthetic N" in result.stderr
