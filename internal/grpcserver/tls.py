"""TLS for the gRPC server: its certificate from files, reloaded when they change.

grpcio's dynamic SSL credentials ask `ServerCertificates.fetch` for a new
configuration at every TLS handshake (from a gRPC core thread, also under
grpc.aio). It compares the files' identity (device, inode, size, modification
time) with what it last loaded, a few `stat` calls, and reads them only when
that changed. New files are checked before grpc sees them (the key matches the
certificate, every file parses); files that fail, say a certificate copied
over before its key, are logged once and the previous certificate stays in
use until the files change again. Connections already open keep the
certificate they were made with; only new handshakes see a new one.

With TLS_CLIENT_CA_FILE the server requires a client certificate chaining to
that CA at every handshake (mTLS); `client_identity` reads the verified
certificate's subject common name.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import grpc

from movieservice.config import ConfigError, Settings

log = logging.getLogger(__name__)

# (device, inode, size, modification time in ns) of each file; None: missing.
_Identity = tuple[tuple[int, int, int, int] | None, ...]
# Files modified this recently are compared by content, not only by identity:
# a file rewritten in place with the same size within the filesystem clock's
# granularity (a few ms) keeps its identity (git's "racily clean" entries).
_RECENT_NS = 2_000_000_000


@dataclass(frozen=True)
class _Loaded:
    identity: _Identity
    contents: dict[str, bytes]
    configuration: grpc.ServerCertificateConfiguration


class ServerCertificates:
    """The certificate chain and key of TLS_CERT_FILE / TLS_KEY_FILE and the
    client CA of TLS_CLIENT_CA_FILE (mTLS, when set), as grpc server credentials
    that follow changes to the files.

    Raises ConfigError, naming the setting, when the files do not work at start.
    """

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self._files = {"TLS_CERT_FILE": cert_file, "TLS_KEY_FILE": key_file}
        if client_ca_file:
            self._files["TLS_CLIENT_CA_FILE"] = client_ca_file
        self._lock = threading.Lock()
        self._current = self._initial()
        # The files last found unusable (their identity and contents), so that
        # they are reported once, not at every handshake.
        self._rejected: tuple[_Identity, dict[str, bytes] | None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerCertificates | None:
        """None when TLS_CERT_FILE is not set (plaintext)."""
        if not settings.tls_cert_file:
            return None
        return cls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)

    @property
    def mutual(self) -> bool:
        """Client certificates are required (TLS_CLIENT_CA_FILE is set)."""
        return "TLS_CLIENT_CA_FILE" in self._files

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current.configuration,
            self.fetch,  # type: ignore[arg-type]  # None means "no change" (grpc's documentation; the stubs omit it)
            require_client_authentication=self.mutual,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's certificate configuration fetcher: the new configuration when
        the files changed and are valid, else None (keep the current one). Never
        raises: grpc would log the exception and go on with the old certificate
        anyway, without saying which file was wrong."""
        try:
            with self._lock:  # handshakes of several connections may ask at once
                return self._reload()
        except Exception:
            log.exception("checking the TLS certificate files failed; still serving the previous certificate")
            return None

    def _initial(self) -> _Loaded:
        for _ in range(3):
            identity = self._identity()
            try:
                return self._load(identity, self._read())
            except _Changing:
                continue
        raise ConfigError(f"the TLS files kept changing while they were read: {', '.join(self._files.values())}")

    def _reload(self) -> grpc.ServerCertificateConfiguration | None:
        identity = self._identity()
        known = identity == self._current.identity or (self._rejected is not None and identity == self._rejected[0])
        if known and not _recently_modified(identity):
            return None
        try:
            contents = self._read()
        except ConfigError as error:
            self._reject(identity, None, error)
            return None
        if contents == self._current.contents:  # touched, or rewritten with the same bytes
            self._current = replace(self._current, identity=identity)
            return None
        if self._rejected is not None and contents == self._rejected[1]:
            return None
        try:
            loaded = self._load(identity, contents)
        except _Changing:
            return None  # being written to right now: the next handshake looks again
        except ConfigError as error:
            self._reject(identity, contents, error)
            return None
        self._current, self._rejected = loaded, None
        log.info("TLS certificate reloaded from %s", ", ".join(self._files.values()))
        return loaded.configuration

    def _reject(self, identity: _Identity, contents: dict[str, bytes] | None, error: ConfigError) -> None:
        if self._rejected != (identity, contents):
            log.error("the TLS files changed but cannot be used; still serving the previous certificate: %s", error)
        self._rejected = (identity, contents)

    def _identity(self) -> _Identity:
        return tuple(_file_identity(path) for path in self._files.values())

    def _read(self) -> dict[str, bytes]:
        contents = {}
        for name, path in self._files.items():
            try:
                with open(path, "rb") as file:
                    contents[name] = file.read()
            except OSError as error:
                raise ConfigError(f"{name}: cannot read {path!r}: {error.strerror or error}") from None
        return contents

    def _load(self, identity: _Identity, contents: dict[str, bytes]) -> _Loaded:
        _check(self._files, contents)
        if self._identity() != identity:
            raise _Changing  # what was read and checked may be half of the old files and half of the new
        configuration = grpc.ssl_server_certificate_configuration(
            [(contents["TLS_KEY_FILE"], contents["TLS_CERT_FILE"])],
            root_certificates=contents.get("TLS_CLIENT_CA_FILE"),
        )
        return _Loaded(identity, contents, configuration)


