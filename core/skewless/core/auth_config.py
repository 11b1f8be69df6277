"""The `auth` section of `skewless.yaml`: who may call the server, and how they prove it.

```yaml
auth:
  mode: jwt                  # none (default) | token | jwt | mtls
  open_reflection: false     # true: reflection answers callers without credentials
  token_file: tokens.yaml    # mode token: SHA-256 hashes of bearer tokens, each a subject
  jwt:                       # mode jwt
    issuer: https://login.example.com/      # required, compared exactly
    audience: skewless                      # required
    jwks_file: keys/jwks.json               # or jwks_url: https://.../jwks.json
    algorithms: [RS256, ES256]              # asymmetric only; never none or HS*
    subject_claim: sub
    groups_claim: groups                    # a dotted path reaches nested claims
    leeway_seconds: 30                      # for exp and nbf
```

Once `mode` is not `none`, every call but health (and reflection when
`open_reflection`) must authenticate, and the repository's policies decide what each
subject may do (deny by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skewless.core.errors import DefinitionError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AUTH_MODES",
    "AuthConfig",
    "JWTSettings",
    "parse_auth_section",
]

#: The values of `auth.mode`.
AUTH_MODES = ("none", "token", "jwt", "mtls")
#: JWT algorithms `auth.jwt.algorithms` may name: signatures verified with a public key.
#: `none` and the HMAC family (HS256...) are refused, so a public key can never be used
#: as an HMAC secret (the HS/RS confusion).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_DEFAULT_ALGORITHMS = ("RS256", "ES256")
_MAX_LEEWAY_SECONDS = 300


@dataclass(frozen=True)
class JWTSettings:
    """How bearer JWTs are validated (`auth.jwt`).

    Attributes:
        issuer: The exact `iss` every token must carry.
        audience: The `aud` every token must contain.
        jwks_file: A JWKS (JSON Web Key Set) file, re-read when it changes.
        jwks_url: A JWKS URL (https), fetched at the first call and again for an unknown
            key ID; exactly one of `jwks_file` and `jwks_url` is set.
        algorithms: The signature algorithms accepted (asymmetric ones only).
        subject_claim: The claim holding the subject (dotted path for nested claims).
        groups_claim: The claim holding the groups: a list of strings or one
            space-separated string; absent means no groups.
        leeway_seconds: Clock skew allowed when checking `exp` and `nbf`.

    """

    issuer: str
    audience: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = _DEFAULT_ALGORITHMS
    subject_claim: str = "sub"
    groups_claim: str = "groups"
    leeway_seconds: float = 30.0


@dataclass(frozen=True)
class AuthConfig:
    """Authentication of the gRPC port (`auth`).

    Attributes:
        mode: `none`, `token`, `jwt` or `mtls`.
        token_file: For `token`: the YAML file of token hashes and their subjects.
        jwt: For `jwt`: the validation settings.
        open_reflection: Whether reflection answers callers without credentials (it
            describes the contract, no data). Health always does.

    """

    mode: str = "none"
    token_file: Path | None = None
    jwt: JWTSettings | None = None
    open_reflection: bool = False

    @property
    def enabled(self) -> bool:
        """Whether calls must authenticate (and policies apply)."""
        return self.mode != "none"


def _fail(path: Path, message: str) -> DefinitionError:
    return DefinitionError(f"{path}: {message}", reason="INVALID_CONFIG")


def _text(section: dict[str, Any], key: str, prefix: str, path: Path) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{prefix}.{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _jwt(raw: Any, root: Path, path: Path) -> JWTSettings:
    if not isinstance(raw, dict):
        raise _fail(path, "auth.jwt must be a mapping (issuer, audience, jwks_file or jwks_url)")
    keys = {
        "issuer",
        "audience",
        "jwks_file",
        "jwks_url",
        "algorithms",
        "subject_claim",
        "groups_claim",
        "leeway_seconds",
    }
    unknown = set(raw) - keys
    if unknown:
        raise _fail(
            path,
            f"unknown setting(s) in auth.jwt: {', '.join(sorted(map(str, unknown)))} "
            f"(expected {', '.join(sorted(keys))})",
        )
    issuer = _text(raw, "issuer", "auth.jwt", path)
    audience = _text(raw, "audience", "auth.jwt", path)
    if issuer is None or audience is None:
        raise _fail(
            path,
            "auth.jwt needs both issuer and audience: a token from another issuer or "
            "meant for another service must not be accepted",
        )
    jwks_file = _text(raw, "jwks_file", "auth.jwt", path)
    jwks_url = _text(raw, "jwks_url", "auth.jwt", path)
    if (jwks_file is None) == (jwks_url is None):
        raise _fail(path, "auth.jwt needs exactly one of jwks_file and jwks_url")
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise _fail(path, f"auth.jwt.jwks_url must be an https:// URL, got {jwks_url!r}")
    algorithms = raw.get("algorithms", list(_DEFAULT_ALGORITHMS))
    if (
        not isinstance(algorithms, list)
        or not algorithms
        or not all(isinstance(a, str) for a in algorithms)
    ):
        raise _fail(path, f"auth.jwt.algorithms must be a list of names, got {algorithms!r}")
    refused = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
    if refused:
        raise _fail(
            path,
            f"auth.jwt.algorithms: {', '.join(refused)} not accepted; use asymmetric "
            f"signatures ({', '.join(ASYMMETRIC_ALGORITHMS)}), never none or HS*",
        )
    leeway = raw.get("leeway_seconds", 30)
    if (
        isinstance(leeway, bool)
        or not isinstance(leeway, (int, float))
        or not 0 <= leeway <= _MAX_LEEWAY_SECONDS
    ):
        raise _fail(
            path,
            f"auth.jwt.leeway_seconds must be 0 to {_MAX_LEEWAY_SECONDS} seconds, got {leeway!r}",
        )
    return JWTSettings(
        issuer=issuer,
        audience=audience,
        jwks_file=None if jwks_file is None else (root / Path(jwks_file).expanduser()).resolve(),
        jwks_url=jwks_url,
        algorithms=tuple(dict.fromkeys(algorithms)),
        subject_claim=_text(raw, "subject_claim", "auth.jwt", path) or "sub",
        groups_claim=_text(raw, "groups_claim", "auth.jwt", path) or "groups",
        leeway_seconds=float(leeway),
    )


def parse_auth_section(raw: Any, *, root: Path, path: Path, mutual_tls: bool) -> AuthConfig:
    """Validates the `auth` section of `skewless.yaml`.

    Args:
        raw: The section as YAML read it (None when absent).
        root: The repository folder (relative paths start there).
        path: The config file, for messages.
        mutual_tls: Whether `server.tls.client_ca_file` is set (`mtls` needs it).

    Raises:
        DefinitionError: A setting is missing or invalid; the message names it.

    """
    if raw is None:
        return AuthConfig()
    if not isinstance(raw, dict):
        raise _fail(path, f"'auth' must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"mode", "token_file", "jwt", "open_reflection"}
    if unknown:
        raise _fail(
            path,
            f"unknown setting(s) in auth: {', '.join(sorted(map(str, unknown)))} "
            "(expected mode, token_file, jwt, open_reflection)",
        )
    mode = raw.get("mode", "none")
    if mode not in AUTH_MODES:
        raise _fail(path, f"auth.mode must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
    open_reflection = raw.get("open_reflection", False)
    if not isinstance(open_reflection, bool):
        raise _fail(path, f"auth.open_reflection must be true or false, got {open_reflection!r}")
    token_file = _text(raw, "token_file", "auth", path)
    if mode == "token" and token_file is None:
        raise _fail(path, "auth.mode token needs auth.token_file (the hashed tokens)")
    if mode != "token" and token_file is not None:
        raise _fail(path, "auth.token_file is read only with auth.mode token")
    if mode == "jwt" and raw.get("jwt") is None:
        raise _fail(path, "auth.mode jwt needs auth.jwt (issuer, audience, jwks_file or jwks_url)")
    if mode != "jwt" and raw.get("jwt") is not None:
        raise _fail(path, "auth.jwt is read only with auth.mode jwt")
    if mode == "mtls" and not mutual_tls:
        raise _fail(
            path,
            "auth.mode mtls needs server.tls.client_ca_file: the subject is the client "
            "certificate's, so every client must present one",
        )
    return AuthConfig(
        mode=mode,
        token_file=None if token_file is None else (root / Path(token_file).expanduser()).resolve(),
        jwt=_jwt(raw["jwt"], root, path) if mode == "jwt" else None,
        open_reflection=open_reflection,
    )
