"""A feature repository served with authentication, for the auth and permission tests.

The repository is the push-fed `live_definitions` (views `driver_live`, `driver_recent`
fed by the push source `driver_push`, the service `live`) plus `POLICIES`; its
`skewless.yaml` carries the `auth` (and optional `server.tls`) section given. Keys and
tokens are made here, per run: RSA and EC keys for JWTs (a JWKS file), and static
tokens stored only as SHA-256 hashes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from skewless.core.config import RepoConfig, load_repo_config
from skewless.registry import Policy
from tests.helpers.repos import live_definitions, save_registry

PROJECT = "authz"
ISSUER = "https://login.skewless.test/"
AUDIENCE = "skewless-features"

#: Who may do what in the test repository.
POLICIES = (
    Policy(
        name="reader_online",
        subjects=("reader",),
        actions=("read_online",),
        resources=("feature_view:driver_live",),
    ),
    Policy(
        name="reader_training",
        subjects=("reader",),
        actions=("read_historical",),
        resources=("feature_service:live",),
    ),
    Policy(
        name="pushers",
        groups=("ingest",),
        actions=("push",),
        resources=("feature_view:driver_*",),
    ),
    Policy(
        name="operators",
        groups=("ops",),
        actions=("materialize", "read_registry"),
        resources=("feature_view:driver_live", "project"),
    ),
    Policy(
        name="operators_views",
        groups=("ops-views",),
        actions=("materialize",),
        resources=("feature_view:driver_live",),
    ),
    Policy(
        name="analysts",
        subjects=("analyst",),
        actions=("read_historical",),
        resources=("feature_view:driver_?ive",),
    ),
    Policy(
        name="analysts_sql",
        subjects=("analyst",),
        actions=("server_entity_rows",),
        resources=("project",),
    ),
    Policy(name="admins", groups=("platform",), actions=("admin",), resources=("project",)),
)

#: Static tokens: token -> (subject, groups).
TOKENS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reader-token": ("reader", ()),
    "pusher-token": ("pusher", ("ingest",)),
    "ops-token": ("operator", ("ops",)),
    "views-ops-token": ("view-operator", ("ops-views",)),
    "analyst-token": ("analyst", ()),
    "admin-token": ("root", ("platform",)),
    "nobody-token": ("nobody", ()),
}


def token_file(path: Path, tokens: dict[str, tuple[str, tuple[str, ...]]] = TOKENS) -> Path:
    """Writes a token file holding only the tokens' SHA-256 hashes."""
    lines = ["tokens:"]
    for token, (subject, groups) in tokens.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        lines += [f"  - sha256: {digest}", f"    subject: {subject}"]
        if groups:
            lines.append(f"    groups: [{', '.join(groups)}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_repo(
    root: Path,
    redis_url: str,
    auth: str,
    *,
    server: str = "",
    policies: tuple[Policy, ...] = POLICIES,
) -> RepoConfig:
    """Writes `skewless.yaml` (with `auth` and `server` YAML bodies) and saves the registry."""
    root.mkdir(parents=True, exist_ok=True)
    text = f"project: {PROJECT}\ndata_dir: .skewless\nonline_store: {{redis_url: {redis_url}}}\n"
    if server:
        text += "server:\n" + _indent(server)
    text += "auth:\n" + _indent(auth)
    (root / "skewless.yaml").write_text(text)
    config = load_repo_config(root)
    save_registry(config, dataclasses.replace(live_definitions(), policies=policies))
    return config


def _indent(body: str) -> str:
    return "".join(f"  {line}\n" for line in body.strip("\n").splitlines())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """Signing keys and a JWKS for JWT tests: an RSA key (`rsa-1`) and an EC key (`ec-1`)."""

    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (what `auth.jwt.jwks_file` or a JWKS URL serves)."""
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
        ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
        return {"keys": [rsa_jwk, ec_jwk]}

    def write_jwks(self, path: Path) -> Path:
        """Writes the JWKS file."""
        path.write_text(json.dumps(self.jwks()))
        return path

    def claims(self, subject: str, **changes: Any) -> dict[str, Any]:
        """Valid claims for `subject` (expiring in 10 minutes), with `changes` applied."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, subject: str, *, alg: str = "RS256", kid: str | None = None, **changes: Any
    ) -> str:
        """A signed token for `subject` (RS256 with `rsa-1` or ES256 with `ec-1`)."""
        key: Any = self.rsa_key if alg.startswith(("RS", "PS")) else self.ec_key
        default_kid = "rsa-1" if alg.startswith(("RS", "PS")) else "ec-1"
        return jwt.encode(
            self.claims(subject, **changes),
            key,
            algorithm=alg,
            headers={"kid": kid or default_kid},
        )

    def unsigned_token(self, subject: str) -> str:
        """A token with `alg: none` and no signature."""
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
        body = _b64(json.dumps(self.claims(subject)).encode())
        return f"{header}.{body}."

    def hmac_with_public_key(self, subject: str) -> str:
        """HS256 'signed' with the RSA public key as the secret (the HS/RS confusion)."""
        secret = self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        body = _b64(json.dumps(self.claims(subject)).encode())
        signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(signature)}"

    def foreign_token(self, subject: str) -> str:
        """A token signed by another RSA key that claims the kid `rsa-1`."""
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(self.claims(subject), other, algorithm="RS256", headers={"kid": "rsa-1"})


def jwt_auth(jwks: Path | str, *, extra: str = "") -> str:
    """The `auth` body of a JWT configuration (a JWKS file path or URL)."""
    source = f"jwks_url: {jwks}" if isinstance(jwks, str) else f"jwks_file: {jwks}"
    return (
        "mode: jwt\njwt:\n"
        f"  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  {source}\n"
        "  algorithms: [RS256, ES256]\n  groups_claim: realm.groups\n  leeway_seconds: 5\n" + extra
    )
