"""The package installs under one import name, `movieservice`: nothing named
`internal` or `movies` (the directory layout's names) lands in site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import PROJECT_ROOT


def test_the_wheel_holds_only_the_movieservice_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("movieservice-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"movieservice"}
    # The generated code and the .proto file travel with it, importable as the proto package says.
    assert "movieservice/proto/movies/v1/movies_pb2.py" in names
    assert "movieservice/proto/movies/v1/movies.proto" in names
    assert "movieservice/py.typed" in names
