"""TLS and mTLS (README "TLS"): the settings, real clients over TLS (grpcurl,
Python, `movieservice client`), clients refused under mTLS, the verified
client identity, the server certificate replaced while serving, the warning
about plaintext, and Redis and MongoDB (FerretDB) over TLS.

Certificates are made with `openssl` (tests/support/certs.py); the Go and
Node clients over mTLS are in test_interop.py.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pymongo
import pytest
import redis
from bson import ObjectId
from prometheus_client import CollectorRegistry

from movieservice.app import redis_cache
from movieservice.config import ConfigError, Settings, load_settings
from movieservice.core.ports import CacheUnavailable
from movieservice.devstack.processes import FerretDBProcess, ServerProcess, ferretdb_server, find_tool, free_port
from movieservice.devstack.processes import redis_server as start_redis_server
from movieservice.devstack.stack import MOVIESERVICE, seed_database, spawn
from movieservice.grpcserver import tls
from movieservice.grpcserver.server import ListenError, listen, new_server
from movieservice.metrics import Metrics
from movieservice.proto.movies.v1 import movies_pb2, movies_pb2_grpc
from tests.conftest import PROJECT_ROOT, WRITER, serve_in_process, service_env
from tests.support.certs import KeyPair, Pki, make_pki, requires_openssl
from tests.support.inprocess import LoopThread, ServedApp

pytestmark = requires_openssl

SERVICES = {"movies.v1.MovieService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(settings: Settings, server: KeyPair, client_ca: Path | None = None) -> Settings:
    return replace(
        settings,
        tls_cert_file=str(server.cert),
        tls_key_file=str(server.key),
        tls_client_ca_file=str(client_ca or ""),
    )


@pytest.fixture(scope="module")
def tls_served(settings: Settings, server_loop: LoopThread, pki: Pki) -> Iterator[ServedApp]:
    """The service over TLS (no client certificates)."""
    running = serve_in_process(server_loop, tls_settings(settings, pki.server))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_served(settings: Settings, server_loop: LoopThread, pki: Pki) -> Iterator[ServedApp]:
    """The service over mTLS: a client certificate from the test CA is required."""
    running = serve_in_process(server_loop, tls_settings(settings, pki.server, pki.ca.cert))
    yield running
    running.stop()


def secure_channel(target: str, ca: Path, client: KeyPair | None = None) -> grpc.Channel:
    """A channel with a connection of its own (no subchannel shared with other
    channels), trusting only `ca`, presenting `client`'s certificate if given."""
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(), client.key.read_bytes() if client else None, client.cert.read_bytes() if client else None
    )
    return grpc.secure_channel(target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def get(channel: grpc.Channel, movie_id: str) -> movies_pb2.Movie:
    stub = movies_pb2_grpc.MovieServiceStub(channel)  # type: ignore[no-untyped-call]
    return stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie


def refused(channel: grpc.Channel, movie_id: str) -> grpc.StatusCode:
    """The code of a Get over `channel`, which must fail (the handshake is refused)."""
    with channel, pytest.raises(grpc.RpcError) as info:
        get(channel, movie_id)
    return info.value.code()


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_tool("grpcurl"), *args], capture_output=True, text=True, timeout=30)


# Settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TLS_CERT_FILE": "{cert}"}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
        ({"TLS_KEY_FILE": "{key}"}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
        ({"TLS_CLIENT_CA_FILE": "{ca}"}, r"TLS_CLIENT_CA_FILE \(mTLS\) needs TLS_CERT_FILE and TLS_KEY_FILE"),
        ({"TLS_CERT_FILE": "{missing}", "TLS_KEY_FILE": "{key}"}, "TLS_CERT_FILE: cannot read .*No such file"),
        ({"TLS_CERT_FILE": "{cert}", "TLS_KEY_FILE": "{directory}"}, "TLS_KEY_FILE: cannot read .*Is a directory"),
        (
            {"TLS_CERT_FILE": "{cert}", "TLS_KEY_FILE": "{key}", "TLS_CLIENT_CA_FILE": "{missing}"},
            "TLS_CLIENT_CA_FILE: cannot read",
        ),
        ({"REDIS_CA_FILE": "{ca}"}, "REDIS_CA_FILE is for TLS connections to Redis: REDIS_URL must start with rediss"),
        ({"REDIS_URL": "rediss://h:6380/0", "REDIS_CA_FILE": "{missing}"}, "REDIS_CA_FILE: cannot read"),
        ({"REDIS_URL": "rediss://h:6380/0", "REDIS_CERT_FILE": "{cert}"}, "REDIS_CERT_FILE and REDIS_KEY_FILE go"),
    ],
)
def test_tls_settings_name_what_is_wrong(pki: Pki, tmp_path: Path, environ: dict[str, str], message: str) -> None:
    paths = {
        "cert": pki.server.cert,
        "key": pki.server.key,
        "ca": pki.ca.cert,
        "missing": tmp_path / "missing.pem",
        "directory": tmp_path,
    }
    with pytest.raises(ConfigError, match=message):
        load_settings({name: value.format(**paths) for name, value in environ.items()}, None)


