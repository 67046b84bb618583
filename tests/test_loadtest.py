"""The ghz load tests cannot rot: every config names a real RPC, its data parses
as that RPC's request, its thresholds are numbers; and a short run passes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from google.protobuf import json_format

from movieservice.proto.movies.v1 import movies_pb2
from tests.conftest import AUTH_TOKEN, PROJECT_ROOT
from tests.support.scripts import load_script

CONFIGS = sorted((PROJECT_ROOT / "scripts" / "loadtest").glob("*.json"))
SERVICE = movies_pb2.DESCRIPTOR.services_by_name["MovieService"]


def request_class(call: str):
    service, _, method = call.rpartition(".")
    assert service == SERVICE.full_name, f"{call} is not a MovieService method"
    assert method in SERVICE.methods_by_name, f"MovieService has no RPC {method}"
    return getattr(movies_pb2, SERVICE.methods_by_name[method].input_type.name)


def test_there_is_a_config_per_rpc():
    calls = {json.loads(path.read_text())["call"].rpartition(".")[2] for path in CONFIGS}
    assert calls == set(SERVICE.methods_by_name)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_names_a_real_rpc_with_parsing_data_and_thresholds(path):
    config = json.loads(path.read_text())
    request = request_class(config["call"])
    assert (PROJECT_ROOT / config["proto"]).is_file()
    for entry in config.get("data", []):
        json_format.ParseDict(entry, request())
    float(config["tags"]["max_error_rate"])
    assert float(config["tags"]["max_p99_ms"]) > 0
    assert int(config["tags"]["mixed_rps"]) > 0
    assert "data" in config or config.get("data-file"), "every scenario sends real requests"


def test_generated_data_parses_as_the_requests():
    loadtest = load_script("loadtest")
    for entry in loadtest.get_requests(["573a1390f29313caabcd42e8", "573a1391f29313caabcd6f98"], count=50):
        json_format.ParseDict(entry, movies_pb2.GetRequest())
    upserts = loadtest.upsert_requests()
    for entry in upserts:
        json_format.ParseDict(entry, movies_pb2.UpsertRequest())
    assert len({entry["movie"]["id"] for entry in upserts}) == loadtest.UPSERT_MOVIES


@pytest.mark.slow
def test_a_short_ghz_run_of_every_scenario_passes(grpc_target):
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "loadtest.py"), "--quick", "--target", grpc_target,
         "--token", AUTH_TOKEN],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("get", "upsert", "top_rated", "nearby", "mixed-get"):
        report = json.loads((PROJECT_ROOT / "reports" / "loadtest" / f"{name}.json").read_text())
        assert report["count"] == 200 and report["statusCodeDistribution"] == {"OK": 200}
