"""Test certificates, generated per run with trustme (never committed).

`make_tls_files(folder)` writes a fresh CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, all as PEM files (keys in PKCS#8) that every
client (Python, Go, Java, grpcurl) and `redis-server` read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one test CA and the certificates it issued.

    Attributes:
        ca: The CA certificate (trust root of servers and clients).
        server_cert: Certificate of 127.0.0.1 / localhost (chain, leaf first).
        server_key: Its private key.
        client_cert: A client certificate (subject `client_name`).
        client_key: Its private key.
        client_name: The client certificate's identity.

    """

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_name: str

    def read(self, name: str) -> bytes:
        """The bytes of one of the files (`ca`, `server_cert`, ...)."""
        path: Path = getattr(self, name)
        return path.read_bytes()


def _write_leaf(leaf: trustme.LeafCert, cert: Path, key: Path) -> None:
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    # PKCS#8 ("BEGIN PRIVATE KEY"), the key format every client reads (Java's only one).
    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_tls_files(
    folder: Path,
    client_name: str = "etl-service@skewless.test",
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> TLSFiles:
    """Writes a new CA, a server certificate (of `server_names`) and a client one."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="skewless tests")
    files = TLSFiles(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        client_name=client_name,
    )
    ca.cert_pem.write_to_path(str(files.ca))
    _write_leaf(ca.issue_cert(*server_names), files.server_cert, files.server_key)
    _write_leaf(ca.issue_cert(client_name), files.client_cert, files.client_key)
    return files
