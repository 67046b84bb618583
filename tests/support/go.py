"""The Go interop client (tests/interop/go), built from the committed generated code."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from movieservice.devstack.processes import PROJECT_ROOT

GO = shutil.which("go")
requires_go = pytest.mark.skipif(GO is None, reason="`go` is not installed: the Go interop client cannot be built")


def build_go_client(directory: Path) -> list[str]:
    """The client's command line, built into `directory` (build once per module,
    so that no build time falls inside a run)."""
    binary = directory / "interop"
    # -mod=readonly: a go.mod or go.sum that is not complete fails here instead of being rewritten.
    env = os.environ | {"GOFLAGS": "-mod=readonly -buildvcs=false", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        [str(GO), "build", "-o", str(binary), "./tests/interop/go"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return [str(binary)]