def test_tls_settings_are_read_from_the_environment(pki: Pki) -> None:
    environ = {
        "TLS_CERT_FILE": str(pki.server.cert),
        "TLS_KEY_FILE": str(pki.server.key),
        "TLS_CLIENT_CA_FILE": str(pki.ca.cert),
        "REDIS_URL": "rediss://cache.internal:6380/0",
        "REDIS_CA_FILE": str(pki.ca.cert),
        "REDIS_CERT_FILE": str(pki.client.cert),
        "REDIS_KEY_FILE": str(pki.client.key),
    }
    settings = load_settings(environ, None)
    assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file) == (
        str(pki.server.cert),
        str(pki.server.key),
        str(pki.ca.cert),
    )
    assert (settings.redis_ca_file, settings.redis_cert_file, settings.redis_key_file) == (
        str(pki.ca.cert),
        str(pki.client.cert),
        str(pki.client.key),
    )


def test_certificate_files_that_do_not_work_are_refused_at_start(
    pki: Pki, tmp_path: Path, server_loop: LoopThread
) -> None:
    with pytest.raises(ConfigError, match=r"TLS_CERT_FILE .* and TLS_KEY_FILE .* are not a certificate and its"):
        tls.ServerCertificates(str(pki.server.cert), str(pki.other_server.key))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"TLS_KEY_FILE: .*not\.pem' holds no PEM data"):
        tls.ServerCertificates(str(pki.server.cert), str(not_pem))
    with pytest.raises(ConfigError, match=r"TLS_CLIENT_CA_FILE: .* holds no PEM data"):
        tls.ServerCertificates(str(pki.server.cert), str(pki.server.key), str(not_pem))
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pki.server.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ConfigError, match="the private key is encrypted"):
        tls.ServerCertificates(str(pki.server.cert), str(encrypted))
    # The server reports it as it reports a port it cannot have.
    settings = tls_settings(
        Settings(grpc_host="127.0.0.1", grpc_port=0), KeyPair(pki.server.cert, pki.other_server.key)
    )

    async def bind() -> None:  # on the session's loop, which grpc.aio is bound to
        listen(new_server(settings), settings)

    with pytest.raises(ListenError, match="could not serve TLS: TLS_CERT_FILE"):
        server_loop.run(bind())


# Real clients


