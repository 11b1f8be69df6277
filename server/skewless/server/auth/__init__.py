"""Authentication and permissions of the gRPC port (`auth` in `skewless.yaml`).

`build_authenticator` turns `auth.mode` into an authenticator (static tokens, JWTs,
client certificates); `AuthGate` runs it for every call but health; `Access`
holds the repository's policies and is what servicers call to check a request's
resources (`Access.require`). See docs/security.md.
"""

from skewless.server.auth.authenticator import Authenticator, build_authenticator
from skewless.server.auth.gate import AuthGate
from skewless.server.auth.permissions import METHOD_RULES, Access, Action, Resource, rule_for
from skewless.server.auth.principal import CallAuth, Principal, current_call

__all__ = [
    "METHOD_RULES",
    "Access",
    "Action",
    "AuthGate",
    "Authenticator",
    "CallAuth",
    "Principal",
    "Resource",
    "build_authenticator",
    "current_call",
    "rule_for",
]
