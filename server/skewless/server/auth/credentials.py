"""Bearer credentials of a call, and the three ways an authentication fails.

A failed authentication is UNAUTHENTICATED with one of three reasons, and its message
never says which part of a credential was wrong (signature, issuer, audience, key,
subject...): `CREDENTIALS_MISSING` (nothing was sent), `TOKEN_EXPIRED` (a valid token
past its `exp`: get a new one), `TOKEN_INVALID` (anything else).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skewless.core.errors import UnauthenticatedError

__all__ = [
    "MAX_TOKEN_BYTES",
    "bearer_token",
    "credentials_missing",
    "token_expired",
    "token_invalid",
]

#: Longest bearer token read; a longer one is TOKEN_INVALID without being parsed.
MAX_TOKEN_BYTES = 8192
_SCHEME = "bearer "


def credentials_missing(
    what: str = "an 'authorization: Bearer <token>' header",
) -> UnauthenticatedError:
    """The error of a call that carried no credentials."""
    return UnauthenticatedError(
        f"this server requires credentials: send {what}", reason="CREDENTIALS_MISSING"
    )


def token_invalid() -> UnauthenticatedError:
    """The error of a credential that is not valid (whatever part of it is wrong)."""
    return UnauthenticatedError(
        "the credentials are not valid for this server", reason="TOKEN_INVALID"
    )


def token_expired() -> UnauthenticatedError:
    """The error of a token past its expiry time."""
    return UnauthenticatedError(
        "the token has expired: get a new one and retry", reason="TOKEN_EXPIRED"
    )


def bearer_token(metadata: Iterable[Any] | None) -> str:
    """The bearer token of a call's `authorization` metadata.

    Raises:
        UnauthenticatedError: No authorization header (CREDENTIALS_MISSING), or one
            that is not a single `Bearer <token>` of a sane size (TOKEN_INVALID).

    """
    found: list[str | bytes] = [value for key, value in metadata or () if key == "authorization"]
    if not found:
        raise credentials_missing()
    if len(found) > 1:
        raise token_invalid()
    value = found[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise token_invalid() from None
    if len(value) > MAX_TOKEN_BYTES + len(_SCHEME) or value[: len(_SCHEME)].lower() != _SCHEME:
        raise token_invalid()
    token = value[len(_SCHEME) :].strip()
    if not token:
        raise credentials_missing()
    return token
