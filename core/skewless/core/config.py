"""The feature repository's project configuration (`skewless.yaml`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skewless.core.errors import DefinitionError

__all__ = ["CONFIG_FILE", "DEFAULT_SERVER_PORT", "RepoConfig", "load_repo_config"]

CONFIG_FILE = "skewless.yaml"
DEFAULT_SERVER_PORT = 6566
DEFAULT_METRICS_PORT = 9464
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class RepoConfig:
    """Settings of one feature repository.

    Attributes:
        root: Absolute path of the repository folder.
        project: Project name; namespaces registry, offline and online data.
        data_dir: Absolute path holding the registry, the offline store and the
            embedded Redis data.
        redis_url: URL of an existing Redis; None makes `skewless serve` start its own.
        redis_port: Port for the embedded Redis; 0 picks a free one.
        redis_cluster: Whether `redis_url` points at a Redis Cluster.
        server_host: Address the gRPC server binds.
        server_port: Port the gRPC server binds; 0 picks a free one.
        metrics_port: Port of the Prometheus endpoint; 0 disables it.
        entity_source_roots: Folders whose files historical retrieval may read as
            entity rows (`path` and `sql` sources); empty means the repository folder.

    """

    root: Path
    project: str
    data_dir: Path
    redis_url: str | None = None
    redis_port: int = 0
    redis_cluster: bool = False
    server_host: str = "127.0.0.1"
    server_port: int = DEFAULT_SERVER_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    entity_source_roots: tuple[Path, ...] = ()

    @property
    def entity_roots(self) -> tuple[Path, ...]:
        """Folders entity-row sources may read: the configured ones, else the repository."""
        return self.entity_source_roots or (self.root,)

    @property
    def registry_path(self) -> Path:
        """Where the applied registry is stored."""
        return self.data_dir / "registry.pb"

    @property
    def offline_dir(self) -> Path:
        """Root folder of the offline store (feature history)."""
        return self.data_dir / "offline"


def _section(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise DefinitionError(f"{path}: '{key}' must be a mapping, got {type(value).__name__}")
    return value


def _port(value: Any, name: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise DefinitionError(f"{path}: '{name}' must be a port number 0-65535, got {value!r}")
    return value


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
        raise DefinitionError(f"{path}: no {CONFIG_FILE} here; is this a feature repository?")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - {"project", "data_dir", "online_store", "server"}
    if unknown:
        raise DefinitionError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    project = raw.get("project")
    if not isinstance(project, str) or not _PROJECT_RE.match(project):
        raise DefinitionError(
            f"{path}: 'project' must be a lower_snake_case name (letters, digits, _), "
            f"got {project!r}"
        )
    root = path.parent
    data_dir = Path(raw.get("data_dir") or ".skewless")
    if not data_dir.is_absolute():
        data_dir = root / data_dir
    online = _section(raw, "online_store", path)
    server = _section(raw, "server", path)
    redis_url = online.get("redis_url")
    if redis_url is not None and not (
        isinstance(redis_url, str) and redis_url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise DefinitionError(
            f"{path}: online_store.redis_url must be a redis://, rediss:// or unix:// URL "
            f"or null, got {redis_url!r}"
        )
    roots = server.get("entity_source_roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise DefinitionError(
            f"{path}: server.entity_source_roots must be a list of folder paths, got {roots!r}"
        )
    return RepoConfig(
        root=root,
        project=project,
        data_dir=data_dir.resolve(),
        redis_url=redis_url,
        redis_port=_port(online.get("port", 0), "online_store.port", path),
        redis_cluster=bool(online.get("cluster", False)),
        server_host=str(server.get("host", "127.0.0.1")),
        server_port=_port(server.get("port", DEFAULT_SERVER_PORT), "server.port", path),
        metrics_port=_port(
            server.get("metrics_port", DEFAULT_METRICS_PORT), "server.metrics_port", path
        ),
        entity_source_roots=tuple((root / Path(r).expanduser()).resolve() for r in roots),
    )
