"""Authentication and permission rules that need no server: config, tokens, JWKS, policies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from skewless.core.config import load_repo_config
from skewless.core.errors import DefinitionError, UnauthenticatedError
from skewless.registry import Policy, RepoDefinitions
from skewless.registry.repo_loader import load_definitions
from skewless.registry.validation import validate_definitions
from skewless.server.app import SERVICE_NAMES
from skewless.server.auth import Action, Principal, Resource, rule_for
from skewless.server.auth.credentials import bearer_token
from skewless.server.auth.jwt_tokens import parse_jwks
from skewless.server.auth.permissions import PolicySet
from skewless.server.auth.tokens import StaticTokens, load_token_file
from skewless.v1 import (
    historical_service_pb2,
    materialization_service_pb2,
    monitoring_service_pb2,
    online_service_pb2,
    registry_service_pb2,
)

_MODULES = {
    "skewless.v1.OnlineService": online_service_pb2,
    "skewless.v1.HistoricalService": historical_service_pb2,
    "skewless.v1.RegistryService": registry_service_pb2,
    "skewless.v1.MaterializationService": materialization_service_pb2,
    "skewless.v1.MonitoringService": monitoring_service_pb2,
}


def test_every_method_of_every_service_has_a_permission_rule() -> None:
    """A new RPC must be given a rule: without one only admins may call it."""
    assert set(_MODULES) == set(SERVICE_NAMES)
    for service, module in _MODULES.items():
        for method in module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods:
            rule = rule_for(f"/{service}/{method.name}", open_reflection=False)
            assert rule is not None, f"{service}/{method.name} has no permission rule"
            assert not rule.open, f"{service}/{method.name} must not be open"
    assert rule_for("/grpc.health.v1.Health/Check", open_reflection=False).open  # type: ignore[union-attr]
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert not rule_for(reflection, open_reflection=False).open  # type: ignore[union-attr]
    assert rule_for(reflection, open_reflection=True).open  # type: ignore[union-attr]
    assert rule_for("/skewless.v1.RegistryService/DeleteEverything", open_reflection=True) is None


def _policies(*policies: Policy) -> PolicySet:
    return PolicySet(p.to_proto() for p in policies)


def test_policies_grant_by_subject_group_glob_and_project() -> None:
    policies = _policies(
        Policy("a", ("read_online",), ("feature_view:driver_*",), subjects=("alice",)),
        Policy("b", ("push",), ("feature_service:x",), groups=("ingest",)),
        Policy("c", ("admin",), ("project",), groups=("root",)),
        Policy("d", ("read_registry",), ("feature_view:*",), subjects=("bob",)),
    )
    alice = Principal("alice")
    assert policies.allows(alice, Action.READ_ONLINE, Resource.view("driver_stats"))
    assert not policies.allows(alice, Action.READ_ONLINE, Resource.view("Driver_stats"))
    assert not policies.allows(alice, Action.READ_ONLINE, Resource.service("driver_x"))
    assert not policies.allows(alice, Action.READ_HISTORICAL, Resource.view("driver_stats"))
    assert not policies.allows(
        Principal("mallory", frozenset({"alice"})), Action.READ_ONLINE, Resource.view("driver_a")
    )
    ingest = Principal("svc", frozenset({"ingest"}))
    assert policies.allows(ingest, Action.PUSH, Resource.service("x"))
    assert not policies.allows(ingest, Action.PUSH, Resource.view("x"))
    root = Principal("r", frozenset({"root"}))
    for action in Action:
        assert policies.allows(root, action, Resource.project())
        assert policies.allows(root, action, Resource.view("anything"))
    # A grant on every view is not a grant on the project.
    assert not policies.allows(Principal("bob"), Action.READ_REGISTRY, Resource.project())
    assert not PolicySet().allows(root, Action.READ_ONLINE, Resource.view("v"))


def test_refusals_name_only_what_the_caller_named() -> None:
    assert Resource.view("driver_stats").label() == "feature view 'driver_stats'"
    assert Resource("push_source", "p").label() == "the feature views of push source 'p'"
    assert Resource.project().key() == "project"
    assert len(Resource.view("x" * 10_000).label()) < 120


def test_policy_yaml_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "policies.yaml").write_text(
        "policies:\n"
        "  - name: ok\n    subjects: [a]\n    actions: [read_online]\n"
        "    resources: [project, 'feature_view:d_*']\n"
        "  - name: bad\n    actions: [read_everything]\n"
        "    resources: ['table:x', 'feature_view:a b']\n"
        "  - name: ok\n    groups: [g]\n    actions: [admin]\n    resources: [project]\n"
    )
    loaded = load_definitions(tmp_path)
    assert not loaded.problems
    problems = [str(p) for p in validate_definitions(loaded.definitions)]
    assert any("'bad'" in p and "grants nobody" in p for p in problems)
    assert any("unknown action 'read_everything'" in p for p in problems)
    assert any("'table:x'" in p for p in problems)
    assert any("'feature_view:a b'" in p for p in problems)
    assert any("another policy has the same name" in p for p in problems)
    assert all(p.startswith("features/policies.yaml") for p in problems)


def test_policies_are_versioned_with_the_registry() -> None:
    plain = RepoDefinitions().to_registry("p")
    granted = RepoDefinitions(
        policies=(Policy("z", ("push",), ("project",), subjects=("s",)),)
    ).to_registry("p")
    from skewless.registry.registry_store import registry_digest

    assert registry_digest(plain) != registry_digest(granted)
    assert [p.name for p in granted.policies] == ["z"]


def _config(tmp_path: Path, auth: str, server: str = "") -> Path:
    (tmp_path / "skewless.yaml").write_text(f"project: p\n{server}auth:\n{auth}")
    return tmp_path


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("  mode: oauth\n", "auth.mode must be one of"),
        ("  mode: token\n", "needs auth.token_file"),
        ("  mode: none\n  token_file: t.yaml\n", "only with auth.mode token"),
        ("  mode: jwt\n", "needs auth.jwt"),
        ("  mode: mtls\n", "needs server.tls.client_ca_file"),
        ("  mode: jwt\n  jwt: {issuer: i, jwks_file: j}\n", "needs both issuer and audience"),
        ("  mode: jwt\n  jwt: {issuer: i, audience: '', jwks_file: j}\n", "non-empty string"),
        (
            "  mode: jwt\n  jwt: {issuer: i, audience: a, jwks_file: j,"
            " algorithms: [RS256, HS256]}\n",
            "HS256 not accepted",
        ),
        (
            "  mode: jwt\n  jwt: {issuer: i, audience: a, jwks_file: j, leeway_seconds: 3600}\n",
            "leeway",
        ),
        ("  mode: token\n  token_file: t\n  open_reflection: 1\n", "open_reflection"),
        ("  mode: token\n  token_file: t\n  tokens: []\n", "unknown setting"),
    ],
)
def test_unsafe_or_incomplete_auth_settings_are_refused(
    tmp_path: Path, auth: str, message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_repo_config(_config(tmp_path, auth))


def test_auth_settings_resolve_relative_to_the_repository(tmp_path: Path) -> None:
    config = load_repo_config(
        _config(
            tmp_path,
            "  mode: jwt\n  jwt:\n    issuer: https://i/\n    audience: a\n"
            "    jwks_file: k/jwks.json\n",
        )
    )
    assert config.auth.enabled and config.auth.jwt is not None
    assert config.auth.jwt.jwks_file == tmp_path.resolve() / "k" / "jwks.json"
    assert config.auth.jwt.algorithms == ("RS256", "ES256")
    assert not load_repo_config(_config(tmp_path, "  mode: none\n")).auth.enabled


def test_token_files_hold_hashes_and_compare_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    digest = hashlib.sha256(b"s3cret").hexdigest()
    path.write_text(f"tokens:\n  - sha256: {digest}\n    subject: svc\n    groups: [g]\n")
    tokens = StaticTokens(path)
    assert tokens.authenticate("s3cret") == Principal("svc", frozenset({"g"}))
    assert tokens.authenticate("s3cre") is None
    for bad in (
        "tokens:\n  - sha256: s3cret\n    subject: svc\n",
        f"tokens:\n  - sha256: {digest}\n",
        "tokens: {}\n",
        f"tokens:\n  - sha256: {digest}\n    subject: s\n    token: plain\n",
    ):
        path.write_text(bad)
        with pytest.raises(DefinitionError) as info:
            load_token_file(path)
        assert "s3cret" not in info.value.message and digest not in info.value.message


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "CREDENTIALS_MISSING"),
        ((("authorization", "Bearer "),), "CREDENTIALS_MISSING"),
        ((("authorization", "Basic abc"),), "TOKEN_INVALID"),
        ((("authorization", "Bearer a"), ("authorization", "Bearer b")), "TOKEN_INVALID"),
        ((("authorization", "Bearer " + "x" * 9000),), "TOKEN_INVALID"),
    ],
)
def test_bearer_headers(metadata: tuple[tuple[str, str], ...], reason: str) -> None:
    with pytest.raises(UnauthenticatedError) as info:
        bearer_token(metadata)
    assert info.value.reason == reason
    assert bearer_token((("x", "y"), ("authorization", "bearer abc"))) == "abc"


def test_jwks_keeps_only_asymmetric_signature_keys_of_accepted_algorithms() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    keys = [
        {**rsa_jwk, "kid": "a", "alg": "RS256"},
        {**rsa_jwk, "kid": "b", "alg": "RS512"},
        {**rsa_jwk, "kid": "c", "use": "enc"},
        {"kty": "oct", "kid": "d", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "e"},
        "junk",
    ]
    found = parse_jwks({"keys": keys}, ("RS256", "ES256"))
    assert [kid for kid, _ in found.keys] == ["a"]
    assert found.candidates("a", "RS256") and not found.candidates("a", "HS256")
    assert found.candidates(None, "RS256") and not found.candidates("z", "RS256")
    with pytest.raises(ValueError):
        parse_jwks([], ("RS256",))
