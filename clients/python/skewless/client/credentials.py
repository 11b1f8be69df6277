"""Transport security and bearer tokens of a `Client` channel.

A token is a string, or a zero-argument callable that returns the current one (it is
called for every RPC, so a token that expires is refreshed by returning a new one).
It travels as the `authorization: Bearer <token>` header of every call. On a TLS
channel it is a grpc call credential, attached to every call made on the channel
(also by stubs built on `Client.channel`); grpc refuses call credentials on plaintext
channels, so there the client adds the same header to each call's metadata instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

__all__ = [
    "AUTHORIZATION",
    "BearerToken",
    "Token",
    "bearer_header",
    "channel_credentials",
    "check_metadata",
]

#: The header that carries the bearer token.
AUTHORIZATION = "authorization"

#: A bearer token, or a callable returning the current token.
Token = str | Callable[[], str]


def _current(token: Token) -> str:
    value = token() if callable(token) else token
    if not isinstance(value, str) or not value or value != value.strip() or "\n" in value:
        raise ValueError(
            "the bearer token must be a non-empty string without surrounding whitespace "
            f"or newlines, got {type(value).__name__}"
        )
    return value


def bearer_header(token: Token) -> tuple[str, str]:
    """The `authorization` header for the current value of `token`.

    Raises:
        ValueError: The token (or what the callable returned) is empty or not a string.

    """
    return (AUTHORIZATION, f"Bearer {_current(token)}")


class BearerToken(grpc.AuthMetadataPlugin):  # type: ignore[misc]  # grpc is untyped
    """grpc call credentials plugin sending `authorization: Bearer <token>` on each call."""

    def __init__(self, token: Token) -> None:
        """Wraps a token or a token callable (called once per RPC)."""
        self.token = token

    def __call__(
        self,
        context: grpc.AuthMetadataContext,
        callback: grpc.AuthMetadataPluginCallback,
    ) -> None:
        """Gives grpc the header; an error of the token callable fails the call."""
        try:
            header = bearer_header(self.token)
        except Exception as exc:  # reported to the caller as the call's failure
            callback((), exc)
        else:
            callback((header,), None)


def channel_credentials(
    *,
    root_certificates: bytes | None,
    client_cert: tuple[bytes, bytes] | None,
    token: Token | None,
) -> grpc.ChannelCredentials:
    """TLS credentials, with a client certificate (mTLS) and the token when given.

    Args:
        root_certificates: PEM roots that verify the server; None uses the system roots.
        client_cert: `(certificate_chain_pem, private_key_pem)` for mutual TLS.
        token: A bearer token or token callable, sent on every call.

    """
    cert, key = client_cert if client_cert is not None else (None, None)
    credentials: Any = grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=key, certificate_chain=cert
    )
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.metadata_call_credentials(BearerToken(token), name="bearer")
        )
    return credentials


def check_metadata(metadata: Sequence[tuple[str, str]], token: Token | None) -> None:
    """Refuses an `authorization` header in `metadata` when a token is given too.

    Raises:
        ValueError: Both carry the header.

    """
    if token is not None and any(key.lower() == AUTHORIZATION for key, _ in metadata):
        raise ValueError("pass the bearer token as token=..., not also in metadata=")
