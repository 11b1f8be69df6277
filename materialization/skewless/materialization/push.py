"""Pushes: rows from stream processors written to both stores, or to neither.

`push_rows` validates the rows against every target view before any store is touched
(`skewless.offline.push.prepare_push`: types, nulls, the range of instants), stages
the offline history files, writes Redis, and only then commits the history:

* a refused push writes nothing;
* Redis failing (down, LOADING, ...) discards the staged files: nothing is written. On a
  single Redis the online write of every target view is one MULTI/EXEC transaction, so
  it lands whole or not at all; Redis Cluster has no transactions across nodes, so there
  a failed push may have reached some nodes, and retrying it is safe (the
  compare-and-set is idempotent);
* the commit that follows is a local rename and manifest write; should it fail (a full
  disk), the call fails with UNAVAILABLE and the rows are online only until the push is
  retried (retrying is safe: the online write is idempotent and the history is
  appended once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pyarrow as pa

from skewless.core.config import RepoConfig
from skewless.core.errors import StoreUnavailableError
from skewless.offline.push import (
    PreparedPush,
    commit_history,
    discard_history,
    prepare_push,
    stage_history,
)
from skewless.online.layout import online_expiry
from skewless.online.writer import AsyncOnlineWriter, prepare_rows
from skewless.v1 import registry_pb2

__all__ = ["PushResult", "push_rows"]


@dataclass(frozen=True)
class PushResult:
    """What a push wrote.

    Attributes:
        row_count: Rows accepted.
        online_rows_written: Online values replaced (rows older than the stored ones are not).
        offline_rows_written: Rows appended to the history, over all views.

    """

    row_count: int
    online_rows_written: int
    offline_rows_written: int


def _offline_unavailable(doing: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"the offline store could not {doing}; retrying the push is safe",
        reason="OFFLINE_STORE_UNAVAILABLE",
    )


async def _write_online(
    config: RepoConfig, prepared: PreparedPush, writer: AsyncOnlineWriter
) -> int:
    items = [
        (
            prepare_rows(
                config.project,
                item.plan.storage_name,
                item.table,
                join_keys=item.plan.key_names,
                features=item.plan.features,
            ),
            online_expiry(item.plan.view),
        )
        for item in prepared.views
        if item.plan.view.online
    ]
    return await writer.write_atomically(items)


async def push_rows(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    writer: AsyncOnlineWriter,
    table: pa.Table,
    *,
    push_source: str = "",
    feature_view: str = "",
    online: bool = True,
    offline: bool = True,
) -> PushResult:
    """Validates pushed rows and writes them to the online and/or offline store.

    Args:
        config: The repository.
        registry: The registry in force.
        writer: The online writer.
        table: The pushed rows.
        push_source: The push source to push to (or give `feature_view`).
        feature_view: The one feature view to push to.
        online: Write the online store (views with `online: true`).
        offline: Append to the history (views with `offline: true`).

    Raises:
        InvalidArgumentError: The rows do not fit the target views (nothing written).
        NotFoundError: Unknown push source or view (nothing written).
        StoreUnavailableError: A store could not be written (see the module docstring).

    """
    prepared = await asyncio.to_thread(
        prepare_push, registry, table, push_source=push_source, feature_view=feature_view
    )
    staged = None
    if offline:
        try:
            staged = await asyncio.to_thread(stage_history, config, prepared)
        except OSError as exc:
            raise _offline_unavailable("stage the rows") from exc
    try:
        online_written = await _write_online(config, prepared, writer) if online else 0
    except BaseException:
        if staged is not None:
            await asyncio.to_thread(discard_history, staged)
        raise
    offline_written = 0
    if staged is not None:
        try:
            offline_written = await asyncio.to_thread(commit_history, config, staged)
        except OSError as exc:
            await asyncio.to_thread(discard_history, staged)
            raise _offline_unavailable("commit the rows (they are online already)") from exc
    return PushResult(
        row_count=prepared.row_count,
        online_rows_written=online_written,
        offline_rows_written=offline_written,
    )
