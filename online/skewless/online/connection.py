"""How skewless connects to an external Redis: TLS options and URLs safe to print.

A `rediss://` URL is TLS (redis-py verifies the server's certificate and host name
against the system roots, or `online_store.tls.ca_file`); a user and password in the
URL (`rediss://user:password@host:6380/0`, percent-encoded) authenticate as a Redis
ACL user. Every client skewless opens (the server's reads and pushes, the
materialization writer) takes its options from `tls_options`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from skewless.core.config import RedisTLS
from skewless.core.errors import DefinitionError

__all__ = ["redacted_url", "tls_options"]


def tls_options(url: str, tls: RedisTLS | None) -> dict[str, Any]:
    """redis-py keyword arguments for the TLS files of `online_store.tls`.

    Args:
        url: The Redis URL the client connects to.
        tls: The configured TLS files, or None.

    Returns:
        `ssl_*` arguments for `Redis.from_url` / `RedisCluster.from_url` (empty
        without TLS files: a `rediss://` URL alone verifies with the system roots).

    Raises:
        DefinitionError: TLS files are configured for a URL that is not `rediss://`.

    """
    if tls is None:
        return {}
    if not url.startswith("rediss://"):
        raise DefinitionError(
            f"online_store.tls is set but the Redis URL {redacted_url(url)} is not rediss:// (TLS)",
            reason="INVALID_CONFIG",
        )
    options: dict[str, Any] = {}
    if tls.ca_file is not None:
        options["ssl_ca_certs"] = str(tls.ca_file)
    if tls.cert_file is not None:
        options["ssl_certfile"] = str(tls.cert_file)
    if tls.key_file is not None:
        options["ssl_keyfile"] = str(tls.key_file)
    return options


def redacted_url(url: str) -> str:
    """The URL with its password replaced by `***`, for logs and messages."""
    parts = urlsplit(url)
    try:
        if parts.password is None:
            return url
        port = parts.port
    except ValueError:  # not a URL redis-py could use either; show none of it
        return f"{parts.scheme}://***"
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))
