"""Certificates for TLS tests, made with the `openssl` command as the README
shows: a CA, server certificates for 127.0.0.1 and localhost, and client
certificates (mTLS) named by their subject's common name."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")
requires_openssl = pytest.mark.skipif(OPENSSL is None, reason="the `openssl` command is not installed")
# Elliptic-curve keys: made in milliseconds, where RSA keys take a noticeable fraction of a second.
_NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA in `directory`; `server()` and `client()` issue certificates."""

    directory: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        authority = cls(directory, name)
        _openssl(
            "req", "-x509", *_NEW_KEY, "-days", "2", "-subj", f"/CN={name}",
            "-keyout", str(authority.key), "-out", str(authority.cert),
        )  # fmt: skip
        return authority

    def server(self, name: str = "server") -> KeyPair:
        """A server certificate for 127.0.0.1 and localhost."""
        return self._issue(
            name, "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        )

    def client(self, common_name: str) -> KeyPair:
        """A client certificate whose subject's common name is `common_name`."""
        return self._issue(f"client-{common_name}", common_name, "extendedKeyUsage=clientAuth\n")

    def _issue(self, name: str, common_name: str, extensions: str) -> KeyPair:
        pair = KeyPair(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        request, extfile = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        extfile.write_text("basicConstraints=CA:FALSE\n" + extensions)
        _openssl(
            "req", "-new", *_NEW_KEY, "-subj", f"/CN={common_name}", "-keyout", str(pair.key), "-out", str(request)
        )
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-CAserial", str(self.directory / "ca.srl"), "-days", "2",
            "-extfile", str(extfile), "-out", str(pair.cert),
        )  # fmt: skip
        return pair


def _openssl(*args: str) -> None:
    assert OPENSSL is not None
    result = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


@dataclass(frozen=True)
class Pki:
    """What the TLS tests use: the service's CA with a server certificate and
    the client certificate `writer-1`, and another CA with the same."""

    ca: Authority
    server: KeyPair
    client: KeyPair
    other_ca: Authority
    other_server: KeyPair
    other_client: KeyPair


def make_pki(directory: Path) -> Pki:
    ca = Authority.create(directory / "ca", "movieservice test CA")
    other = Authority.create(directory / "other-ca", "another CA")
    return Pki(ca, ca.server(), ca.client("writer-1"), other, other.server(), other.client("writer-1"))
