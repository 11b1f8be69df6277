"""One authenticator per `auth.mode`: a call's credentials in, its principal out."""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from skewless.core.auth_config import AuthConfig
from skewless.core.errors import DefinitionError
from skewless.server.auth.credentials import bearer_token, credentials_missing, token_invalid
from skewless.server.auth.jwt_tokens import JWTVerifier
from skewless.server.auth.peer import certificate_principal
from skewless.server.auth.principal import Principal
from skewless.server.auth.tokens import StaticTokens

__all__ = ["Authenticator", "build_authenticator"]

_PEER_CACHE_SIZE = 4096


class Authenticator(Protocol):
    """Authenticates one call from its metadata and transport."""

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        """The caller's principal.

        Raises:
            UnauthenticatedError: CREDENTIALS_MISSING, TOKEN_EXPIRED or TOKEN_INVALID.

        """
        ...


class _TokenAuthenticator:
    def __init__(self, tokens: StaticTokens) -> None:
        self.tokens = tokens

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        principal = self.tokens.authenticate(bearer_token(context.invocation_metadata()))
        if principal is None:
            raise token_invalid()
        return principal


class _JWTAuthenticator:
    def __init__(self, verifier: JWTVerifier) -> None:
        self.verifier = verifier

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        return await self.verifier.authenticate(bearer_token(context.invocation_metadata()))


class _PeerAuthenticator:
    def __init__(self) -> None:
        self._cache: dict[bytes, Principal | None] = {}

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        certificates = (context.auth_context() or {}).get("x509_pem_cert") or []
        if not certificates:
            raise credentials_missing("a client certificate")
        pem = certificates[0]
        if pem not in self._cache:
            if len(self._cache) >= _PEER_CACHE_SIZE:
                self._cache.clear()
            self._cache[pem] = certificate_principal(pem)
        principal = self._cache[pem]
        if principal is None:
            raise token_invalid()
        return principal


def build_authenticator(auth: AuthConfig) -> Authenticator | None:
    """The authenticator of a configuration; None for `mode: none`.

    Raises:
        DefinitionError: The token file or JWKS file is missing or invalid.

    """
    if auth.mode == "none":
        return None
    if auth.mode == "token":
        if auth.token_file is None:
            raise DefinitionError("auth.mode token needs auth.token_file", reason="INVALID_CONFIG")
        return _TokenAuthenticator(StaticTokens(auth.token_file))
    if auth.mode == "jwt":
        if auth.jwt is None:
            raise DefinitionError("auth.mode jwt needs auth.jwt", reason="INVALID_CONFIG")
        return _JWTAuthenticator(JWTVerifier(auth.jwt))
    return _PeerAuthenticator()
