"""Who is calling: the authenticated principal of the current call."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

__all__ = ["CallAuth", "Principal", "current_call"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        subject: Its identity: a token's subject, a JWT's subject claim, or the client
            certificate's identity (first URI, e-mail or DNS name, else common name).
        groups: The groups it belongs to, which policies may grant to.

    """

    subject: str
    groups: frozenset[str] = frozenset()


@dataclass
class CallAuth:
    """The authentication of one call, and whether its permissions were checked.

    Attributes:
        principal: The authenticated caller.
        peer: The peer address gRPC reports (`ipv4:127.0.0.1:52114`).
        rpc: The method name (`GetOnlineFeatures`).
        checked: Set once a permission check ran for the call.

    """

    principal: Principal
    peer: str
    rpc: str
    checked: bool = field(default=False)


_CALL: contextvars.ContextVar[CallAuth | None] = contextvars.ContextVar(
    "skewless_call_auth", default=None
)


def current_call() -> CallAuth | None:
    """The authentication of the call being handled; None when auth is off."""
    return _CALL.get()


def set_call(call: CallAuth) -> contextvars.Token[CallAuth | None]:
    """Makes `call` the current call's authentication (the authentication gate does)."""
    return _CALL.set(call)
