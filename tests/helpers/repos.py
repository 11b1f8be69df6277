"""Small feature repositories built with the definitions API (never by hand-built protos)."""

from __future__ import annotations

from pathlib import Path

from skewless.core.config import RepoConfig
from skewless.registry import (
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    PushSource,
    RepoDefinitions,
)
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import registry_pb2

__all__ = ["live_definitions", "repo_config", "save_registry"]


def repo_config(root: Path, project: str, redis_url: str | None, **changes: object) -> RepoConfig:
    """A repository folder with its config (no `skewless.yaml` needed): port 0, no metrics."""
    root.mkdir(parents=True, exist_ok=True)
    fields: dict[str, object] = {
        "root": root,
        "project": project,
        "data_dir": root / ".skewless",
        "redis_url": redis_url,
        "server_port": 0,
        "metrics_port": 0,
        **changes,
    }
    return RepoConfig(**fields)  # type: ignore[arg-type]


def live_definitions() -> RepoDefinitions:
    """A push-fed repository: `driver_live` (no TTL) and `driver_recent` (1 h TTL).

    Both read the push source `driver_push` (event time `ts`, created time `created`) and
    are kept online and offline; the feature service `live` serves `driver_live` whole.
    """
    driver = Entity(name="driver", join_keys=("driver_id",), value_type="INT64")
    source = PushSource(name="driver_push", timestamp_field="ts", created_timestamp_field="created")
    features = (
        Feature("conv_rate", "FLOAT64"),
        Feature("trips", "INT64"),
        Feature("note", "STRING"),
    )
    live = FeatureView(name="driver_live", entities=(driver,), source=source, features=features)
    recent = FeatureView(
        name="driver_recent", entities=(driver,), source=source, features=features, ttl="1h"
    )
    return RepoDefinitions(
        feature_views=(live, recent),
        feature_services=(FeatureService(name="live", features=("driver_live",)),),
    )


def save_registry(config: RepoConfig, definitions: RepoDefinitions) -> registry_pb2.Registry:
    """Stores the definitions as the repository's registry and returns it."""
    return RegistryStore(config.storage).save(definitions.to_registry(config.project)).registry