def test_grpcurl_over_tls_lists_the_services_and_gets_a_movie(tls_served: ServedApp, pki: Pki, seeded_ids) -> None:
    listed = grpcurl("-cacert", str(pki.ca.cert), tls_served.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES
    movie_id = seeded_ids[0]
    got = grpcurl(
        "-cacert", str(pki.ca.cert), "-d", f'{{"id": "{movie_id}"}}', tls_served.target, "movies.v1.MovieService/Get"
    )
    assert got.returncode == 0, got.stderr
    assert f'"id": "{movie_id}"' in got.stdout
    # Plaintext is not served, and a client trusting another CA does not trust the server.
    assert grpcurl("-plaintext", tls_served.target, "list").returncode != 0
    assert grpcurl("-cacert", str(pki.other_ca.cert), tls_served.target, "list").returncode != 0


def test_grpcurl_over_mtls_needs_a_client_certificate(mtls_served: ServedApp, pki: Pki, seeded_ids) -> None:
    with_certificate = ("-cacert", str(pki.ca.cert), "-cert", str(pki.client.cert), "-key", str(pki.client.key))
    listed = grpcurl(*with_certificate, mtls_served.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES
    movie_id = seeded_ids[1]
    got = grpcurl(*with_certificate, "-d", f'{{"id": "{movie_id}"}}', mtls_served.target, "movies.v1.MovieService/Get")
    assert got.returncode == 0, got.stderr
    assert f'"id": "{movie_id}"' in got.stdout
    without = grpcurl("-cacert", str(pki.ca.cert), mtls_served.target, "list")
    assert without.returncode != 0
    other = ("-cacert", str(pki.ca.cert), "-cert", str(pki.other_client.cert), "-key", str(pki.other_client.key))
    assert grpcurl(*other, mtls_served.target, "list").returncode != 0


def test_mtls_refuses_clients_without_a_certificate_of_its_ca(mtls_served: ServedApp, pki: Pki, seeded_ids) -> None:
    movie_id = seeded_ids[2]
    with secure_channel(mtls_served.target, pki.ca.cert, pki.client) as channel:
        assert get(channel, movie_id).id == movie_id
    assert refused(secure_channel(mtls_served.target, pki.ca.cert), movie_id) == grpc.StatusCode.UNAVAILABLE
    # The same subject name, issued by another CA.
    other = secure_channel(mtls_served.target, pki.ca.cert, pki.other_client)
    assert refused(other, movie_id) == grpc.StatusCode.UNAVAILABLE


def test_the_command_line_client_speaks_tls(mtls_served: ServedApp, pki: Pki, seeded_ids, tmp_path: Path) -> None:
    movie_id = seeded_ids[3]
    title = get_title(mtls_served, pki, movie_id)
    base = [str(MOVIESERVICE), "client", "--target", mtls_served.target, "--cacert", str(pki.ca.cert)]
    with_certificate = [*base, "--cert", str(pki.client.cert), "--key", str(pki.client.key)]
    result = subprocess.run([*with_certificate, "get", movie_id], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(title)
    without = subprocess.run([*base, "get", movie_id], capture_output=True, text=True, timeout=60)
    assert without.returncode == 1 and without.stderr.startswith("UNAVAILABLE"), without.stderr
    missing = [*base, "--cert", str(tmp_path / "nope.pem"), "--key", str(pki.client.key), "get", movie_id]
    result = subprocess.run(missing, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "nope.pem" in result.stderr, result.stderr


def get_title(served: ServedApp, pki: Pki, movie_id: str) -> str:
    with secure_channel(served.target, pki.ca.cert, pki.client) as channel:
        return get(channel, movie_id).title


@pytest.mark.slow
def test_movieservice_serve_with_workers_over_mtls(settings: Settings, pki: Pki, seeded_ids, tmp_path: Path) -> None:
    """The real process, as operators run it, with two workers (the supervisor)."""
    env = service_env(
        tls_settings(settings, pki.server, pki.ca.cert), WORKERS="2", GRPC_PORT=str(free_port()), METRICS_PORT="0"
    )
    service = spawn(env, tmp_path, name="mtls")
    try:
        movie_id = seeded_ids[4]
        for _ in range(4):  # new connections, spread over the workers
            with secure_channel(service.target, pki.ca.cert, pki.client) as channel:
                assert get(channel, movie_id).id == movie_id
        assert refused(secure_channel(service.target, pki.ca.cert), movie_id) == grpc.StatusCode.UNAVAILABLE
    finally:
        assert service.stop() == 0
    log = service.log.read_text()
    assert "(mTLS: client certificates required)" in log, log
    assert "serving plaintext" not in log


# The client's identity


def test_client_identity_is_the_verified_certificates_common_name(
    server_loop: LoopThread, pki: Pki, tmp_path: Path
) -> None:
    async def who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return repr(tls.client_identity(context)).encode()

    handler = grpc.method_handlers_generic_handler("test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(who)})

    async def start(credentials: grpc.ServerCredentials | None) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        return server, port

    def who_am_i(channel: grpc.Channel) -> str:
        with channel:
            return channel.unary_unary("/test.Identity/Who")(b"", timeout=10).decode()

    mutual = tls.ServerCertificates(str(pki.server.cert), str(pki.server.key), str(pki.ca.cert))
    one_way = tls.ServerCertificates(str(pki.server.cert), str(pki.server.key))
    servers = [server_loop.run(start(c)) for c in (mutual.credentials(), one_way.credentials(), None)]
    try:
        (_, mutual_port), (_, one_way_port), (_, plain_port) = servers
        assert who_am_i(secure_channel(f"127.0.0.1:{mutual_port}", pki.ca.cert, pki.client)) == "'writer-1'"
        assert who_am_i(secure_channel(f"127.0.0.1:{one_way_port}", pki.ca.cert)) == "None"
        # A client certificate offered to a server that asks for none identifies nobody.
        assert who_am_i(secure_channel(f"127.0.0.1:{one_way_port}", pki.ca.cert, pki.client)) == "None"
        assert who_am_i(grpc.insecure_channel(f"127.0.0.1:{plain_port}")) == "None"
    finally:
        for server, _ in servers:
            server_loop.run(server.stop(None))


# Certificates replaced while serving


def test_a_new_server_certificate_is_served_without_a_restart(
    settings: Settings, server_loop: LoopThread, pki: Pki, seeded_ids, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = KeyPair(tmp_path / "server.pem", tmp_path / "server.key")
    shutil.copyfile(pki.server.cert, live.cert)
    shutil.copyfile(pki.server.key, live.key)
    running = serve_in_process(server_loop, tls_settings(settings, live))
    movie_id = seeded_ids[5]
    with ExitStack() as channels:
        existing = channels.enter_context(secure_channel(running.target, pki.ca.cert))
        assert get(existing, movie_id).id == movie_id

        # Half of a replacement: the new certificate beside the old key. The
        # old certificate stays in use, and the error is logged once.
        with caplog.at_level(logging.INFO, logger="movieservice.grpcserver.tls"):
            live.cert.write_bytes(pki.other_server.cert.read_bytes())
            for _ in range(3):
                with secure_channel(running.target, pki.ca.cert) as channel:
                    assert get(channel, movie_id).id == movie_id
            assert refused(secure_channel(running.target, pki.other_ca.cert), movie_id) == grpc.StatusCode.UNAVAILABLE
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1, errors
            assert "still serving the previous certificate" in errors[0] and "TLS_KEY_FILE" in errors[0]

            # The other half: from now on new connections get the new certificate...
            live.key.write_bytes(pki.other_server.key.read_bytes())
            with secure_channel(running.target, pki.other_ca.cert) as channel:
                assert get(channel, movie_id).id == movie_id
            assert refused(secure_channel(running.target, pki.ca.cert), movie_id) == grpc.StatusCode.UNAVAILABLE
            assert any("TLS certificate reloaded" in r.getMessage() for r in caplog.records)

        # ...and the connection made before keeps working.
        assert get(existing, movie_id).id == movie_id
    running.stop()


def test_a_new_client_ca_is_used_without_a_restart(
    settings: Settings, server_loop: LoopThread, pki: Pki, seeded_ids, tmp_path: Path
) -> None:
    client_ca = tmp_path / "clients.pem"
    shutil.copyfile(pki.ca.cert, client_ca)
    running = serve_in_process(server_loop, tls_settings(settings, pki.server, client_ca))
    movie_id = seeded_ids[6]
    try:
        with secure_channel(running.target, pki.ca.cert, pki.client) as channel:
            assert get(channel, movie_id).id == movie_id
        # Replaced the way a secret manager does it: a new file renamed over the old one.
        staged = tmp_path / "clients.pem.new"
        staged.write_bytes(pki.other_ca.cert.read_bytes())
        staged.replace(client_ca)
        with secure_channel(running.target, pki.ca.cert, pki.other_client) as channel:
            assert get(channel, movie_id).id == movie_id
        assert refused(secure_channel(running.target, pki.ca.cert, pki.client), movie_id) == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


def test_fetch_gives_grpc_a_configuration_only_for_new_usable_files(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copyfile(pki.server.cert, cert)
    shutil.copyfile(pki.server.key, key)
    certificates = tls.ServerCertificates(str(cert), str(key))
    assert certificates.fetch() is None  # the same bytes: nothing new for grpc
    # Same bytes, new identity (touched): still nothing new.
    staged = tmp_path / "staged.pem"
    shutil.copyfile(pki.server.cert, staged)
    staged.replace(cert)
    assert certificates.fetch() is None
    # A pair from the other CA, renamed in: a new configuration.
    for source, target in ((pki.other_server.cert, cert), (pki.other_server.key, key)):
        staged.write_bytes(source.read_bytes())
        staged.replace(target)
    assert isinstance(certificates.fetch(), grpc.ServerCertificateConfiguration)
    assert certificates.fetch() is None
    # Files gone: the previous certificate stays, and fetch does not raise.
    key.unlink()
    assert certificates.fetch() is None


# Plaintext


def test_plaintext_on_a_non_loopback_address_logs_a_warning(
    settings: Settings, server_loop: LoopThread, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async def bind(bound: Settings) -> None:
        server = new_server(bound)
        listen(server, bound)
        await server.stop(None)

    def warnings_when_binding(bound: Settings) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="movieservice.grpcserver.server"):
            server_loop.run(bind(bound))
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    everywhere = replace(settings, grpc_host="0.0.0.0", grpc_port=0)
    [warning] = warnings_when_binding(everywhere)
    assert "serving plaintext on 0.0.0.0:0" in warning
    assert "TLS_CERT_FILE" in warning and "TLS_KEY_FILE" in warning
    assert warnings_when_binding(replace(everywhere, grpc_host="127.0.0.1")) == []
    assert warnings_when_binding(tls_settings(everywhere, pki.server)) == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("[::1]", True),
        ("localhost", True),
        ("[::]", False),
        ("0.0.0.0", False),
        ("10.0.0.7", False),
        ("movies.example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert tls.is_loopback(host) is loopback


# Redis and MongoDB over TLS


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    """Debian's redis-server with TLS only (no plaintext port), not asking for client certificates."""
    port = free_port()
    options = {
        "port": "0",
        "tls-port": str(port),
        "tls-cert-file": str(pki.server.cert),
        "tls-key-file": str(pki.server.key),
        "tls-ca-cert-file": str(pki.ca.cert),
        "tls-auth-clients": "no",
    }
    process = start_redis_server(tmp_path_factory.mktemp("tls-redis"), port, options=options).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tls_mongo(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    """FerretDB with a TLS listener, seeded through it; yields its MONGO_URL."""
    process: FerretDBProcess = ferretdb_server(tmp_path_factory.mktemp("tls-ferretdb"))
    tls_port = free_port()
    process.argv = [
        *process.argv,
        f"--listen-tls=127.0.0.1:{tls_port}",
        f"--listen-tls-cert-file={pki.server.cert}",
        f"--listen-tls-key-file={pki.server.key}",
    ]
    process.start()
    try:
        url = f"mongodb://127.0.0.1:{tls_port}/?tls=true&tlsCAFile={pki.ca.cert}"
        seed_database(url, "tls", synthetic=30, theaters=10, random_seed=5)
        process.index_ids()
        yield url
    finally:
        process.stop()


def test_the_service_reads_and_writes_through_tls_redis_and_mongodb(
    settings: Settings, server_loop: LoopThread, pki: Pki, tls_redis: ServerProcess, tls_mongo: str
) -> None:
    with pymongo.MongoClient(tls_mongo) as mongo:
        movie_id = str(mongo.tls.movies.find_one({}, {"_id": 1})["_id"])  # type: ignore[index]
    over_tls = replace(
        settings,
        mongo_url=tls_mongo,
        mongo_db="tls",
        redis_url=f"rediss://127.0.0.1:{tls_redis.port}/0",
        redis_ca_file=str(pki.ca.cert),
        near_cache_size=100,  # its invalidations come over a connection of their own
    )
    direct = redis.Redis(port=tls_redis.port, ssl=True, ssl_ca_certs=str(pki.ca.cert))
    running = serve_in_process(server_loop, over_tls)
    try:
        stub = movies_pb2_grpc.MovieServiceStub(grpc.insecure_channel(running.target))  # type: ignore[no-untyped-call]
        first = stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie  # a miss: MongoDB, then Redis
        wait_until(lambda: direct.exists(f"movieservice:movie:{movie_id}"))
        assert stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie == first  # a hit
        renamed = movies_pb2.Movie(id=movie_id, title="Over TLS", year=2024, genres=["Drama"])
        stub.Upsert(movies_pb2.UpsertRequest(movie=renamed), metadata=WRITER, timeout=10)
        assert stub.Get(movies_pb2.GetRequest(id=movie_id), timeout=10).movie.title == "Over TLS"
        new_id = str(ObjectId())
        assert stub.Upsert(
            movies_pb2.UpsertRequest(movie=movies_pb2.Movie(id=new_id, title="New over TLS")),
            metadata=WRITER,
            timeout=10,
        ).created
        # Every connection of the service is a TLS one (the server has no other
        # port), among them the near cache's, with tracking on (flag t).
        clients = direct.client_list()
        assert any("t" in client["flags"] for client in clients), clients
        assert len(clients) >= 3, clients  # ours, the commands', the invalidations'
    finally:
        running.stop()
        direct.close()


def test_redis_certificates_are_checked_against_redis_ca_file(
    pki: Pki, tls_redis: ServerProcess, server_loop: LoopThread
) -> None:
    def ping(ca: Path) -> None:
        bound = Settings(redis_url=f"rediss://127.0.0.1:{tls_redis.port}/0", redis_ca_file=str(ca))
        cache = redis_cache(bound, Metrics(CollectorRegistry()))

        async def run() -> None:
            try:
                await cache.ping()
            finally:
                await cache.close()

        server_loop.run(run())

    ping(pki.ca.cert)
    with pytest.raises(CacheUnavailable):
        ping(pki.other_ca.cert)


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# The README


def readme_tls_blocks() -> list[list[str]]:
    """The shell blocks of the README's "TLS" section, as lists of commands."""
    section = (PROJECT_ROOT / "README.md").read_text().split("\n## TLS\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def test_the_readme_tls_walkthrough(settings: Settings, seeded_ids, tmp_path: Path) -> None:
    """The README's certificates, settings and clients, as a newcomer would
    use them (in a directory of their own rather than the project's .data)."""
    make_certificates, serve, use, _ = readme_tls_blocks()
    for command in make_certificates:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{command}:\n{result.stderr}"
    [serve_command] = serve
    *assignments, make_run = serve_command.split()
    assert make_run == "run" and assignments[-1] == "make"
    tls_env = dict(word.split("=", 1) for word in assignments[:-1])
    assert set(tls_env) == {"TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"}
    service = spawn(service_env(settings, **tls_env), tmp_path, name="readme-tls")  # relative paths: cwd
    try:
        movie_id = seeded_ids[8]
        for command in use:
            command = (
                command.replace("localhost:50051", f"localhost:{service.port}")
                .replace("573a1390f29313caabcd42e8", movie_id)
                .replace(".tools/bin/grpcurl", find_tool("grpcurl"))
                .replace(".venv/bin/movieservice", str(MOVIESERVICE))
            )
            env = os.environ | {"GRPC_PORT": str(service.port)}
            result = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, f"{command}:\n{result.stderr}"
            assert movie_id in result.stdout or "movies.v1.MovieService" in result.stdout, result.stdout
    finally:
        assert service.stop() == 0
    assert "(mTLS: client certificates required)" in service.log.read_text()


def test_a_client_certificate_on_the_allow_list_writes_without_a_token(
    settings: Settings, server_loop: LoopThread, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """AUTH_CLIENT_SUBJECTS: the verified certificate is the writer's identity;
    another name from the same CA still needs a token."""
    allowed = replace(tls_settings(settings, pki.server, pki.ca.cert), auth_client_subjects=("writer-1",))
    running = serve_in_process(server_loop, allowed)
    try:
        request = movies_pb2.UpsertRequest(movie=movies_pb2.Movie(title="written with a certificate"))
        with secure_channel(running.target, pki.ca.cert, pki.client) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)  # type: ignore[no-untyped-call]
            with caplog.at_level(logging.INFO, logger="movieservice.core.writes"):
                written = stub.Upsert(request, timeout=10).movie
        assert f"upsert movie={written.id}" in caplog.text and "writer=certificate:writer-1" in caplog.text
        with secure_channel(running.target, pki.ca.cert, pki.ca.client("reader-7")) as channel:
            stub = movies_pb2_grpc.MovieServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as refused_write:
                stub.Upsert(request, timeout=10)
            assert refused_write.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.Upsert(request, metadata=WRITER, timeout=10).created  # with a token it may
    finally:
        running.stop()


def test_an_allow_list_of_certificates_needs_mtls(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="AUTH_CLIENT_SUBJECTS names client certificates: it needs mTLS"):
        replace(settings, auth_client_subjects=("writer-1",))
