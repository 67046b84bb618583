"""Starting and stopping real server processes on free loopback ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Where `make setup` (scripts/install-tools.sh) puts the tools it builds.
TOOLS_BIN = PROJECT_ROOT / ".tools" / "bin"


class ToolMissing(RuntimeError):
    pass


def find_tool(name: str) -> str:
    """The path of `name`: $<NAME>_BIN, then .tools/bin, then PATH, then ~/go/bin,
    then /usr/sbin (Debian's nginx, off a non-root user's PATH)."""
    candidates = [
        os.environ.get(f"{name.upper().replace('-', '_')}_BIN"),
        str(TOOLS_BIN / name),
        shutil.which(name),
        str(Path.home() / "go" / "bin" / name),
        str(Path("/usr/sbin") / name),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise ToolMissing(f"{name} is not installed: run `make setup`")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


@dataclass
class ServerProcess:
    """A started server; `stop()` ends it (SIGTERM, then SIGKILL)."""

    name: str
    port: int
    argv: Sequence[str]
    log_path: Path
    # Added to this process' environment.
    environment: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] = field(init=False)

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **self.environment} if self.environment else None,
            )
        try:
            wait_for_port(self.port, timeout, self.process)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log_path}") from None
        return self

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def redis_server(
    data_dir: Path, port: int | None = None, *, cpus: str | None = None, options: Mapping[str, str] | None = None
) -> ServerProcess:
    """A redis-server configured as the service expects (see internal/cache/keys.py):
    256 MB evicting only keys with a TTL, unless `options` say otherwise. `cpus`
    pins it (taskset)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "port": str(port),
        "bind": "127.0.0.1",
        "dir": str(data_dir),
        "save": "",
        "appendonly": "no",
        "maxmemory": "256mb",
        "maxmemory-policy": "volatile-lru",
        **(options or {}),
    }
    argv = [*_pinned(cpus), find_tool("redis-server"), *(word for k, v in settings.items() for word in (f"--{k}", v))]
    return ServerProcess("redis-server", port, argv, data_dir / "redis.log")


def _pinned(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


@dataclass
class FerretDBProcess(ServerProcess):
    """FerretDB on SQLite, with `_id` lookups that use an index (see `index_ids`)."""

    data_dir: Path = Path()

    def start(self, timeout: float = 20.0) -> FerretDBProcess:
        super().start(timeout)
        self.index_ids()
        return self

    def index_ids(self) -> int:
        """Index every collection by the `_id` expression FerretDB queries with;
        returns how many indexes were added. Idempotent: call it again after
        creating collections (seeding), since FerretDB creates a collection's
        table on its first write.

        FerretDB 1.24's SQLite backend finds a document by `_id` (find, update,
        findAndModify, delete) with `WHERE _ferretdb_sjson->'$._id' = ?`, but
        builds its own unique `_id` index on `_ferretdb_sjson->"_id"`, which
        SQLite does not match to that expression: every lookup by `_id` scanned
        and parsed the whole collection, and writes held SQLite's single write
        lock meanwhile, so concurrent writers starved one another for seconds.
        SQLite keeps this extra index current on every write; FerretDB does not
        list it and does not need to know it exists.
        """
        added = 0
        for database in sorted(self.data_dir.glob("*.sqlite")):
            with closing(sqlite3.connect(database, timeout=30)) as connection, connection:
                schema = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
                if _FERRETDB_COLLECTIONS not in schema:
                    continue
                for (table,) in connection.execute(f"SELECT table_name FROM {_FERRETDB_COLLECTIONS}").fetchall():
                    index = f"{table}_movieservice_id_lookup"
                    if index not in schema:
                        connection.execute(f'CREATE INDEX "{index}" ON "{table}" ({_FERRETDB_ID_EXPRESSION})')
                        added += 1
        return added


# FerretDB 1.24 (internal/backends/sqlite): its table of collections, and the
# expression its queries compare `_id` with (metadata.IDColumn).
_FERRETDB_COLLECTIONS = "_ferretdb_collections"
_FERRETDB_ID_EXPRESSION = "_ferretdb_sjson->'$._id'"


def ferretdb_server(data_dir: Path, port: int | None = None, *, cpus: str | None = None) -> FerretDBProcess:
    """FerretDB (MongoDB wire protocol) on SQLite files in `data_dir`; `cpus` pins it (taskset)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        *_pinned(cpus),
        find_tool("ferretdb"),
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir}/",
        f"--state-dir={data_dir}",
        f"--listen-addr=127.0.0.1:{port}",
        "--debug-addr=127.0.0.1:0",
        "--telemetry=disable",
        "--log-level=warn",
    ]
    return FerretDBProcess("ferretdb", port, argv, data_dir / "ferretdb.log", data_dir=data_dir)


# The web UI's Streamlit script (internal/ui/app.py).
UI_APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


def ui_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    """`streamlit run` of the web UI on host:port: headless (no browser opened, no
    prompt), no usage statistics sent, and no exception details in the page."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(UI_APP),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
        "--client.showErrorDetails=none",
        "--client.toolbarMode=viewer",
    ]


