"""The cross-language contract under mutual TLS and JWT authentication with permissions.

The contract fixture is served over mutual TLS with `auth.mode: jwt` (keys and a JWKS
file made for the run) and policies. Python (client and stub), Go, Java and grpcurl
each ask the contract's questions with several tokens:

- a subject granted `read_online` on the project gets the plaintext answers exactly;
- a subject granted only `driver_stats` gets PERMISSION_DENIED (naming the feature
  service, then the view) where the plaintext answer was data;
- no token, an expired token and a forged one get UNAUTHENTICATED with
  CREDENTIALS_MISSING, TOKEN_EXPIRED and TOKEN_INVALID;

and every client's answers (codes, reasons, messages) equal the Python client's.
A leg is skipped only when its toolchain (go, mvn, grpcurl) is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skewless.online.embedded_redis import EmbeddedRedis
from skewless.registry import Policy

from . import client_harness as h
from .auth_repo import AUDIENCE, ISSUER, Issuer
from .certs import TLSFiles, make_tls_files
from .test_cross_language import assert_same_answers

POLICIES = (
    Policy("serving", ("read_online",), ("project",), subjects=("ranking-service",)),
    Policy(
        "drivers_only", ("read_online",), ("feature_view:driver_stats",), subjects=("driver-app",)
    ),
)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def tokens(issuer: Issuer) -> dict[str, str | None]:
    now = int(time.time())
    return {
        "granted": issuer.token("ranking-service"),
        "partial": issuer.token("driver-app", alg="ES256"),
        "missing": None,
        "expired": issuer.token("ranking-service", exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "forged": issuer.hmac_with_public_key("ranking-service"),
    }


@pytest.fixture(scope="module")
def plaintext_reference(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    with h.serve_fixture(tmp_path_factory.mktemp("xauth-plain"), redis_server.url) as served:
        return h.python_client_answers(served.addr)


@pytest.fixture(scope="module")
def fixture(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, issuer: Issuer
) -> Iterator[h.Fixture]:
    certs: TLSFiles = make_tls_files(tmp_path_factory.mktemp("xauth-certs"))
    data = tmp_path_factory.mktemp("xauth")
    jwks = issuer.write_jwks(data / "jwks.json")
    client = h.ClientTLS(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    with h.serve_fixture(
        data,
        redis_server.url,
        server_tls=(certs.server_cert, certs.server_key, certs.ca),
        client_tls=client,
        jwt_auth={"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)},
        policies=POLICIES,
    ) as served:
        yield served


def _with_token(fixture: h.Fixture, token: str | None) -> h.Fixture:
    assert fixture.tls is not None
    return dataclasses.replace(fixture, tls=dataclasses.replace(fixture.tls, token=token))


def _errors(answers: dict[str, Any]) -> list[tuple[str, str] | None]:
    out: list[tuple[str, str] | None] = []
    for lookup in answers["lookups"]:
        error = lookup.get("error")
        out.append(None if error is None else (error["code"], error["reason"]))
    return out


@pytest.fixture(scope="module")
def python_answers(fixture: h.Fixture, tokens: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """The Python client's answers per token: what every other client must reproduce."""
    return {
        name: h.python_client_answers(fixture.addr, _with_token(fixture, token).tls)
        for name, token in tokens.items()
    }


def test_python_answers_follow_the_policies(
    python_answers: dict[str, dict[str, Any]], plaintext_reference: dict[str, Any]
) -> None:
    assert_same_answers("a granted subject", python_answers["granted"], plaintext_reference)
    denied = ("PERMISSION_DENIED", "PERMISSION_DENIED")
    plain = _errors(plaintext_reference)
    partial = _errors(python_answers["partial"])
    assert partial[0] == denied and partial[1] == denied
    assert partial[2:] == plain[2:]  # unknown feature, wrong key type: as without auth
    by_name = {a["name"]: a for a in python_answers["partial"]["lookups"]}
    assert "feature service 'driver_ranking'" in by_name["feature_service"]["error"]["message"]
    assert "feature view 'customer_profile'" in by_name["feature_list"]["error"]["message"]
    for name, reason in (
        ("missing", "CREDENTIALS_MISSING"),
        ("expired", "TOKEN_EXPIRED"),
        ("forged", "TOKEN_INVALID"),
    ):
        assert _errors(python_answers[name]) == [("UNAUTHENTICATED", reason)] * len(h.LOOKUPS)


