"""The layout holds: the use cases import no transport or driver, each
adapter is the only code that knows its driver, and every Lua script names
its inputs as its Python side does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from movieservice.cache import scripts

INTERNAL = Path(__file__).resolve().parents[1] / "internal"


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def modules(where: str = "") -> list[Path]:
    return sorted((INTERNAL / where).rglob("*.py"))


def test_the_core_imports_no_transport_and_no_driver():
    for path in modules("core"):
        assert not imported_roots(path) & {"grpc", "redis", "hiredis", "pymongo", "bson"}, path


@pytest.mark.parametrize(
    ("driver", "home"),
    [("redis", "cache"), ("hiredis", "cache"), ("pymongo", "store"), ("bson", "store")],
)
def test_only_its_adapter_imports_a_driver(driver, home):
    """The service's code reaches Redis and MongoDB through its adapters only
    (the benchmark, which inspects both servers from outside, is not the service)."""
    importers = {p.relative_to(INTERNAL).parts[0] for p in modules() if driver in imported_roots(p)}
    assert importers <= {home, "bench"}, f"{driver} imported outside internal/{home}: {importers}"


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_each_lua_script_declares_its_keys_and_arguments_as_python_names_them(script):
    declared = re.findall(r"^local (\w+) = (KEYS|ARGV)\[(\d+)\]", script.source, flags=re.MULTILINE)
    keys = [name for name, kind, _ in declared if kind == "KEYS"]
    args = [name for name, kind, _ in declared if kind == "ARGV"]
    assert tuple(keys) == script.keys and tuple(args) == script.args
    for kind, names in (("KEYS", keys), ("ARGV", args)):
        positions = [int(i) for _, k, i in declared if k == kind]
        assert positions == list(range(1, len(names) + 1)), f"{kind} declared out of order"
    # Past the declarations, the body uses the names only.
    lines = script.source.splitlines()
    last = max(i for i, line in enumerate(lines) if re.match(r"local \w+ = (KEYS|ARGV)\[", line))
    assert not re.search(r"\b(KEYS|ARGV)\[", "\n".join(lines[last + 1 :]))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


UI_MAY_IMPORT = ("movieservice.ui.", "movieservice.proto.", "movieservice.client.")


def test_the_ui_is_a_client_of_the_api_only():
    """The web UI knows the service by what any client sees (gRPC, the generated
    stubs, health, /metrics): never its core, cache, store or server."""
    for path in modules("ui"):
        ours = {name for name in imported_modules(path) if name.split(".")[0] == "movieservice"}
        assert all(name.startswith(UI_MAY_IMPORT) for name in ours), (path, ours)
        assert not imported_roots(path) & {"redis", "hiredis", "pymongo", "bson"}, path


def test_the_service_does_not_import_the_ui_or_its_libraries():
    for path in modules():
        if path.relative_to(INTERNAL).parts[0] == "ui":
            continue
        assert not any(name.startswith("movieservice.ui") for name in imported_modules(path)), path
        assert not imported_roots(path) & {"streamlit", "plotly", "pandas", "selenium"}, path
