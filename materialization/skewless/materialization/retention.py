"""Offline retention on a schedule: views with `offline_retention` lose older history.

The server that runs schedules sweeps every `interval` (an hour by default): for each
view with an `offline_retention`, the files whose rows are all older than it leave the
view's offline table in one Delta commit (`skewless.offline.maintenance.apply_retention`);
a later `skewless vacuum` deletes them from storage.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError
from skewless.core.names import storage_name
from skewless.materialization.schedule import RegistrySource
from skewless.offline.maintenance import MaintenanceResult, apply_retention
from skewless.v1 import registry_pb2

__all__ = ["run_retention", "sweep_retention"]

_log = logging.getLogger(__name__)


def sweep_retention(
    config: RepoConfig, registry: registry_pb2.Registry, *, now: datetime | None = None
) -> list[MaintenanceResult]:
    """Applies every view's `offline_retention` once; returns what each removed."""
    out = []
    for view in registry.feature_views:
        if not view.offline or not view.HasField("offline_retention"):
            continue
        retention = view.offline_retention.ToTimedelta()
        if retention.total_seconds() <= 0:
            continue
        table = storage_name(view.name, view.generation)  # the current generation's
        out.append(apply_retention(config, table, retention, now=now or datetime.now(UTC)))
    return out


async def run_retention(
    config: RepoConfig, registry_holder: RegistrySource, *, interval: float = 3600.0
) -> None:
    """Sweeps retention every `interval` seconds, forever (cancel the task to stop)."""
    while True:
        try:
            registry: registry_pb2.Registry | None = registry_holder.current
        except FailedPreconditionError:
            registry = None
        if registry is not None:
            try:
                for result in await asyncio.to_thread(sweep_retention, config, registry):
                    if result.files_removed:
                        _log.info(
                            "offline retention of %s removed %d file(s) (version %s)",
                            result.view,
                            result.files_removed,
                            result.version,
                        )
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("offline retention sweep failed")
        await asyncio.sleep(interval)