def test_python_stub_agrees(
    fixture: h.Fixture, tokens: dict[str, str | None], python_answers: dict[str, dict[str, Any]]
) -> None:
    for name, token in tokens.items():
        leg = _with_token(fixture, token)
        answers = h.python_stub_answers(leg.addr, leg.tls)
        assert_same_answers(f"the Python stub ({name})", answers, python_answers[name])


@pytest.fixture(scope="module")
def go_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = h.go_binary()
    if go is None:
        pytest.skip("the go toolchain is not installed")
    binary = tmp_path_factory.mktemp("go-example-auth") / "example"
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    subprocess.run(
        [go, "build", "-o", str(binary), "./cmd/example"], cwd=h.GO_DIR, env=env, check=True
    )
    return binary


def test_go_agrees(
    fixture: h.Fixture,
    tokens: dict[str, str | None],
    python_answers: dict[str, dict[str, Any]],
    go_example: Path,
) -> None:
    for name, token in tokens.items():
        leg = _with_token(fixture, token)
        result = subprocess.run(
            [str(go_example), "-addr", leg.addr, *leg.go_flags()],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert_same_answers(f"Go ({name})", json.loads(result.stdout), python_answers[name])


def test_java_agrees(
    fixture: h.Fixture, tokens: dict[str, str | None], python_answers: dict[str, dict[str, Any]]
) -> None:
    if h.mvn_binary() is None:
        pytest.skip("Maven (mvn) is not installed")
    classpath = h.java_classpath()
    for name, token in tokens.items():
        leg = _with_token(fixture, token)
        result = subprocess.run(
            [
                "java",
                "-cp",
                classpath,
                "dev.skewless.client.example.Example",
                "--addr",
                leg.addr,
                *leg.java_flags(),
            ],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert_same_answers(f"Java ({name})", json.loads(result.stdout), python_answers[name])


@dataclasses.dataclass(frozen=True)
class _SplitHeaders(h.ClientTLS):
    """grpcurl reflecting with one token (`-reflect-header`) and calling with another."""

    reflect_token: str | None = None

    def grpcurl_flags(self) -> list[str]:
        out = self.flags("-")
        if self.reflect_token:
            out += ["-reflect-header", f"authorization: Bearer {self.reflect_token}"]
        if self.token:
            out += ["-rpc-header", f"authorization: Bearer {self.token}"]
        return out


@pytest.mark.skipif(not h.GRPCURL.exists(), reason="grpcurl is not installed (run `make tools`)")
def test_grpcurl_agrees_and_health_stays_open(
    fixture: h.Fixture, tokens: dict[str, str | None], python_answers: dict[str, dict[str, Any]]
) -> None:
    assert fixture.tls is not None
    for name, token in tokens.items():
        split = _SplitHeaders(**dataclasses.asdict(fixture.tls))
        tls = dataclasses.replace(split, token=token, reflect_token=tokens["granted"])
        answers = h.grpcurl_answers(fixture.addr, tls)
        assert_same_answers(f"grpcurl ({name})", answers, python_answers[name])
    anonymous = _with_token(fixture, None)
    # Health answers a call without a token (the descriptor comes from reflection).
    reflect_only = dataclasses.replace(
        _SplitHeaders(**dataclasses.asdict(fixture.tls)),
        token=None,
        reflect_token=tokens["granted"],
    )
    health = h.grpcurl(fixture.addr, "grpc.health.v1.Health/Check", body="{}", tls=reflect_only)
    assert health.returncode == 0 and '"SERVING"' in health.stdout, health.stderr
    # Reflection needs a credential (auth.open_reflection is off).
    assert h.grpcurl(anonymous.addr, "list", tls=anonymous.tls).returncode != 0
    granted = _with_token(fixture, tokens["granted"])
    listed = h.grpcurl(granted.addr, "list", tls=granted.tls)
    assert listed.returncode == 0 and "skewless.v1.OnlineService" in listed.stdout.split()
