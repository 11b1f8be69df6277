"""Authentication and permissions against the real `skewless serve` process.

Static tokens (hashes in a file, re-read on change), JWTs against a JWKS file and a JWKS
URL (keys made per run with cryptography), and client certificates (trustme) each
authenticate; every way a credential can be wrong ends UNAUTHENTICATED with one of
three reasons and one message per reason; the repository's policies allow and refuse
each action on the resources named, and each refusal is one audit line and a counted
metric. Health stays open; reflection needs a credential unless configured open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skewless.client import Client, SkewlessClientError
from skewless.core.config import load_repo_config
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.registry import Policy
from skewless.registry.registry_store import RegistryStore
from tests.helpers.repos import live_definitions

from .auth_repo import (
    AUDIENCE,
    ISSUER,
    POLICIES,
    TOKENS,
    Issuer,
    jwt_auth,
    token_file,
    write_repo,
)
from .certs import _write_leaf
from .served import ServedProcess, serve

UTC_US = pa.timestamp("us", tz="UTC")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ONLINE_METHODS = ("GetOnlineFeatures", "PushFeatures")


def outcome(fn: Callable[[], Any]) -> tuple[str, str, dict[str, str]]:
    """The status code name, ErrorInfo reason and metadata a call ends with."""
    try:
        fn()
    except SkewlessClientError as exc:
        assert exc.code is not None
        return exc.code.name, exc.reason, exc.metadata
    return "OK", "", {}


def rows(ids: list[int]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([NOW] * n, UTC_US),
            "created": pa.nulls(n, UTC_US),
            "conv_rate": pa.array([0.5] * n, pa.float64()),
            "trips": pa.array(list(range(n)), pa.int64()),
            "note": pa.array(["x"] * n, pa.string()),
        }
    )


def entity_rows() -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([NOW + dt.timedelta(seconds=1)] * 2, UTC_US),
        }
    )


def audit_lines(served: ServedProcess, start: int = 0) -> list[str]:
    return [line for line in served.lines[start:] if "audit: " in line]


# --- static tokens ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServedProcess, Path, int]]:
    root = tmp_path_factory.mktemp("auth-token")
    tokens = token_file(root / "tokens.yaml")
    write_repo(root, redis_server.url, "mode: token\ntoken_file: tokens.yaml\n")
    metrics = free_port()
    with serve(root, "--metrics-port", str(metrics)) as served:
        assert ", auth token" in served.output()
        yield served, tokens, metrics


def client(served: ServedProcess, token: str | None) -> Client:
    return Client(served.target, token=token, timeout=10)


def test_health_is_open_and_everything_else_needs_a_credential(
    token_server: tuple[ServedProcess, Path, int],
) -> None:
    served, _, _ = token_server
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with client(served, None) as anonymous:
        calls = {
            "GetOnlineFeatures": lambda: anonymous.get_online_features(
                {"driver_id": [1]}, feature_service="live"
            ),
            "PushFeatures": lambda: anonymous.push_features(rows([1]), push_source="driver_push"),
            "GetHistoricalFeatures": lambda: anonymous.get_historical_features(
                entity_rows(), feature_service="live"
            ),
            "GetRegistryInfo": anonymous.get_registry_info,
            "ListFeatureViews": anonymous.list_feature_views,
            "StartMaterialization": lambda: anonymous.start_materialization(
                end_time=NOW, incremental=True
            ),
            "ListMaterializationJobs": anonymous.list_materialization_jobs,
        }
        for name, call in calls.items():
            assert outcome(call)[:2] == ("UNAUTHENTICATED", "CREDENTIALS_MISSING"), name
    # Reflection is not open by default.
    with grpc.insecure_channel(served.target) as channel:
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )
        with pytest.raises(grpc.RpcError) as info:
            list(reflect(iter([b"\x3a\x00"]), timeout=5))  # list_services
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_wrong_token_is_invalid_and_says_no_more(
    token_server: tuple[ServedProcess, Path, int],
) -> None:
    served, _, _ = token_server
    messages = set()
    good = "reader-token"
    for wrong in (
        good[:-1],
        good + "x",
        good.upper(),
        # Long, but under gRPC's 8 KiB soft metadata limit: past it a call may end
        # RESOURCE_EXHAUSTED in the transport before the server sees it (at random
        # between the soft and the hard limit).
        "x" * 6000,
        "Bearer",
    ):
        with client(served, wrong) as c:
            try:
                c.get_online_features({"driver_id": [1]}, features=["driver_live:trips"])
            except SkewlessClientError as exc:
                assert exc.code is not None and exc.code.name == "UNAUTHENTICATED", wrong[:20]
                assert exc.reason in ("TOKEN_INVALID", "CREDENTIALS_MISSING")
                messages.add((exc.reason, exc.message))
                assert exc.metadata == {}
            else:
                raise AssertionError(f"{wrong[:20]!r} was accepted")
    assert {m for r, m in messages if r == "TOKEN_INVALID"} == {
        "the credentials are not valid for this server"
    }
    # The raw header forms: another scheme, two authorization headers.
    with grpc.insecure_channel(served.target) as channel:
        info = channel.unary_unary("/skewless.v1.RegistryService/GetRegistryInfo")
        for metadata in (
            (("authorization", "Basic cmVhZGVyOnRva2Vu"),),
            (("authorization", "Bearer reader-token"), ("authorization", "Bearer admin-token")),
        ):
            with pytest.raises(grpc.RpcError) as err:
                info(b"", metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_permissions_allow_and_deny_each_action(
    token_server: tuple[ServedProcess, Path, int],
) -> None:
    served, _, _ = token_server
    start = len(served.lines)
    expected_denials: list[tuple[str, str, str, str]] = []  # rpc, subject, action, resource

    def denied(
        c: Client, subject: str, rpc: str, call: Callable[[], Any], action: str, resource: str
    ) -> None:
        code, reason, metadata = outcome(call)
        assert (code, reason) == ("PERMISSION_DENIED", "PERMISSION_DENIED"), (subject, rpc, code)
        assert metadata == {"action": action, "resource": resource}
        expected_denials.append((rpc, subject, action, resource))

    def allowed(call: Callable[[], Any]) -> None:
        code, reason, _ = outcome(call)
        assert code != "PERMISSION_DENIED" and code != "UNAUTHENTICATED", (code, reason)

    with client(served, "pusher-token") as pusher:
        allowed(lambda: pusher.push_features(rows([1, 2]), push_source="driver_push"))
        allowed(lambda: pusher.push_features(rows([3]), feature_view="driver_recent"))
        denied(
            pusher,
            "pusher",
            "GetOnlineFeatures",
            lambda: pusher.get_online_features({"driver_id": [1]}, features=["driver_live:trips"]),
            "read_online",
            "feature_view:driver_live",
        )
    with client(served, "reader-token") as reader:
        got = reader.get_online_features({"driver_id": [1]}, features=["driver_live:trips"])
        assert got.to_dict()["trips"] == [0]
        denied(
            reader,
            "reader",
            "GetOnlineFeatures",
            lambda: reader.get_online_features(
                {"driver_id": [1]}, features=["driver_live:trips", "driver_recent:note"]
            ),
            "read_online",
            "feature_view:driver_recent",
        )
        denied(
            reader,
            "reader",
            "GetOnlineFeatures",
            lambda: reader.get_online_features({"driver_id": [1]}, feature_service="live"),
            "read_online",
            "feature_service:live",
        )
        # A service that does not exist is refused the same way: no hint that it is absent.
        denied(
            reader,
            "reader",
            "GetOnlineFeatures",
            lambda: reader.get_online_features({"driver_id": [1]}, feature_service="secret"),
            "read_online",
            "feature_service:secret",
        )
        table = reader.get_historical_features(entity_rows(), feature_service="live")
        assert table.num_rows == 2
        denied(
            reader,
            "reader",
            "GetHistoricalFeatures",
            lambda: reader.get_historical_features(entity_rows(), features=["driver_live:trips"]),
            "read_historical",
            "feature_view:driver_live",
        )
        denied(
            reader,
            "reader",
            "GetHistoricalFeatures",
            lambda: reader.get_historical_features(
                None,
                feature_service="live",
                sql="SELECT 1::BIGINT AS driver_id, now() AS event_timestamp",
            ),
            "server_entity_rows",
            "project",
        )
        denied(
            reader,
            "reader",
            "PushFeatures",
            lambda: reader.push_features(rows([1]), push_source="driver_push"),
            "push",
            "push_source:driver_push",
        )
        denied(
            reader,
            "reader",
            "GetRegistryInfo",
            reader.get_registry_info,
            "read_registry",
            "project",
        )
        denied(
            reader,
            "reader",
            "StartMaterialization",
            lambda: reader.start_materialization(["driver_live"], end_time=NOW, incremental=True),
            "materialize",
            "feature_view:driver_live",
        )
    with client(served, "analyst-token") as analyst:
        allowed(
            lambda: analyst.get_historical_features(
                None,
                features=["driver_live:trips"],
                sql="SELECT 1::BIGINT AS driver_id, now()::TIMESTAMPTZ AS event_timestamp",
            )
        )
        denied(
            analyst,
            "analyst",
            "GetHistoricalFeatures",
            lambda: analyst.get_historical_features(
                entity_rows(), features=["driver_recent:trips"]
            ),
            "read_historical",
            "feature_view:driver_recent",
        )
    with client(served, "ops-token") as ops:
        assert [v.name for v in ops.list_feature_views()] == ["driver_live", "driver_recent"]
        assert ops.get_registry_info().project == "authz"
        allowed(lambda: ops.start_materialization(["driver_live"], end_time=NOW, incremental=True))
        allowed(ops.list_materialization_jobs)
        # Planning reads source files and runs the definitions' SQL on the server.
        denied(
            ops,
            "operator",
            "PlanRepository",
            lambda: ops.plan_repository({"features/a.yaml": "entities: []\n"}),
            "admin",
            "project",
        )
    with client(served, "views-ops-token") as view_ops:
        denied(
            view_ops,
            "view-operator",
            "StartMaterialization",
            lambda: view_ops.start_materialization(
                ["driver_recent"], end_time=NOW, incremental=True
            ),
            "materialize",
            "feature_view:driver_recent",
        )
        denied(
            view_ops,
            "view-operator",
            "ListMaterializationJobs",
            view_ops.list_materialization_jobs,
            "read_registry",
            "project",
        )
    with client(served, "admin-token") as admin:
        admin.get_online_features({"driver_id": [1]}, feature_service="live")
        admin.get_online_features({"driver_id": [1]}, features=["driver_recent:trips"])
        admin.get_registry_info()
        admin.get_historical_features(entity_rows(), features=["driver_recent:trips"])
        admin.push_features(rows([4]), push_source="driver_push")
        assert admin.plan_repository({"features/a.yaml": "entities: []\n"}).registry_version
    with client(served, "nobody-token") as nobody:
        denied(
            nobody,
            "nobody",
            "ListFeatureViews",
            nobody.list_feature_views,
            "read_registry",
            "project",
        )
    # One audit line per refused call, naming subject, action, resource and peer.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(audit_lines(served, start)) < len(expected_denials):
        time.sleep(0.05)
    lines = audit_lines(served, start)
    assert len(lines) == len(expected_denials), "\n".join(lines)
    for line, (rpc, subject, action, resource) in zip(lines, expected_denials, strict=True):
        assert re.search(
            rf"audit: permission denied rpc={rpc} subject='{re.escape(subject)}' "
            rf"action={action} resource='{re.escape(resource)}' peer=ipv4:127\.0\.0\.1:\d+$",
            line.rstrip(),
        ), line


def test_refusals_are_counted_in_the_metrics(token_server: tuple[ServedProcess, Path, int]) -> None:
    served, _, metrics = token_server
    with client(served, "nobody-token") as nobody:
        outcome(nobody.get_registry_info)
    with client(served, "wrong") as wrong:
        outcome(wrong.get_registry_info)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert re.search(
        r'skewless_auth_denied_total\{code="PERMISSION_DENIED",reason="PERMISSION_DENIED",'
        r'rpc="GetRegistryInfo"\} [1-9]',
        body,
    )
    assert re.search(
        r'skewless_auth_denied_total\{code="UNAUTHENTICATED",reason="TOKEN_INVALID",'
        r'rpc="GetRegistryInfo"\} [1-9]',
        body,
    )
    assert re.search(
        r'skewless_requests_total\{code="UNAUTHENTICATED",feature_service="",'
        r'rpc="GetRegistryInfo"\} [1-9]',
        body,
    )


def test_tokens_are_added_and_revoked_without_a_restart(
    token_server: tuple[ServedProcess, Path, int],
) -> None:
    served, path, _ = token_server
    original = path.read_text()
    try:
        token_file(path, {**TOKENS, "fresh-token": ("root", ("platform",))})
        _eventually(lambda: outcome(client_call(served, "fresh-token"))[0] == "OK")
        token_file(path, {k: v for k, v in TOKENS.items() if k != "admin-token"})
        _eventually(lambda: outcome(client_call(served, "admin-token"))[1] == "TOKEN_INVALID")
        path.write_text("tokens: [oops")  # a broken file keeps the previous tokens
        time.sleep(1.5)
        assert outcome(client_call(served, "reader-token"))[0] == "PERMISSION_DENIED"
    finally:
        path.write_text(original)
    _eventually(lambda: outcome(client_call(served, "admin-token"))[0] == "OK")


def client_call(served: ServedProcess, token: str) -> Callable[[], Any]:
    def call() -> Any:
        with client(served, token) as c:
            return c.get_registry_info()

    return call


def _eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_policies_change_with_the_registry(
    token_server: tuple[ServedProcess, Path, int], tmp_path: Path
) -> None:
    served, _, _ = token_server
    repo = Path(served.proc.args[4])  # type: ignore[index]
    config = load_repo_config(repo)
    grant = Policy(
        name="nobody_registry",
        subjects=("nobody",),
        actions=("read_registry",),
        resources=("project",),
    )
    store = RegistryStore(config.storage)
    before = store.require().version
    try:
        store.save(
            dataclasses.replace(live_definitions(), policies=(*POLICIES, grant)).to_registry(
                config.project
            )
        )
        assert store.require().version == before + 1
        _eventually(lambda: outcome(client_call(served, "nobody-token"))[0] == "OK")
    finally:
        store.save(
            dataclasses.replace(live_definitions(), policies=POLICIES).to_registry(config.project)
        )
    _eventually(lambda: outcome(client_call(served, "nobody-token"))[0] == "PERMISSION_DENIED")


# --- JWT ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def jwt_server(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, issuer: Issuer
) -> Iterator[ServedProcess]:
    root = tmp_path_factory.mktemp("auth-jwt")
    jwks = issuer.write_jwks(root / "jwks.json")
    write_repo(root, redis_server.url, jwt_auth(jwks) + "open_reflection: true\n")
    with serve(root) as served:
        yield served


def _registry_outcome(served: ServedProcess, token: str) -> tuple[str, str, dict[str, str]]:
    return outcome(client_call(served, token))


def test_valid_jwts_carry_subject_and_groups(jwt_server: ServedProcess, issuer: Issuer) -> None:
    ops = issuer.token("someone", realm={"groups": ["ops"]})
    assert _registry_outcome(jwt_server, ops)[0] == "OK"
    assert (
        _registry_outcome(
            jwt_server, issuer.token("someone", alg="ES256", realm={"groups": ["ops"]})
        )[0]
        == "OK"
    )
    # No groups: authenticated, but no policy grants the registry.
    assert _registry_outcome(jwt_server, issuer.token("someone")) == (
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
        {"action": "read_registry", "resource": "project"},
    )
    with client(jwt_server, issuer.token("reader")) as reader:
        reader.get_online_features({"driver_id": [1]}, features=["driver_live:trips"])
        # The token is cached until it expires: the same call again is answered alike.
        reader.get_online_features({"driver_id": [1]}, features=["driver_live:trips"])


def test_every_bad_jwt_is_refused_with_one_message_per_reason(
    jwt_server: ServedProcess, issuer: Issuer
) -> None:
    now = int(time.time())
    admin = {"realm": {"groups": ["platform"]}}
    expired = issuer.token("root", exp=now - 60, iat=now - 120, nbf=now - 120, **admin)
    bad = {
        "not yet valid (nbf)": issuer.token("root", nbf=now + 120, **admin),
        "wrong audience": issuer.token("root", aud="another-service", **admin),
        "wrong issuer": issuer.token("root", iss="https://evil.test/", **admin),
        "no expiry": issuer.token("root", exp=None, **admin),
        "no audience": issuer.token("root", aud=None, **admin),
        "no subject": issuer.token("", **admin),
        "alg none": issuer.unsigned_token("root"),
        "HS256 with the RSA public key": issuer.hmac_with_public_key("root"),
        "another key, same kid": issuer.foreign_token("root"),
        "unknown kid": issuer.token("root", kid="rsa-9", **admin),
        "RS256 claiming the EC key": issuer.token("root", kid="ec-1", **admin),
        "not a JWT": "abc.def.ghi",
        "groups not a list": issuer.token("root", realm={"groups": {"a": 1}}),
        "truncated": issuer.token("root", **admin)[:-10],
    }
    assert _registry_outcome(jwt_server, issuer.token("root", **admin))[0] == "OK"
    assert _registry_outcome(jwt_server, expired) == (
        "UNAUTHENTICATED",
        "TOKEN_EXPIRED",
        {},
    )
    messages = set()
    for what, token in bad.items():
        with client(jwt_server, token) as c:
            try:
                c.get_registry_info()
            except SkewlessClientError as exc:
                assert exc.code is not None
                assert (exc.code.name, exc.reason) == ("UNAUTHENTICATED", "TOKEN_INVALID"), what
                messages.add(exc.message)
            else:
                raise AssertionError(f"{what}: accepted")
    assert messages == {"the credentials are not valid for this server"}
    # An expiry within the leeway (5 s) still passes.
    assert _registry_outcome(jwt_server, issuer.token("root", exp=now - 1, **admin))[0] == "OK"


def test_reflection_can_be_open(jwt_server: ServedProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(jwt_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in responses[0].list_services_response.service}
        assert "skewless.v1.OnlineService" in names


class _JWKSHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_jwts_verify_against_a_jwks_url(
    redis_server: EmbeddedRedis, tmp_path: Path, issuer: Issuer
) -> None:
    _JWKSHandler.body = json.dumps(issuer.jwks()).encode()
    _JWKSHandler.hits = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JWKSHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
        write_repo(tmp_path, redis_server.url, jwt_auth(url))
        with serve(tmp_path) as served:
            ops = {"realm": {"groups": ["ops"]}}
            assert _registry_outcome(served, issuer.token("x", **ops))[0] == "OK"
            assert _registry_outcome(served, issuer.token("y", alg="ES256", **ops))[0] == "OK"
            assert _registry_outcome(served, issuer.foreign_token("x"))[1] == "TOKEN_INVALID"
            # Unknown key IDs do not make the server fetch the JWKS again and again.
            for _ in range(5):
                assert (
                    _registry_outcome(served, issuer.token("x", kid="nope", **ops))[1]
                    == "TOKEN_INVALID"
                )
            assert _JWKSHandler.hits <= 2
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("jwt_body", "message"),
    [
        ("issuer: https://a/\njwks_file: j.json\n", "needs both issuer and audience"),
        ("audience: a\njwks_file: j.json\n", "needs both issuer and audience"),
        ("issuer: i\naudience: a\njwks_file: j.json\nalgorithms: [HS256]\n", "HS256 not accepted"),
        ("issuer: i\naudience: a\njwks_file: j.json\nalgorithms: [none]\n", "none not accepted"),
        ("issuer: i\naudience: a\n", "exactly one of jwks_file and jwks_url"),
        ("issuer: i\naudience: a\njwks_file: missing.json\n", "cannot read"),
    ],
)
def test_serve_refuses_an_unsafe_jwt_configuration(
    tmp_path: Path, jwt_body: str, message: str
) -> None:
    (tmp_path / "skewless.yaml").write_text(
        "project: p\nonline_store: {redis_url: redis://127.0.0.1:1}\nauth:\n  mode: jwt\n  jwt:\n"
        + "".join(f"    {line}\n" for line in jwt_body.splitlines())
    )
    result = subprocess.run(
        [sys.executable, "-m", "skewless.cli", "serve", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr + result.stdout


# --- mTLS ---------------------------------------------------------------------------------


def _uri_certificate(ca: trustme.CA, uri: str, cert_path: Path, key_path: Path) -> None:
    """A client certificate whose only SAN is a URI (a SPIFFE ID), issued by `ca`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_mtls_subject_comes_from_the_client_certificate(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    ca = trustme.CA(organization_name="skewless auth tests")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    _write_leaf(
        ca.issue_cert("127.0.0.1", "localhost"), tmp_path / "server.pem", tmp_path / "server.key"
    )
    clients = {
        "reader": None,
        "ops": ca.issue_cert("ops-robot@skewless.test", organization_unit_name="ops"),
        "stranger": ca.issue_cert("stranger.skewless.test"),
    }
    for name, leaf in clients.items():
        if leaf is not None:
            _write_leaf(leaf, tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
    _uri_certificate(
        ca, "spiffe://skewless.test/reader", tmp_path / "reader.pem", tmp_path / "reader.key"
    )
    policies = (
        Policy(
            name="reader",
            subjects=("spiffe://skewless.test/reader",),
            actions=("read_online",),
            resources=("feature_view:driver_live",),
        ),
        Policy(name="ops", groups=("ops",), actions=("read_registry",), resources=("project",)),
    )
    write_repo(
        tmp_path,
        redis_server.url,
        "mode: mtls\n",
        server="tls:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n",
        policies=policies,
    )
    with serve(tmp_path) as served:

        def connect(name: str) -> Client:
            return Client(
                served.target,
                root_certificates=(tmp_path / "ca.pem").read_bytes(),
                client_cert=(
                    (tmp_path / f"{name}.pem").read_bytes(),
                    (tmp_path / f"{name}.key").read_bytes(),
                ),
                timeout=10,
            )

        with connect("reader") as reader:
            reader.get_online_features({"driver_id": [1]}, features=["driver_live:trips"])
            assert outcome(reader.get_registry_info)[0] == "PERMISSION_DENIED"
        with connect("ops") as ops:
            assert ops.get_registry_info().project == "authz"
        with connect("stranger") as stranger:
            assert outcome(stranger.get_registry_info)[2] == {
                "action": "read_registry",
                "resource": "project",
            }
        subjects = ("subject='spiffe://skewless.test/reader'", "subject='stranger.skewless.test'")

        def denials() -> list[str]:
            return [line for line in served.lines if "audit: permission denied" in line]

        # The server's log is read by a thread: wait for the lines, not just the answers.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            any(s in line for line in denials()) for s in subjects
        ):
            time.sleep(0.05)
        lines = denials()
        assert any("subject='spiffe://skewless.test/reader'" in line for line in lines)
        assert any("subject='stranger.skewless.test'" in line for line in lines)


def test_issuer_and_audience_constants_are_what_tokens_carry(issuer: Issuer) -> None:
    claims = issuer.claims("x")
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
