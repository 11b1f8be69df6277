"""The feature repository's project configuration (`skewless.yaml`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skewless.core.auth_config import AuthConfig, parse_auth_section
from skewless.core.errors import DefinitionError
from skewless.core.names import IDENTIFIER_RULE, is_identifier
from skewless.core.storage import (
    DataStorage,
    ObjectStoreSettings,
    is_object_store_url,
    open_storage,
    parse_s3_url,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_SERVER_PORT",
    "EVENT_LOOPS",
    "OFFLINE_ENGINES",
    "ConsoleTLS",
    "RedisTLS",
    "RepoConfig",
    "ServerTLS",
    "SparkSettings",
    "load_repo_config",
]

CONFIG_FILE = "skewless.yaml"
DEFAULT_SERVER_PORT = 6566
DEFAULT_METRICS_PORT = 9464
#: The event loops the server can run on (`server.event_loop`), the default first.
EVENT_LOOPS = ("uvloop", "asyncio")
# An absolute POSIX path inside a message: a "/" not inside a word, then path characters.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/>-])/[\w.@+~%=-]+(?:/[\w.@+~%=*?-]*)*")


@dataclass(frozen=True)
class ServerTLS:
    """TLS on the gRPC port (`server.tls`); the files are re-read when they change.

    Attributes:
        cert_file: PEM certificate chain the server presents.
        key_file: PEM private key of that certificate.
        client_ca_file: PEM CA bundle that client certificates must chain to; set, it
            turns on mutual TLS (every client must present a certificate).

    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate (mTLS)."""
        return self.client_ca_file is not None


@dataclass(frozen=True)
class ConsoleTLS:
    """How `skewless serve --ui-port`'s console reaches a TLS server (`ui`).

    The console is a gRPC client of the server like any other, so it must verify the
    server's certificate and, under mutual TLS, present one of its own.

    Attributes:
        ca_file: PEM CA bundle that verifies `server.tls.cert_file`; None uses the
            system roots.
        cert_file: PEM client certificate, needed when `server.tls.client_ca_file` is set.
        key_file: PEM private key of `cert_file`.
        server_name: The name to verify in the server's certificate; None takes one the
            certificate holds (the console dials the server on this machine).

    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class RedisTLS:
    """TLS settings for a `rediss://` online store (`online_store.tls`).

    Attributes:
        ca_file: PEM CA bundle that verifies the Redis server; None uses the system roots.
        cert_file: PEM client certificate, for a Redis that requires one.
        key_file: PEM private key of `cert_file`.

    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


#: The engines historical retrieval can run on (`offline.engine`).
OFFLINE_ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class SparkSettings:
    """How skewless reaches Apache Spark (`offline.spark`) when `offline.engine` is `spark`.

    Attributes:
        remote: A Spark Connect URL (`sc://HOST:PORT`, optionally with `/;param=value`
            parameters such as `token`): the way to reach an existing cluster.
        master: The master of a session skewless starts in its own process
            (`local[2]`, `spark://HOST:PORT`, ...), when `remote` is not set.
        conf: Spark settings applied to the session (`spark.sql.shuffle.partitions`, ...).
        python: The interpreter Spark's Python workers run for a session skewless
            starts (`PYSPARK_PYTHON`); None: the server's own interpreter.

    """

    remote: str | None = None
    master: str | None = None
    conf: tuple[tuple[str, str], ...] = ()
    python: str | None = None

    @property
    def target(self) -> str:
        """Where the session runs, for messages: the Connect URL (no parameters) or master."""
        if self.remote is not None:
            return self.remote.split("/;", 1)[0]
        return self.master or "local[*]"


@dataclass(frozen=True)
class RepoConfig:
    """Settings of one feature repository.

    Attributes:
        root: Absolute path of the repository folder.
        project: Project name; namespaces registry, offline and online data.
        data_dir: Absolute path holding the registry, the offline store and the
            embedded Redis data; with `data_url` set, only the local parts (spill
            files, the embedded Redis).
        data_url: `s3://bucket/prefix` when the data dir is on object storage (the
            registry, offline store, job records, watermarks and feature logs live
            there); None: everything is under `data_dir`.
        object_store: How to reach `data_url` (endpoint, region, credentials).
        redis_url: URL of an existing Redis; None makes `skewless serve` start its own.
        redis_port: Port for the embedded Redis; 0 picks a free one.
        redis_cluster: Whether `redis_url` points at a Redis Cluster.
        redis_tls: TLS files for a `rediss://` `redis_url`; None: defaults (system roots).
        server_host: Address the gRPC server binds.
        server_port: Port the gRPC server binds; 0 picks a free one.
        metrics_port: Port of the Prometheus endpoint; 0 disables it.
        entity_source_roots: Folders whose files historical retrieval may read as
            entity rows (`path` and `sql` sources); empty means the repository folder.
        job_memory_limit: DuckDB's memory limit per materialization query; past it
            DuckDB spills to `spill_dir`.
        join_memory_limit: DuckDB's memory limit per historical retrieval.
        history_memory_limit: Bytes of history features one retrieval holds in memory;
            past it they are memory-mapped from a file under `spill_dir`.
        server_tls: TLS (and mTLS) of the gRPC port; None serves plaintext.
        server_insecure: Allow plaintext on an address other than loopback.
        ui_tls: How the console of `skewless serve --ui-port` reaches a TLS server
            (`ui`); None: the system roots, no client certificate.
        feature_log_flush_seconds: Seconds between writes of the feature log (at most
            this much of the log is lost if the server process crashes).
        feature_log_queue_calls: Most sampled calls waiting to be written; past it
            calls are dropped (and counted), never delayed.
        auth: Authentication of the gRPC port (`auth`); its mode `none` lets every caller in.
        offline_engine: Where historical retrieval runs: `duckdb` (in process, the
            default) or `spark` (see `spark`).
        spark: How to reach Spark when `offline_engine` is `spark`.
        event_loop: The server's asyncio event loop: `uvloop` (libuv, the default) or
            `asyncio` (the standard library's).

    The data dir's layout is owned here: `registry_path`, `offline_dir`, `jobs_dir`,
    `state_dir(view)`, `spill_dir`, `spark_stage_dir` and `embedded_redis_dir` (local
    paths), and
    `storage`, through which every part that may live on object storage is read and
    written (keys relative to the data dir: `registry.pb`, `offline/...`, `jobs/...`).
    """

    root: Path
    project: str
    data_dir: Path
    data_url: str | None = None
    object_store: ObjectStoreSettings | None = None
    redis_url: str | None = None
    redis_port: int = 0
    redis_cluster: bool = False
    redis_tls: RedisTLS | None = None
    server_host: str = "127.0.0.1"
    server_port: int = DEFAULT_SERVER_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    entity_source_roots: tuple[Path, ...] = ()
    job_memory_limit: str = "1GB"
    join_memory_limit: str = "1GB"
    history_memory_limit: int = 512 * 2**20
    server_tls: ServerTLS | None = None
    server_insecure: bool = False
    ui_tls: ConsoleTLS | None = None
    feature_log_flush_seconds: float = 5.0
    feature_log_queue_calls: int = 10_000
    auth: AuthConfig = field(default_factory=AuthConfig)
    event_loop: str = "uvloop"
    offline_engine: str = "duckdb"
    spark: SparkSettings | None = None

    @property
    def storage(self) -> DataStorage:
        """The data dir's storage: the local folder, or the object store at `data_url`."""
        return open_storage(self.data_dir, self.data_url, self.object_store)

    @property
    def data_location(self) -> str:
        """The data dir as shown to people: its folder, or `s3://bucket/prefix`."""
        return self.data_url or str(self.data_dir)

    @property
    def entity_roots(self) -> tuple[Path, ...]:
        """Folders entity-row sources may read: the configured ones, else the repository."""
        return self.entity_source_roots or (self.root,)

    def redacted(self, text: str) -> str:
        """Returns `text` without server paths, for messages that leave the server.

        Paths under the repository become relative to it, paths under the data dir
        start with `<data_dir>`, and any other absolute path becomes `<path>`.
        """
        known = {str(self.root) + os.sep: "", str(self.data_dir) + os.sep: "<data_dir>/"}
        if self.data_url is not None:
            known[self.data_url + "/"] = "<data_dir>/"
            known[self.data_url.removeprefix("s3://") + "/"] = "<data_dir>/"
        for prefix in sorted(known, key=len, reverse=True):
            text = text.replace(prefix, known[prefix])
        return _ABSOLUTE_PATH.sub("<path>", text)

    @property
    def registry_path(self) -> Path:
        """Where the applied registry is stored."""
        return self.data_dir / "registry.pb"

    @property
    def offline_dir(self) -> Path:
        """Root folder of the offline store (feature history)."""
        return self.data_dir / "offline"

    @property
    def jobs_dir(self) -> Path:
        """Where materialization job records are kept."""
        return self.data_dir / "jobs"

    def state_dir(self, view: str) -> Path:
        """Where a view's materialization state (lock, watermark) is kept."""
        return self.data_dir / "materialization" / view

    @property
    def spill_dir(self) -> Path:
        """Where DuckDB and history features spill past their memory limits."""
        return self.data_dir / "tmp" / "duckdb"

    @property
    def spark_stage_dir(self) -> Path:
        """Where a local Spark session's inputs are staged for the duration of a job."""
        return self.data_dir / "tmp" / "spark"

    @property
    def embedded_redis_dir(self) -> Path:
        """The data folder of the `redis-server` skewless starts when none is configured."""
        return self.data_dir / "redis"


def _section(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise DefinitionError(
            f"{path}: '{key}' must be a mapping, got {type(value).__name__}",
            reason="INVALID_CONFIG",
        )
    return value


def _port(value: Any, name: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise DefinitionError(
            f"{path}: '{name}' must be a port number 0-65535, got {value!r}",
            reason="INVALID_CONFIG",
        )
    return value


def _file_setting(
    section: dict[str, Any], key: str, prefix: str, root: Path, path: Path
) -> Path | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise DefinitionError(
            f"{path}: {prefix}.{key} must be a file path, got {value!r}", reason="INVALID_CONFIG"
        )
    return (root / Path(value).expanduser()).resolve()


def _tls_section(
    parent: dict[str, Any], prefix: str, keys: tuple[str, ...], root: Path, path: Path
) -> dict[str, Path | None] | None:
    raw = parent.get("tls")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DefinitionError(
            f"{path}: {prefix} must be a mapping of file paths, got {raw!r}",
            reason="INVALID_CONFIG",
        )
    unknown = set(raw) - set(keys)
    if unknown:
        raise DefinitionError(
            f"{path}: unknown setting(s) in {prefix}: {', '.join(sorted(map(str, unknown)))} "
            f"(expected {', '.join(keys)})",
            reason="INVALID_CONFIG",
        )
    return {key: _file_setting(raw, key, prefix, root, path) for key in keys}


def _server_tls(server: dict[str, Any], root: Path, path: Path) -> ServerTLS | None:
    files = _tls_section(
        server, "server.tls", ("cert_file", "key_file", "client_ca_file"), root, path
    )
    if files is None:
        return None
    cert, key = files["cert_file"], files["key_file"]
    if cert is None or key is None:
        raise DefinitionError(
            f"{path}: server.tls needs both cert_file and key_file (PEM files; "
            "client_ca_file is optional and turns on mutual TLS)",
            reason="INVALID_CONFIG",
        )
    return ServerTLS(cert_file=cert, key_file=key, client_ca_file=files["client_ca_file"])


_UI_KEYS = ("ca_file", "cert_file", "key_file", "server_name")


def _ui_tls(
    raw: dict[str, Any], tls: ServerTLS | None, root: Path, path: Path
) -> ConsoleTLS | None:
    ui = _section(raw, "ui", path)
    if not ui:
        return None
    unknown = set(ui) - set(_UI_KEYS)
    if unknown:
        raise DefinitionError(
            f"{path}: unknown setting(s) in ui: {', '.join(sorted(map(str, unknown)))} "
            f"(expected {', '.join(_UI_KEYS)})",
            reason="INVALID_CONFIG",
        )
    if tls is None:
        raise DefinitionError(
            f"{path}: the ui settings say how the console verifies a TLS server, but "
            "server.tls is not set (the console then reaches the server in plaintext over "
            "loopback): remove ui, or configure server.tls",
            reason="INVALID_CONFIG",
        )
    files = {key: _file_setting(ui, key, "ui", root, path) for key in _UI_KEYS[:3]}
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise DefinitionError(
            f"{path}: ui needs cert_file and key_file together (the console's client "
            "certificate and its key, for a server with server.tls.client_ca_file)",
            reason="INVALID_CONFIG",
        )
    name = ui.get("server_name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise DefinitionError(
            f"{path}: ui.server_name must be a host name in the server's certificate, got {name!r}",
            reason="INVALID_CONFIG",
        )
    return ConsoleTLS(
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        server_name=name.strip() if name else None,
    )


def _redis_tls(
    online: dict[str, Any], redis_url: str | None, root: Path, path: Path
) -> RedisTLS | None:
    files = _tls_section(
        online, "online_store.tls", ("ca_file", "cert_file", "key_file"), root, path
    )
    if files is None:
        return None
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise DefinitionError(
            f"{path}: online_store.tls needs cert_file and key_file together (a client "
            "certificate and its key), or neither",
            reason="INVALID_CONFIG",
        )
    if redis_url is None or not redis_url.startswith("rediss://"):
        raise DefinitionError(
            f"{path}: online_store.tls needs a rediss:// online_store.redis_url (TLS), "
            f"got {redis_url!r}",
            reason="INVALID_CONFIG",
        )
    return RedisTLS(
        ca_file=files["ca_file"], cert_file=files["cert_file"], key_file=files["key_file"]
    )


def _feature_log(server: dict[str, Any], path: Path) -> tuple[float, int]:
    """`server.feature_log: {flush_interval: 5, queue_calls: 10000}` (seconds, calls)."""
    raw = _section(server, "feature_log", path)
    unknown = set(raw) - {"flush_interval", "queue_calls"}
    flush = raw.get("flush_interval", 5.0)
    queue = raw.get("queue_calls", 10_000)
    if (
        unknown
        or isinstance(flush, bool)
        or not isinstance(flush, (int, float))
        or not 0 < flush <= 3600
        or isinstance(queue, bool)
        or not isinstance(queue, int)
        or queue < 1
    ):
        raise DefinitionError(
            f"{path}: server.feature_log takes flush_interval (seconds, up to 3600) and "
            f"queue_calls (at least 1), got {raw!r:.200}",
            reason="INVALID_CONFIG",
        )
    return float(flush), queue


_OBJECT_STORE_KEYS = (
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "allow_http",
)


def _object_store(
    raw: dict[str, Any], path: Path, data_url: str | None
) -> ObjectStoreSettings | None:
    """`object_store: {endpoint_url, region, ...}` over the AWS_* environment variables."""
    section = _section(raw, "object_store", path)
    unknown = set(section) - set(_OBJECT_STORE_KEYS)
    if unknown:
        raise DefinitionError(
            f"{path}: unknown setting(s) in object_store: {', '.join(sorted(map(str, unknown)))} "
            f"(expected {', '.join(_OBJECT_STORE_KEYS)})",
            reason="INVALID_CONFIG",
        )
    if data_url is None:
        if section:
            raise DefinitionError(
                f"{path}: object_store is set but data_dir is not an s3://bucket/prefix URL",
                reason="INVALID_CONFIG",
            )
        return None
    for key, value in section.items():
        wanted = bool if key == "allow_http" else str
        if value is not None and not isinstance(value, wanted):
            raise DefinitionError(
                f"{path}: object_store.{key} must be a {wanted.__name__}",
                reason="INVALID_CONFIG",
            )
    env = ObjectStoreSettings.from_env()
    settings = ObjectStoreSettings(
        endpoint_url=section.get("endpoint_url") or env.endpoint_url,
        region=section.get("region") or env.region,
        access_key_id=section.get("access_key_id") or env.access_key_id,
        secret_access_key=section.get("secret_access_key") or env.secret_access_key,
        session_token=section.get("session_token") or env.session_token,
        allow_http=bool(section.get("allow_http", env.allow_http)),
    )
    if settings.endpoint_url is not None and not settings.endpoint_url.startswith(
        ("http://", "https://")
    ):
        raise DefinitionError(
            f"{path}: object_store.endpoint_url must be an http:// or https:// URL",
            reason="INVALID_CONFIG",
        )
    if settings.http and not (settings.allow_http or settings.loopback):
        raise DefinitionError(
            f"{path}: object_store.endpoint_url is plain http on another machine: use "
            "https, or set object_store.allow_http: true (or AWS_ALLOW_HTTP=true)",
            reason="INVALID_CONFIG",
        )
    return settings


def _offline(raw: dict[str, Any], path: Path) -> tuple[str, SparkSettings | None]:
    """`offline: {engine: duckdb | spark, spark: {remote | master, conf, python}}`."""
    offline = _section(raw, "offline", path)
    unknown = set(offline) - {"engine", "spark"}
    if unknown:
        raise DefinitionError(
            f"{path}: unknown setting(s) in offline: {', '.join(sorted(map(str, unknown)))} "
            "(expected engine, spark)",
            reason="INVALID_CONFIG",
        )
    engine = offline.get("engine", "duckdb")
    if engine not in OFFLINE_ENGINES:
        raise DefinitionError(
            f"{path}: offline.engine must be one of {', '.join(OFFLINE_ENGINES)}, "
            f"got {engine!r:.80}",
            reason="INVALID_CONFIG",
        )
    if "spark" not in offline:
        return engine, SparkSettings() if engine == "spark" else None
    spark = _section(offline, "spark", path)
    unknown = set(spark) - {"remote", "master", "conf", "python"}
    if unknown:
        raise DefinitionError(
            f"{path}: unknown setting(s) in offline.spark: {', '.join(sorted(map(str, unknown)))} "
            "(expected remote, master, conf, python)",
            reason="INVALID_CONFIG",
        )
    remote, master, python = spark.get("remote"), spark.get("master"), spark.get("python")
    if remote is not None and not (isinstance(remote, str) and remote.startswith("sc://")):
        raise DefinitionError(
            f"{path}: offline.spark.remote must be a Spark Connect URL sc://HOST:PORT, "
            f"got {remote!r:.80}",
            reason="INVALID_CONFIG",
        )
    if master is not None and not (isinstance(master, str) and master):
        raise DefinitionError(
            f"{path}: offline.spark.master must be a Spark master such as local[2], "
            f"got {master!r:.80}",
            reason="INVALID_CONFIG",
        )
    if remote is not None and master is not None:
        raise DefinitionError(
            f"{path}: offline.spark takes remote (a Spark Connect cluster) or master (a "
            "session skewless starts), not both",
            reason="INVALID_CONFIG",
        )
    if python is not None and not (isinstance(python, str) and python):
        raise DefinitionError(
            f"{path}: offline.spark.python must be an interpreter path, got {python!r:.80}",
            reason="INVALID_CONFIG",
        )
    conf = spark.get("conf") or {}
    if not isinstance(conf, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in conf.items()
    ):
        raise DefinitionError(
            f"{path}: offline.spark.conf must map Spark setting names to values, got {conf!r:.120}",
            reason="INVALID_CONFIG",
        )
    pairs = tuple(
        (k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in sorted(conf.items())
    )
    return engine, SparkSettings(remote=remote, master=master, conf=pairs, python=python)


def load_repo_config(repo: str | Path) -> RepoConfig:
    """Reads `skewless.yaml` from a repository folder.

    Args:
        repo: The repository folder (or the path of its `skewless.yaml`).

    Returns:
        The validated configuration with absolute paths.

    Raises:
        DefinitionError: The file is missing or holds an invalid setting.

    """
    path = Path(repo).resolve()
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        folder = path.parent if path.name == CONFIG_FILE else path
        raise DefinitionError(
            f"{folder} has no {CONFIG_FILE}, so it is not a feature repository: run the "
            "command in the repository's folder or pass that folder (e.g. `skewless apply "
            "PATH`), or create one with `skewless init`",
            reason="INVALID_CONFIG",
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}", reason="INVALID_CONFIG") from exc
    if not isinstance(raw, dict):
        raise DefinitionError(
            f"{path}: expected a mapping at the top level", reason="INVALID_CONFIG"
        )
    unknown = set(raw) - {
        "project",
        "data_dir",
        "object_store",
        "online_store",
        "server",
        "auth",
        "ui",
        "offline",
    }
    if unknown:
        raise DefinitionError(
            f"{path}: unknown setting(s): {', '.join(sorted(unknown))}", reason="INVALID_CONFIG"
        )
    project = raw.get("project")
    if not isinstance(project, str) or not is_identifier(project):
        raise DefinitionError(
            f"{path}: 'project' must be a name of {IDENTIFIER_RULE}, got {project!r}",
            reason="INVALID_CONFIG",
        )
    root = path.parent
    data_setting = raw.get("data_dir") or ".skewless"
    if not isinstance(data_setting, str):
        raise DefinitionError(
            f"{path}: 'data_dir' must be a folder or an s3://bucket/prefix URL, "
            f"got {data_setting!r:.80}",
            reason="INVALID_CONFIG",
        )
    data_url: str | None = None
    if is_object_store_url(data_setting):
        try:
            data_url = parse_s3_url(data_setting).url
        except ValueError as exc:
            raise DefinitionError(
                f"{path}: data_dir {data_setting!r:.80}: {exc}", reason="INVALID_CONFIG"
            ) from None
        data_dir = root / ".skewless"  # the local parts: spill files, the embedded Redis
    else:
        data_dir = Path(data_setting)
        if not data_dir.is_absolute():
            data_dir = root / data_dir
    object_store = _object_store(raw, path, data_url)
    online = _section(raw, "online_store", path)
    server = _section(raw, "server", path)
    redis_url = online.get("redis_url")
    if redis_url is not None and not (
        isinstance(redis_url, str) and redis_url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise DefinitionError(
            f"{path}: online_store.redis_url must be a redis://, rediss:// or unix:// URL "
            f"or null, got {redis_url!r}",
            reason="INVALID_CONFIG",
        )
    roots = server.get("entity_source_roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise DefinitionError(
            f"{path}: server.entity_source_roots must be a list of folder paths, got {roots!r}",
            reason="INVALID_CONFIG",
        )
    host = server.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise DefinitionError(
            f"{path}: server.host must be an address to bind, got {host!r}", reason="INVALID_CONFIG"
        )
    insecure = server.get("insecure", False)
    if not isinstance(insecure, bool):
        raise DefinitionError(
            f"{path}: server.insecure must be true or false, got {insecure!r}",
            reason="INVALID_CONFIG",
        )
    flush, queue = _feature_log(server, path)
    engine, spark = _offline(raw, path)
    if engine == "spark" and data_url is not None:
        raise DefinitionError(
            f"{path}: offline.engine spark reads the history from a local data dir; with an "
            "s3:// data_dir use the duckdb engine",
            reason="INVALID_CONFIG",
        )
    server_tls = _server_tls(server, root, path)
    event_loop = server.get("event_loop", "uvloop")
    if event_loop not in EVENT_LOOPS:
        raise DefinitionError(
            f"{path}: server.event_loop must be one of {', '.join(EVENT_LOOPS)}, "
            f"got {event_loop!r:.100}",
            reason="INVALID_CONFIG",
        )
    return RepoConfig(
        event_loop=event_loop,
        feature_log_flush_seconds=flush,
        feature_log_queue_calls=queue,
        root=root,
        project=project,
        data_dir=data_dir.resolve(),
        data_url=data_url,
        object_store=object_store,
        redis_url=redis_url,
        redis_port=_port(online.get("port", 0), "online_store.port", path),
        redis_cluster=bool(online.get("cluster", False)),
        redis_tls=_redis_tls(online, redis_url, root, path),
        server_host=host,
        server_port=_port(server.get("port", DEFAULT_SERVER_PORT), "server.port", path),
        metrics_port=_port(
            server.get("metrics_port", DEFAULT_METRICS_PORT), "server.metrics_port", path
        ),
        entity_source_roots=tuple((root / Path(r).expanduser()).resolve() for r in roots),
        server_tls=server_tls,
        server_insecure=insecure,
        ui_tls=_ui_tls(raw, server_tls, root, path),
        auth=parse_auth_section(
            raw.get("auth"),
            root=root,
            path=path,
            mutual_tls=server_tls is not None and server_tls.mutual,
        ),
        offline_engine=engine,
        spark=spark,
    )
