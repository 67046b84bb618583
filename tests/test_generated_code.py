"""The committed generated code is what scripts/gen_proto.py produces now; the proto passes buf lint."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT, VENV_BIN

GENERATED = sorted(
    p.relative_to(PROJECT_ROOT / "proto") for p in (PROJECT_ROOT / "proto").rglob("*") if p.suffix in (".py", ".pyi")
)


def test_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.suffix in (".py", ".pyi"))
    assert fresh == GENERATED, "generated files were added or removed: run `make proto`"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (PROJECT_ROOT / "proto" / p).read_bytes()]
    assert not stale, f"stale generated code, run `make proto`: {stale}"


def test_proto_passes_buf_lint():
    result = subprocess.run([str(VENV_BIN / "buf"), "lint"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_proto_has_no_breaking_change_against_main():
    """On a branch this compares with main; on main itself it compares main with itself."""
    has_main = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "main"], cwd=PROJECT_ROOT).returncode == 0
    against = ".git#branch=main" if has_main else ".git#ref=HEAD"
    result = subprocess.run(
        [str(VENV_BIN / "buf"), "breaking", "--against", against], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
