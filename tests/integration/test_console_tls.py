"""The console's channel credentials: TLS and mTLS against the real skewless server.

The server runs under mutual TLS with certificates generated for the run (never
committed); the console reaches it with the CA and a client certificate, and without
them its pages say UNAVAILABLE.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from skewless.console import ConsoleServer, ConsoleSettings
from skewless.core.config import RepoConfig, ServerTLS
from skewless.registry.registry_store import RegistryStore

from . import client_harness as h
from .certs import TLSFiles, make_tls_files
from .served import ServerThread


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_target(
    tmp_path_factory: pytest.TempPathFactory, redis_server: object, certs: TLSFiles
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("repo")
    RegistryStore(root / ".skewless" / "registry.pb").save(h.build_registry())
    config = RepoConfig(
        root=root,
        project=h.PROJECT,
        data_dir=root / ".skewless",
        redis_url=redis_server.url,  # type: ignore[attr-defined]
        server_port=0,
        metrics_port=0,
        server_tls=ServerTLS(
            cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=certs.ca
        ),
    )
    server = ServerThread(config).start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


def overview(settings: ConsoleSettings) -> tuple[int, str]:
    console = ConsoleServer(settings, port=0).start()
    try:
        with urllib.request.urlopen(console.url + "/", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the connection's socket
            return exc.code, exc.read().decode()
    finally:
        console.stop()


def test_mtls_with_the_ca_and_a_client_certificate_reaches_the_server(
    tls_target: str, certs: TLSFiles
) -> None:
    settings = ConsoleSettings.from_files(
        tls_target,
        root_ca=certs.ca,
        client_cert=certs.client_cert,
        client_key=certs.client_key,
        timeout=5,
    )
    assert settings.secure
    status, body = overview(settings)
    assert status == 200, body
    assert 'data-field="health">SERVING<' in body
    assert h.PROJECT in body and "(TLS)" in body


@pytest.mark.parametrize("with_ca", [True, False], ids=["no client certificate", "plaintext"])
def test_without_the_right_credentials_the_call_is_unavailable(
    tls_target: str, certs: TLSFiles, with_ca: bool
) -> None:
    built = ConsoleSettings.from_files(tls_target, root_ca=certs.ca if with_ca else None, timeout=3)
    status, body = overview(built)
    assert status == 503
    assert "UNAVAILABLE" in body and 'data-field="health"' not in body


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--client-cert and --client-key go together"):
        ConsoleSettings.from_files("127.0.0.1:1", client_cert=tmp_path / "client.pem")