class _Changing(Exception):
    pass


def _recently_modified(identity: _Identity) -> bool:
    since = time.time_ns() - _RECENT_NS
    return any(file is not None and file[3] > since for file in identity)


def _file_identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)  # follows symbolic links, as Kubernetes' secret volumes use them
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _check(files: dict[str, str], contents: dict[str, bytes]) -> None:
    """ConfigError naming the setting unless the files hold a certificate chain,
    its private key (unencrypted: grpc takes no password) and, if given, CA
    certificates, all PEM. Checked by Python's OpenSSL, which reads the files
    themselves; the caller makes sure they did not change meanwhile."""
    for name, data in contents.items():
        if b"-----BEGIN " not in data:
            raise ConfigError(f"{name}: {files[name]!r} holds no PEM data")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files["TLS_CERT_FILE"], files["TLS_KEY_FILE"], password=_no_password)
    except (ssl.SSLError, _EncryptedKey) as error:
        raise ConfigError(
            f"TLS_CERT_FILE {files['TLS_CERT_FILE']!r} and TLS_KEY_FILE {files['TLS_KEY_FILE']!r} "
            f"are not a certificate and its unencrypted private key: {error}"
        ) from None
    if "TLS_CLIENT_CA_FILE" in contents:
        try:
            context.load_verify_locations(cadata=contents["TLS_CLIENT_CA_FILE"].decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as error:
            raise ConfigError(
                f"TLS_CLIENT_CA_FILE {files['TLS_CLIENT_CA_FILE']!r} holds no usable CA certificate: {error}"
            ) from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    raise _EncryptedKey("the private key is encrypted")


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials (None: plaintext). ConfigError when the files do not work."""
    certificates = ServerCertificates.from_settings(settings)
    return certificates.credentials() if certificates else None


def is_loopback(host: str) -> bool:
    """`host` (GRPC_HOST, maybe in brackets) is reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def client_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The subject common name of the client certificate this call's TLS
    handshake verified, or None (plaintext, TLS without a client certificate).

    Only a server with TLS_CLIENT_CA_FILE requests client certificates, and it
    then refuses any handshake whose certificate does not chain to that CA, so
    a name returned here was verified. `peer_identities()` is None when the
    handshake authenticated no peer."""
    if context.peer_identities() is None:
        return None
    names = context.auth_context().get("x509_common_name") or ()
    for name in names:
        return name.decode("utf-8", errors="replace")
    return None
