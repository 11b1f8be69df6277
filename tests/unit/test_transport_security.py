"""Pure rules of transport security: which addresses are loopback, URLs safe to print."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.core.config import RepoConfig, ServerTLS
from skewless.online.connection import redacted_url
from skewless.server.tls import is_loopback, plaintext_refusal


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7", "[::]"])
def test_addresses_other_machines_reach(host: str) -> None:
    assert not is_loopback(host)


def _config(host: str, **changes: object) -> RepoConfig:
    return RepoConfig(
        root=Path("/r"), project="p", data_dir=Path("/r/d"), server_host=host, **changes
    )  # type: ignore[arg-type]


def test_plaintext_is_refused_beyond_loopback_unless_insecure_or_tls() -> None:
    assert plaintext_refusal(_config("127.0.0.1")) is None
    refusal = plaintext_refusal(_config("0.0.0.0"))
    assert refusal is not None and "--insecure" in refusal and "server.tls" in refusal
    assert plaintext_refusal(_config("0.0.0.0", server_insecure=True)) is None
    tls = ServerTLS(cert_file=Path("/c.pem"), key_file=Path("/k.pem"))
    assert plaintext_refusal(_config("0.0.0.0", server_tls=tls)) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss://app:s3cr%40t@redis.internal:6380/0", "rediss://app:***@redis.internal:6380/0"),
        ("redis://:pw@127.0.0.1:6379/2", "redis://:***@127.0.0.1:6379/2"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://u:p@[::1]:6380", "rediss://u:***@[::1]:6380"),
    ],
)
def test_redis_passwords_are_not_printed(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
