#!/usr/bin/env python3
"""Generate the Python protobuf and gRPC code for proto/ next to the .proto files.

The package installs as `movieservice`, with proto/ as `movieservice.proto`
(see pyproject.toml), so protoc sees proto/ under that virtual path
(`-Imovieservice/proto=proto`): the generated modules import one another as
`movieservice.proto.movies.v1`, the path the proto package `movies.v1` has
inside the installed package, without any rewriting of generated code.

The output is committed; tests/test_generated_code.py runs this script into a
temporary directory and fails when the committed files differ.

Usage: scripts/gen_proto.py [OUTPUT_DIR]   (default: proto/)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
# Where proto/ sits in the installed package.
IMPORT_ROOT = Path("movieservice") / "proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        generated = Path(scratch)
        for proto in proto_files():
            relative = proto.relative_to(PROTO_ROOT)
            args = [
                "grpc_tools.protoc",
                f"-I{IMPORT_ROOT}={PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={generated}",
                f"--pyi_out={generated}",
                f"--grpc_python_out={generated}",
                str(IMPORT_ROOT / relative),
            ]
            if protoc.main(args) != 0:
                raise SystemExit(f"protoc failed on {proto}")
            # Each directory of generated code is a regular package, proto/ itself included.
            package_dir = out_dir / relative.parent
            while True:
                (package_dir / "__init__.py").parent.mkdir(parents=True, exist_ok=True)
                (package_dir / "__init__.py").touch()
                if package_dir == out_dir:
                    break
                package_dir = package_dir.parent
        for path in (generated / IMPORT_ROOT).rglob("*"):
            if path.is_file():
                target = out_dir / path.relative_to(generated / IMPORT_ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
