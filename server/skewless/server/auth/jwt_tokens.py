"""Bearer JWTs (`auth.mode: jwt`), verified with PyJWT against a JWKS file or URL.

A token is accepted only when all of these hold:

- its header's `alg` is one of `auth.jwt.algorithms` (asymmetric only: `none` and HS*
  are refused when the configuration is read) and is the algorithm of the key that
  verifies it: each JWKS key is bound to one algorithm (its `alg`, else its key type),
  so a public key can never verify an HMAC;
- the key is the one its `kid` names (without a `kid`, a key of that algorithm);
  symmetric (`oct`) keys and keys not for signatures are ignored;
- its signature verifies, `iss` equals the issuer, `aud` holds the audience, `exp` is
  present and not passed, and `nbf` (when present) has come, both with the leeway;
- the subject claim is a non-empty string.

Validated tokens are cached by their SHA-256 until they expire (bounded, and emptied
whenever the keys change), so a client that sends the same token on every call pays
for one verification.

A JWKS file is re-read when it changes (checked at most once a second). A JWKS URL is
fetched at the first call and again, at most every 30 s, when a token names a key ID
it does not hold (key rotation); a fetch failure keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from skewless.core.auth_config import JWTSettings
from skewless.core.errors import DefinitionError, UnauthenticatedError
from skewless.server.auth.credentials import token_expired, token_invalid
from skewless.server.auth.principal import Principal

__all__ = ["JWKSet", "JWTVerifier", "parse_jwks"]

_log = logging.getLogger(__name__)
_FILE_CHECK_INTERVAL = 1.0
_URL_REFRESH_INTERVAL = 30.0
_MAX_JWKS_BYTES = 1 << 20
_CACHE_SIZE = 10_000
_MAX_SUBJECT = 256


@dataclass(frozen=True)
class JWKSet:
    """The usable signature keys of a JWKS, each bound to one algorithm."""

    keys: tuple[tuple[str | None, jwt.PyJWK], ...]

    def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The keys that may verify a token with this `kid` and `alg`."""
        return [
            key
            for key_id, key in self.keys
            if key.algorithm_name == alg and (kid is None or key_id == kid)
        ]


