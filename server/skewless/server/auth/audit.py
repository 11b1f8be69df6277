"""The audit trail of refused calls: one log line each, and a counter.

Lines go to the `skewless.audit` logger at WARNING:

    audit: permission denied rpc=GetOnlineFeatures subject='etl' action=read_online
      resource=feature_view:driver_stats peer=ipv4:127.0.0.1:52114
    audit: unauthenticated rpc=GetOnlineFeatures reason=TOKEN_INVALID peer=ipv4:...

Values that come from a caller are quoted and cut (`shown`), so a subject or name can
neither forge another line nor flood the log. `skewless_auth_denied_total{rpc, code,
reason}` counts the same calls (labels from closed sets only).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from skewless.core.errors import quoted
from skewless.server.auth.principal import CallAuth

__all__ = ["AUTH_DENIED", "denied", "unauthenticated"]

_log = logging.getLogger("skewless.audit")

AUTH_DENIED = Counter(
    "skewless_auth_denied_total",
    "Calls refused by authentication (UNAUTHENTICATED) or permissions (PERMISSION_DENIED).",
    ["rpc", "code", "reason"],
)


def _peer(peer: str) -> str:
    return quoted(peer, 80)[1:-1] if peer else "-"


def denied(call: CallAuth, action: str, resource: str) -> None:
    """Records a PERMISSION_DENIED call."""
    AUTH_DENIED.labels(call.rpc, "PERMISSION_DENIED", "PERMISSION_DENIED").inc()
    _log.warning(
        "audit: permission denied rpc=%s subject=%s action=%s resource=%s peer=%s",
        call.rpc,
        quoted(call.principal.subject, 80),
        action,
        quoted(resource, 80),
        _peer(call.peer),
    )


def unauthenticated(rpc: str, reason: str, peer: str) -> None:
    """Records an UNAUTHENTICATED call."""
    AUTH_DENIED.labels(rpc, "UNAUTHENTICATED", reason).inc()
    _log.warning("audit: unauthenticated rpc=%s reason=%s peer=%s", rpc, reason, _peer(peer))
