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


_TLS = "server:\n  tls: {cert_file: s.pem, key_file: s.key}\n"


def test_ui_settings_resolve_relative_to_the_repository(tmp_path: Path) -> None:
    ui = "ui: {ca_file: tls/ca.pem, cert_file: c.pem, key_file: c.key, server_name: fs.test}\n"
    config = load_repo_config(_repo(tmp_path, _TLS + ui))
    root = tmp_path.resolve()
    assert config.ui_tls is not None
    assert config.ui_tls.ca_file == root / "tls" / "ca.pem"
    assert (config.ui_tls.cert_file, config.ui_tls.key_file) == (root / "c.pem", root / "c.key")
    assert config.ui_tls.server_name == "fs.test"
    assert load_repo_config(_repo(tmp_path, _TLS)).ui_tls is None


@pytest.mark.parametrize(
    ("ui", "message"),
    [
        ("ui: {ca: a.pem}\n", "unknown setting.*ui: ca"),
        ("ui: {cert_file: c.pem}\n", "ui needs cert_file and key_file together"),
        ("ui: {server_name: 3}\n", "ui.server_name must be a host name"),
        ("ui: [a]\n", "'ui' must be a mapping"),
    ],
)
def test_bad_ui_settings_are_named(tmp_path: Path, ui: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_repo_config(_repo(tmp_path, _TLS + ui))


def test_ui_settings_need_a_tls_server(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"server\.tls is not set"):
        load_repo_config(_repo(tmp_path, "ui: {ca_file: ca.pem}\n"))


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


def test_an_s3_data_dir_takes_the_object_store_from_config_then_aws_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    repo = _repo(
        tmp_path,
        "data_dir: s3://features/team/rides/\nobject_store:\n"
        "  endpoint_url: http://127.0.0.1:8333\n  region: us-east-1\n",
    )
    config = load_repo_config(repo)
    assert config.data_url == "s3://features/team/rides"
    assert config.data_dir == tmp_path.resolve() / ".skewless"  # the local parts only
    assert config.object_store is not None
    assert config.object_store.region == "us-east-1"  # the file wins
    assert config.object_store.access_key_id == "from-env"
    assert "env-secret" not in repr(config.object_store)
    assert config.storage.uri("offline/v") == "s3://features/team/rides/offline/v"
    assert config.redacted("at features/team/rides/offline/v/x.parquet") == (
        "at <data_dir>/offline/v/x.parquet"
    )


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("data_dir: s3://UPPER/x\n", "bucket"),
        ("data_dir: s3://bucket/../x\n", "prefix"),
        ("object_store: {region: x}\n", "not an s3://"),
        ("data_dir: s3://bucket/x\nobject_store: {endpoint: x}\n", "unknown setting"),
        ("data_dir: s3://bucket/x\nobject_store: {endpoint_url: ftp://h}\n", "http"),
        (
            "data_dir: s3://bucket/x\nobject_store: {endpoint_url: 'http://10.0.0.5:9000'}\n",
            "https",
        ),
        ("data_dir: s3://bucket/x\nobject_store: {allow_http: 'yes'}\n", "bool"),
    ],
)
def test_bad_object_store_settings_are_refused(tmp_path: Path, setting: str, problem: str) -> None:
    with pytest.raises(DefinitionError, match=problem) as caught:
        load_repo_config(_repo(tmp_path, setting))
    assert caught.value.reason == "INVALID_CONFIG"


def test_plain_http_elsewhere_needs_allow_http(tmp_path: Path) -> None:
    setting = "data_dir: s3://bucket/x\nobject_store:\n  endpoint_url: http://10.0.0.5:9000\n"
    config = load_repo_config(_repo(tmp_path, setting + "  allow_http: true\n"))
    assert config.object_store is not None and config.object_store.http
    assert config.storage.storage_options is not None
    assert config.storage.storage_options["AWS_ALLOW_HTTP"] == "true"
    assert config.storage.storage_options["conditional_put"] == "etag"


def test_the_offline_engine_is_duckdb_unless_spark_is_chosen(tmp_path: Path) -> None:
    config = load_repo_config(_repo(tmp_path, ""))
    assert config.offline_engine == "duckdb" and config.spark is None
    offline = (
        "offline:\n  engine: spark\n  spark:\n    remote: sc://spark.internal:15002/;token=x\n"
    )
    config = load_repo_config(_repo(tmp_path, offline))
    assert config.offline_engine == "spark"
    assert config.spark is not None
    assert config.spark.remote == "sc://spark.internal:15002/;token=x"
    assert config.spark.target == "sc://spark.internal:15002"  # no token in messages
    local = (
        "offline:\n  engine: spark\n  spark:\n    master: local[4]\n"
        "    conf: {spark.sql.shuffle.partitions: 8, spark.sql.ansi.enabled: true}\n"
    )
    config = load_repo_config(_repo(tmp_path, local))
    assert config.spark is not None and config.spark.master == "local[4]"
    assert config.spark.conf == (
        ("spark.sql.ansi.enabled", "true"),
        ("spark.sql.shuffle.partitions", "8"),
    )
    assert load_repo_config(_repo(tmp_path, "offline: {engine: spark}\n")).spark is not None


@pytest.mark.parametrize(
    ("offline", "message"),
    [
        ("offline: {engine: spork}\n", "offline.engine must be one of duckdb, spark"),
        ("offline: {engines: spark}\n", "unknown setting"),
        ("offline: {spark: {remote: 'http://x:1'}}\n", "sc://HOST:PORT"),
        ("offline: {spark: {remote: 'sc://x:1', master: local}}\n", "not both"),
        ("offline: {spark: {conf: [a]}}\n", "offline.spark.conf"),
        ("offline: {spark: {cores: 2}}\n", "unknown setting"),
    ],
)
def test_bad_offline_engine_settings_are_named(tmp_path: Path, offline: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message.replace(".", r"\.")):
        load_repo_config(_repo(tmp_path, offline))


def test_the_spark_engine_needs_a_local_data_dir(tmp_path: Path) -> None:
    setting = "data_dir: s3://bucket/x\noffline: {engine: spark}\n"
    with pytest.raises(DefinitionError, match="local data dir") as caught:
        load_repo_config(_repo(tmp_path, setting))
    assert caught.value.reason == "INVALID_CONFIG"


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for(tmp_path: Path) -> None:
    assert load_repo_config(_repo(tmp_path, "")).event_loop == "uvloop"
    chosen = load_repo_config(_repo(tmp_path, "server:\n  event_loop: asyncio\n"))
    assert chosen.event_loop == "asyncio"


@pytest.mark.parametrize("value", ["trio", "1", "[uvloop]"])
def test_an_unknown_event_loop_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(DefinitionError, match="event_loop must be one of"):
        load_repo_config(_repo(tmp_path, f"server:\n  event_loop: {value}\n"))