def parse_jwks(data: Any, algorithms: Sequence[str]) -> JWKSet:
    """The signature keys of a parsed JWKS document whose algorithm is accepted.

    Raises:
        ValueError: The document is not a JWKS (`{"keys": [...]}`).

    """
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS document: expected {"keys": [...]}')
    keys: list[tuple[str | None, jwt.PyJWK]] = []
    for item in data["keys"]:
        if not isinstance(item, dict) or item.get("kty") == "oct":
            continue  # a symmetric secret never verifies tokens here
        if item.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(item)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if key.algorithm_name not in algorithms:
            continue
        kid = item.get("kid")
        keys.append((kid if isinstance(kid, str) else None, key))
    return JWKSet(tuple(keys))


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class _JWKSource:
    """The keys of `jwks_file` or `jwks_url`, kept current."""

    def __init__(self, settings: JWTSettings) -> None:
        self.settings = settings
        self.keys = JWKSet(())
        self._identity: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._fetched = float("-inf")
        self._fetch_lock = asyncio.Lock()
        if settings.jwks_file is not None:
            self.keys = self._read_file(settings.jwks_file)
            self._identity = _file_identity(settings.jwks_file)
            self._checked = time.monotonic()

    def _read_file(self, path: Path) -> JWKSet:
        try:
            data = json.loads(path.read_bytes()[:_MAX_JWKS_BYTES])
            keys = parse_jwks(data, self.settings.algorithms)
        except OSError as exc:
            raise DefinitionError(
                f"auth.jwt.jwks_file: cannot read {path} ({exc.strerror or exc})",
                reason="INVALID_CONFIG",
            ) from exc
        except ValueError as exc:
            raise DefinitionError(
                f"auth.jwt.jwks_file: {path} is not a JWKS ({exc})", reason="INVALID_CONFIG"
            ) from exc
        if not keys.keys:
            raise DefinitionError(
                f"auth.jwt.jwks_file: {path} holds no signature key for the algorithms "
                f"{', '.join(self.settings.algorithms)}",
                reason="INVALID_CONFIG",
            )
        return keys

    def _refresh_file(self) -> None:
        path = self.settings.jwks_file
        now = time.monotonic()
        if path is None or now - self._checked < _FILE_CHECK_INTERVAL:
            return
        self._checked = now
        identity = _file_identity(path)
        if identity == self._identity:
            return
        try:
            self.keys = self._read_file(path)
        except DefinitionError as exc:
            _log.warning("keeping the previous JWKS keys: %s", exc.message)
            return
        self._identity = identity
        _log.info("loaded %d JWKS keys from auth.jwt.jwks_file", len(self.keys.keys))

    def _fetch_url(self) -> JWKSet:
        url = self.settings.jwks_url
        assert url is not None
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return parse_jwks(json.loads(response.read(_MAX_JWKS_BYTES)), self.settings.algorithms)

    async def _refresh_url(self) -> None:
        async with self._fetch_lock:
            if time.monotonic() - self._fetched < _URL_REFRESH_INTERVAL:
                return
            self._fetched = time.monotonic()
            try:
                self.keys = await asyncio.to_thread(self._fetch_url)
            except Exception as exc:  # network, HTTP or JSON: keep what is known
                _log.warning("could not fetch auth.jwt.jwks_url (%s); keeping known keys", exc)
                return
            _log.info("fetched %d JWKS keys from auth.jwt.jwks_url", len(self.keys.keys))

    async def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        if self.settings.jwks_file is not None:
            self._refresh_file()
            return self.keys.candidates(kid, alg)
        found = self.keys.candidates(kid, alg)
        if not found:  # first call, or a rotated key: fetch (rate-limited)
            await self._refresh_url()
            found = self.keys.candidates(kid, alg)
        return found


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class JWTVerifier:
    """Verifies bearer JWTs and caches the accepted ones until they expire."""

    def __init__(self, settings: JWTSettings) -> None:
        """Loads the JWKS file (a JWKS URL is fetched at the first call).

        Raises:
            DefinitionError: The JWKS file is missing, invalid, or has no usable key.

        """
        self.settings = settings
        self.source = _JWKSource(settings)
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._cache_keys = self.source.keys

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid token.

        Raises:
            UnauthenticatedError: TOKEN_EXPIRED for a genuine token past its `exp`,
                TOKEN_INVALID for anything else.

        """
        digest = hashlib.sha256(token.encode()).digest()
        if self.source.keys is not self._cache_keys:  # keys rotated: verify everything again
            self._cache.clear()
            self._cache_keys = self.source.keys
        cached = self._cache.get(digest)
        now = time.time()
        if cached is not None:
            principal, expires = cached
            if now < expires:
                return principal
            del self._cache[digest]
            raise token_expired()
        principal, expires = await self._verify(token)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
        self._cache[digest] = (principal, expires)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise token_invalid() from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg not in settings.algorithms:
            raise token_invalid()
        if kid is not None and not isinstance(kid, str):
            raise token_invalid()
        failure: UnauthenticatedError = token_invalid()
        for key in await self.source.candidates(kid, alg):
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=settings.audience,
                    issuer=settings.issuer,
                    leeway=settings.leeway_seconds,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.ExpiredSignatureError:  # raised only once the signature verified
                failure = token_expired()
                break
            except jwt.InvalidSignatureError:
                continue  # without a kid, another key of the algorithm may verify it
            except (jwt.InvalidTokenError, ValueError, TypeError):
                break
            return self._principal(claims)
        raise failure

    def _principal(self, claims: dict[str, Any]) -> tuple[Principal, float]:
        subject = _claim(claims, self.settings.subject_claim)
        if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
            raise token_invalid()
        raw = _claim(claims, self.settings.groups_claim)
        if raw is None:
            groups: frozenset[str] = frozenset()
        elif isinstance(raw, str):
            groups = frozenset(raw.split())
        elif isinstance(raw, list) and all(isinstance(g, str) for g in raw):
            groups = frozenset(raw)
        else:
            raise token_invalid()
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise token_invalid()
        return Principal(subject=subject, groups=groups), float(exp) + self.settings.leeway_seconds
