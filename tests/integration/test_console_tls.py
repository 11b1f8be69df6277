"""The console's channel credentials: TLS and mTLS against a real TLS gRPC server.

The server here is a real `grpc.server` with TLS that requires a client certificate and
serves only the standard health service, so the overview shows the health the console
reached and the registry call's UNIMPLEMENTED: enough to prove the handshake, with no
change to the skewless server.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from skewless.console import ConsoleServer, ConsoleSettings

CERTS = Path(__file__).parent / "certs"


@pytest.fixture(scope="module")
def tls_target() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [((CERTS / "server.key").read_bytes(), (CERTS / "server.pem").read_bytes())],
        root_certificates=(CERTS / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def overview(settings: ConsoleSettings) -> tuple[int, str]:
    console = ConsoleServer(settings, port=0).start()
    try:
        with urllib.request.urlopen(console.url + "/", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    finally:
        console.stop()


def test_mtls_with_the_ca_and_a_client_certificate_reaches_the_server(tls_target: str) -> None:
    settings = ConsoleSettings.from_files(
        tls_target,
        root_ca=CERTS / "ca.pem",
        client_cert=CERTS / "client.pem",
        client_key=CERTS / "client.key",
        timeout=5,
    )
    assert settings.secure
    status, body = overview(settings)
    assert 'data-field="health">SERVING<' in body
    assert status == 501 and "UNIMPLEMENTED" in body  # this server has no RegistryService
    assert "(TLS)" in body


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"root_ca": True}, id="no client certificate"),
        pytest.param({}, id="plaintext"),
    ],
)
def test_without_the_right_credentials_the_call_is_unavailable(
    tls_target: str, settings: dict[str, bool]
) -> None:
    built = ConsoleSettings.from_files(
        tls_target, root_ca=CERTS / "ca.pem" if settings.get("root_ca") else None, timeout=3
    )
    status, body = overview(built)
    assert status == 503
    assert "UNAVAILABLE" in body and 'data-field="health"' not in body


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="--client-cert and --client-key go together"):
        ConsoleSettings.from_files("127.0.0.1:1", client_cert=CERTS / "client.pem")
