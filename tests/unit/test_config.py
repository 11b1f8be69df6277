"""skewless.yaml settings that the server enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.core.config import load_repo_config
from skewless.core.errors import DefinitionError


def _repo(tmp_path: Path, server: str) -> Path:
    (tmp_path / "skewless.yaml").write_text(f"project: p\n{server}")
    return tmp_path


def test_entity_source_roots_default_to_the_repository(tmp_path: Path) -> None:
    config = load_repo_config(_repo(tmp_path, ""))
    assert config.entity_roots == (tmp_path.resolve(),)


def test_entity_source_roots_resolve_relative_to_the_repository(tmp_path: Path) -> None:
    server = "server:\n  entity_source_roots: [labels, ../shared, /srv/training]\n"
    config = load_repo_config(_repo(tmp_path, server))
    root = tmp_path.resolve()
    assert config.entity_roots == (root / "labels", root.parent / "shared", Path("/srv/training"))


@pytest.mark.parametrize("value", ["labels", "[1]", '[""]', "{a: b}"])
def test_entity_source_roots_must_be_a_list_of_folders(tmp_path: Path, value: str) -> None:
    with pytest.raises(DefinitionError, match="entity_source_roots"):
        load_repo_config(_repo(tmp_path, f"server:\n  entity_source_roots: {value}\n"))


def test_server_tls_paths_resolve_relative_to_the_repository(tmp_path: Path) -> None:
    server = (
        "server:\n  tls:\n    cert_file: tls/server.pem\n    key_file: tls/server.key\n"
        "    client_ca_file: /etc/skewless/clients.pem\n"
    )
    config = load_repo_config(_repo(tmp_path, server))
    assert config.server_tls is not None
    root = tmp_path.resolve()
    assert config.server_tls.cert_file == root / "tls" / "server.pem"
    assert config.server_tls.key_file == root / "tls" / "server.key"
    assert config.server_tls.client_ca_file == Path("/etc/skewless/clients.pem")
    assert config.server_tls.mutual
    assert not config.server_insecure


def test_no_server_tls_by_default(tmp_path: Path) -> None:
    config = load_repo_config(_repo(tmp_path, ""))
    assert config.server_tls is None and config.redis_tls is None
    assert config.server_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("server:\n  tls: yes\n", "server.tls must be a mapping"),
        ("server:\n  tls: {cert_file: a.pem}\n", "server.tls needs both cert_file and key_file"),
        ("server:\n  tls: {cert_file: a.pem, key_file: 3}\n", "server.tls.key_file must be"),
        ("server:\n  tls: {cert_file: a, key_file: b, ca: c}\n", "unknown setting.*server.tls: ca"),
        ("server:\n  insecure: maybe\n", "server.insecure must be true or false"),
        ("server:\n  host: 12\n", "server.host must be an address"),
    ],
)
def test_bad_server_security_settings_are_named(tmp_path: Path, server: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_repo_config(_repo(tmp_path, server))


def test_online_store_tls_needs_a_rediss_url(tmp_path: Path) -> None:
    online = "online_store:\n  redis_url: rediss://app:secret@redis.internal:6380/0\n"
    online += "  tls: {ca_file: tls/redis-ca.pem}\n"
    config = load_repo_config(_repo(tmp_path, online))
    assert config.redis_tls is not None
    assert config.redis_tls.ca_file == tmp_path.resolve() / "tls" / "redis-ca.pem"
    assert config.redis_tls.cert_file is None
    plain = online.replace("rediss://", "redis://")
    with pytest.raises(DefinitionError, match=r"online_store.tls needs a rediss://"):
        load_repo_config(_repo(tmp_path, plain))
    half = online.replace("{ca_file: tls/redis-ca.pem}", "{cert_file: c.pem}")
    with pytest.raises(DefinitionError, match="cert_file and key_file together"):
        load_repo_config(_repo(tmp_path, half))


def test_feature_log_settings(tmp_path: Path) -> None:
    default = load_repo_config(_repo(tmp_path, ""))
    assert (default.feature_log_flush_seconds, default.feature_log_queue_calls) == (5.0, 10_000)
    config = load_repo_config(
        _repo(tmp_path, "server:\n  feature_log: {flush_interval: 0.5, queue_calls: 10}\n")
    )
    assert (config.feature_log_flush_seconds, config.feature_log_queue_calls) == (0.5, 10)


@pytest.mark.parametrize(
    "value", ["{flush_interval: 0}", "{queue_calls: 0}", "{flush_interval: x}", "{every: 1}"]
)
def test_feature_log_settings_are_checked(tmp_path: Path, value: str) -> None:
    with pytest.raises(DefinitionError, match=r"server\.feature_log"):
        load_repo_config(_repo(tmp_path, f"server:\n  feature_log: {value}\n"))


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for(tmp_path: Path) -> None:
    assert load_repo_config(_repo(tmp_path, "")).event_loop == "uvloop"
    chosen = load_repo_config(_repo(tmp_path, "server:\n  event_loop: asyncio\n"))
    assert chosen.event_loop == "asyncio"


@pytest.mark.parametrize("value", ["trio", "1", "[uvloop]"])
def test_an_unknown_event_loop_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(DefinitionError, match="event_loop must be one of"):
        load_repo_config(_repo(tmp_path, f"server:\n  event_loop: {value}\n"))
