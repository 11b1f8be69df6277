"""The cross-language contract once more, over TLS and over mutual TLS.

The contract fixture (client_harness) is served on a TLS port, then on a mutual TLS
port, with certificates made for the run. Python, Go, Java and grpcurl connect with
the CA (and the client certificate under mTLS) and a bearer token, and must give the
answers the Python client gives over plaintext: values, statuses, event times and
error codes. Reflection and health answer on the same port under the same TLS.
A leg is skipped only when its toolchain (go, mvn, grpcurl) is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from skewless.online.embedded_redis import EmbeddedRedis

from . import client_harness as h
from .certs import TLSFiles, make_tls_files
from .test_cross_language import assert_same_answers


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("xlang-tls-certs"))


@pytest.fixture(scope="module")
def plaintext_reference(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The Python client's answers over plaintext: what every secure leg must reproduce."""
    with h.serve_fixture(tmp_path_factory.mktemp("xlang-plain"), redis_server.url) as served:
        return h.python_client_answers(served.addr)


@pytest.fixture(scope="module", params=["tls", "mtls"])
def fixture(
    request: pytest.FixtureRequest,
    redis_server: EmbeddedRedis,
    certs: TLSFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[h.Fixture]:
    mutual = request.param == "mtls"
    server_tls: tuple[Path, ...] = (certs.server_cert, certs.server_key)
    client = h.ClientTLS(ca=certs.ca, token="xlang-token")
    if mutual:
        server_tls += (certs.ca,)
        client = h.ClientTLS(
            ca=certs.ca, cert=certs.client_cert, key=certs.client_key, token="xlang-token"
        )
    data = tmp_path_factory.mktemp(f"xlang-{request.param}")
    with h.serve_fixture(
        data, redis_server.url, server_tls=server_tls, client_tls=client
    ) as served:
        yield served


@pytest.fixture(scope="module")
def go_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = h.go_binary()
    if go is None:
        pytest.skip("the go toolchain is not installed")
    binary = tmp_path_factory.mktemp("go-example") / "example"
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    subprocess.run(
        [go, "build", "-o", str(binary), "./cmd/example"], cwd=h.GO_DIR, env=env, check=True
    )
    return binary


@pytest.fixture(scope="module")
def java_classpath() -> str:
    if h.mvn_binary() is None:
        pytest.skip("Maven (mvn) is not installed")
    return h.java_classpath()


def test_python_client_and_stub_agree_over_tls(
    fixture: h.Fixture, plaintext_reference: dict[str, Any]
) -> None:
    assert fixture.tls is not None
    answers = h.python_client_answers(fixture.addr, fixture.tls)
    assert_same_answers("Python over TLS", answers, plaintext_reference)
    stub = h.python_stub_answers(fixture.addr, fixture.tls)
    assert_same_answers("the Python stub over TLS", stub, plaintext_reference)


def test_go_example_agrees_over_tls(
    fixture: h.Fixture, plaintext_reference: dict[str, Any], go_example: Path
) -> None:
    result = subprocess.run(
        [str(go_example), "-addr", fixture.addr, *fixture.go_flags()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert_same_answers("Go over TLS", json.loads(result.stdout), plaintext_reference)


def test_java_example_agrees_over_tls(
    fixture: h.Fixture, plaintext_reference: dict[str, Any], java_classpath: str
) -> None:
    result = subprocess.run(
        [
            "java",
            "-cp",
            java_classpath,
            "dev.skewless.client.example.Example",
            "--addr",
            fixture.addr,
            *fixture.java_flags(),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert_same_answers("Java over TLS", json.loads(result.stdout), plaintext_reference)


@pytest.mark.skipif(not h.GRPCURL.exists(), reason="grpcurl is not installed (run `make tools`)")
def test_grpcurl_agrees_over_tls_with_reflection_and_health(
    fixture: h.Fixture, plaintext_reference: dict[str, Any]
) -> None:
    answers = h.grpcurl_answers(fixture.addr, fixture.tls)
    assert_same_answers("grpcurl over TLS", answers, plaintext_reference)
    listed = h.grpcurl(fixture.addr, "list", tls=fixture.tls)
    assert listed.returncode == 0, listed.stderr
    assert "skewless.v1.OnlineService" in listed.stdout.split()
    health = h.grpcurl(fixture.addr, "grpc.health.v1.Health/Check", body="{}", tls=fixture.tls)
    assert health.returncode == 0 and '"SERVING"' in health.stdout, health.stderr
    # Plaintext gets nothing from the TLS port.
    assert h.grpcurl(fixture.addr, "list", max_time=2).returncode != 0


def test_a_client_without_a_certificate_is_refused_only_under_mtls(
    fixture: h.Fixture, plaintext_reference: dict[str, Any]
) -> None:
    assert fixture.tls is not None
    no_cert = h.ClientTLS(ca=fixture.tls.ca, token=fixture.tls.token)
    started = time.monotonic()
    answers = h.python_client_answers(fixture.addr, no_cert)
    if fixture.tls.cert is None:  # plain TLS: a client certificate is not needed
        assert_same_answers("Python without a certificate", answers, plaintext_reference)
        return
    codes = [a.get("error", {}).get("code") for a in answers["lookups"]]
    assert codes == ["UNAVAILABLE"] * len(h.LOOKUPS)
    assert time.monotonic() - started < 5, "a refused handshake should fail fast"
    channel = grpc.secure_channel(fixture.addr, no_cert.credentials())
    with channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=1)
    if h.GRPCURL.exists():
        assert h.grpcurl(fixture.addr, "list", tls=no_cert, max_time=2).returncode != 0