def ui_server(target: str, metrics_url: str, log_dir: Path, port: int | None = None) -> ServerProcess:
    """The web UI (Streamlit) on 127.0.0.1:`port`, a client of the service at
    `target` (host:port) and of its /metrics at `metrics_url`."""
    port = port or free_port()
    environment = {"UI_TARGET": target, "UI_METRICS_URL": metrics_url}
    return ServerProcess("streamlit", port, ui_argv(port), log_dir / "ui.log", environment)


# deployments/nginx/movieservice.conf: nginx in front of service instances.
NGINX_SITE = PROJECT_ROOT / "deployments" / "nginx" / "movieservice.conf"
_NGINX_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+[^\s;]+(\s[^;]*)?;\n", re.MULTILINE)
_NGINX_LISTEN = re.compile(r"^(\s*)listen\s+[^\s;]+(\s[^;]*)?;", re.MULTILINE)


def nginx_server(
    directory: Path, upstreams: Sequence[str], port: int | None = None, site: Path = NGINX_SITE
) -> ServerProcess:
    """nginx in the foreground with `nginx_config(directory, upstreams, port, site)`;
    its error log is `directory/nginx.log`. To change the upstreams while it
    runs, write the config again and send it SIGHUP (a graceful reload)."""
    port = port or free_port()
    config = nginx_config(directory, upstreams, port, site)
    argv = [find_tool("nginx"), "-p", str(directory), "-c", str(config), "-e", "stderr"]
    return ServerProcess("nginx", port, argv, directory / "nginx.log")


def nginx_config(directory: Path, upstreams: Sequence[str], port: int, site: Path = NGINX_SITE) -> Path:
    """Write an nginx configuration into `directory` and return its path: the
    http-context `site` (deployments/nginx/movieservice.conf), its upstream
    sending to `upstreams` (each "HOST:PORT", optionally with parameters such
    as "down", and with those of the site's first `server` line) and its server
    listening on 127.0.0.1:`port`, everything else as the site says; the pid
    file, temporary files and an access log naming each call's instances
    (access.log) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    text = site.read_text()
    servers = list(_NGINX_UPSTREAM_SERVER.finditer(text))
    if not servers or len(_NGINX_LISTEN.findall(text)) != 1:
        raise ValueError(f"{site}: expected upstream `server` lines and one `listen` line")
    indent, parameters = servers[0].group(1), servers[0].group(2) or ""
    lines = "".join(f"{indent}server {upstream}{parameters};\n" for upstream in upstreams)
    text = text[: servers[0].start()] + lines + text[servers[-1].end() :]
    text = _NGINX_LISTEN.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{port}{m.group(2) or ''};", text)
    (directory / "movieservice.conf").write_text(text)
    temp = directory / "temp"
    temp.mkdir(exist_ok=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp_paths = "".join(f"    {kind}_temp_path {temp / kind};\n" for kind in kinds)
    config = directory / "nginx.conf"
    config.write_text(
        f"daemon off;\n"
        f"worker_processes 1;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log stderr notice;\n"
        f"events {{ worker_connections 4096; }}\n"
        f"http {{\n"
        f'    log_format calls \'$msec "$request" $status $request_time upstream=[$upstream_addr] '
        f"upstream_status=[$upstream_status]';\n"
        f"    access_log {directory / 'access.log'} calls;\n"
        f"{temp_paths}"
        f"    include {directory / 'movieservice.conf'};\n"
        f"}}\n"
    )
    return config


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is `pid` (for example a supervisor's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found
