"""Docs that run: every command in the README's shell blocks is executed here
against the test stack, so the README cannot drift from the product.

A command the test does not know how to run fails the test; a whole block can
opt out only with a `<!-- docs-test: skip: REASON -->` line right above it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

import pytest

from movieservice.devstack.processes import free_port, wait_for_port
from tests.conftest import AUTH_TOKEN, PROJECT_ROOT, service_env

README = PROJECT_ROOT / "README.md"
# Commands that are not run here, and why.
NOT_RUN_HERE = {
    "make test": "it is this test suite (run by .ci/run)",
    "make test-fast": "a subset of this test suite",
    "make bench": "minutes of load; BENCHMARKS.md records its run and command",
    "make loadtest": "minutes of load; tests/test_loadtest.py runs every scenario with --quick",
    "make fmt": "it rewrites files; `make lint` (run here) checks the formatting instead",
    "make lock": "it rewrites the locks from PyPI; tests/test_locks.py checks them offline",
}


def readme_commands() -> list[tuple[int, str]]:
    """(line number, command) of every command in the README's ```sh blocks."""
    lines = README.read_text().splitlines()
    commands, in_block, skip, pending = [], False, False, ""
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if not in_block:
                in_block = line.strip() == "```sh"
                skip = number > 1 and lines[number - 2].startswith("<!-- docs-test: skip:")
            else:
                in_block = False
            continue
        if not in_block or skip or not line.strip():
            continue
        text = re.sub(r"\s+#\s.*$", "", line).rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        commands.append((number, pending + text))
        pending = ""
    return commands


COMMANDS = readme_commands()
# Commands that take more than a few seconds: run by `make test`, left out of `make test-fast`.
SLOW_COMMANDS = {
    "make run",
    "make ui",
    ".venv/bin/movieservice dev --ui",
    "make lint",
    "make proto",
    ".venv/bin/movieservice seed --synthetic 20000",
}


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 15


def run(command: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        ["bash", "-c", command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"`{command}` failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def start_and_stop(
    command: str, env: dict[str, str], port: int, stop_signal: int, *, sigint_ignored: bool = False
) -> None:
    """Start `command`, wait until it serves on `port`, then signal its whole
    process group, as a terminal's Ctrl-C (SIGINT) or a supervisor (SIGTERM) would.
    `sigint_ignored`: started as a script's background job is (POSIX: with SIGINT ignored)."""
    start = f"trap '' INT; exec {command}" if sigint_ignored else f"exec {command}"
    process = subprocess.Popen(["bash", "-c", start], cwd=PROJECT_ROOT, env=env, start_new_session=True)
    try:
        wait_for_port(port, 180, process)  # type: ignore[arg-type]
    finally:
        os.killpg(process.pid, stop_signal)
        try:
            status = process.wait(timeout=60)
            # make reports an interrupt as its own failure even when what it ran
            # stopped cleanly; what counts is that everything it started is gone.
            assert status == 0 or (command.startswith("make ") and status in (2, -stop_signal)), status
            deadline = time.monotonic() + 30
            while group_alive(process.pid):
                assert time.monotonic() < deadline, f"`{command}` left processes running"
                time.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("line", "command"),
    [
        pytest.param(line, command, id=f"line{line}", marks=[pytest.mark.slow] if command in SLOW_COMMANDS else [])
        for line, command in COMMANDS
    ],
)
def test_readme_command_works(line, command, settings, grpc_target, redis_process, mongo_url):
    port = grpc_target.rsplit(":", 1)[1]
    if command in NOT_RUN_HERE:
        pytest.skip(f"README line {line}: not run here: {NOT_RUN_HERE[command]}")
    if command.startswith(".tools/bin/grpcurl "):
        output = run(command.replace("localhost:50051", grpc_target).replace("dev-token", AUTH_TOKEN))
        assert output.strip()
    elif command.startswith(".venv/bin/movieservice client "):
        env = os.environ | {"GRPC_PORT": port}
        assert run(command.replace("dev-token", AUTH_TOKEN), env).strip()
    elif command.startswith(".venv/bin/movieservice seed "):
        env = service_env(settings) | {"MONGO_URL": mongo_url, "MONGO_DB": f"readme_line{line}"}
        run(command, env)
    elif command == ".venv/bin/movieservice serve":
        grpc_port = free_port()
        env = service_env(settings) | {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(free_port())}
        start_and_stop(command, env, grpc_port, signal.SIGTERM)
    elif command == "make run":
        grpc_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "REDIS", "GRPC", "AUTH"))}
        env |= {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(free_port())}
        start_and_stop(command, env, grpc_port, signal.SIGINT)
    elif command == "make ui":
        ui_port = free_port()
        env = os.environ | {"UI_PORT": str(ui_port), "UI_TARGET": grpc_target}
        start_and_stop(command, env, ui_port, signal.SIGINT)
    elif command == ".venv/bin/movieservice dev --ui":
        # The UI is listening before the server starts: the gRPC port answering means both are up.
        grpc_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "REDIS", "GRPC", "AUTH"))}
        env |= {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(free_port()), "UI_PORT": str(free_port())}
        start_and_stop(command, env, grpc_port, signal.SIGINT)
    elif command in ("make setup", "make lint"):
        run(command)
    elif command == "make proto":
        run(command)
        run("git diff --exit-code -- proto gen")
    else:
        pytest.fail(f"README line {line}: no test knows how to run `{command}`; add it to tests/test_readme.py")


def test_make_test_runs_the_whole_suite_then_lint():
    """`make test` is the README's test command and what CI runs: it must be pytest
    (every test) and lint, and no target may be defined twice (make keeps the
    last recipe, and a broken merge once made `test` run the load tests instead)."""
    result = subprocess.run(["make", "-n", "test"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "overriding recipe" not in result.stderr, result.stderr
    commands = result.stdout.splitlines()
    assert ".venv/bin/pytest" in commands, commands
    assert any("lint" in command for command in commands), commands


@pytest.mark.parametrize("command", ["make ui", ".venv/bin/movieservice ui"])
def test_the_ui_stops_on_ctrl_c_even_when_started_with_sigint_ignored(command, grpc_target):
    """A script that starts a command in the background hands it SIGINT ignored
    (POSIX), and Python then installs no KeyboardInterrupt: `movieservice ui` (and
    the make running it) ignored Ctrl-C until it had signal handlers of its own."""
    ui_port = free_port()
    env = os.environ | {"UI_PORT": str(ui_port), "UI_TARGET": grpc_target}
    start_and_stop(command, env, ui_port, signal.SIGINT, sigint_ignored=True)
