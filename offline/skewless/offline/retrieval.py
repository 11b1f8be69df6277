"""Historical retrieval without gRPC: check, prune and start the point-in-time join.

The server's `HistoricalService` streams what `start_retrieval` returns; everything
between a resolved `FeaturePlan` plus entity rows and the running join is here:
every requested view must have history (FAILED_PRECONDITION otherwise), the entity
rows are validated (`skewless.offline.entity_rows`), each view's committed files are
pruned to those that can hold a candidate for the label time range, and the join runs
with the repository's memory limits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

import pyarrow as pa

from skewless.core.config import RepoConfig, SparkSettings
from skewless.core.errors import FailedPreconditionError, InvalidArgumentError, quoted
from skewless.offline.delta_log import storage_errors
from skewless.offline.entity_rows import label_time_range, label_times, validate_entity_schema
from skewless.offline.history_index import ViewHistory
from skewless.offline.offline_store import Snapshot, read_snapshot, snapshot_files
from skewless.offline.point_in_time import PointInTimeJoin, point_in_time_join
from skewless.registry.feature_refs import FeaturePlan

__all__ = [
    "HistoricalJoin",
    "check_history",
    "read_snapshots",
    "start_join",
    "start_retrieval",
    "view_histories",
]


class HistoricalJoin(Protocol):
    """A running point-in-time join of either engine (DuckDB or Spark).

    Attributes:
        schema: The result schema.
        reader: The result as record batches, in input order (reading runs the join).
        num_rows: The number of result rows (the number of entity rows).

    """

    schema: pa.Schema
    reader: pa.RecordBatchReader
    num_rows: int

    def cancel(self) -> None:
        """Stops the join at its next step (safe to call from another thread)."""

    def close(self) -> None:
        """Stops the join and releases what it holds."""


def check_history(config: RepoConfig, plan: FeaturePlan) -> None:
    """Refuses a plan with a view that has no offline history yet.

    Raises:
        FailedPreconditionError: `NOT_MATERIALIZED`, naming the view.

    """
    read_snapshots(config, plan)


def read_snapshots(
    config: RepoConfig,
    plan: FeaturePlan,
    *,
    versions: Mapping[str, int] | None = None,
    as_of: datetime | None = None,
) -> dict[str, Snapshot]:
    """The snapshot each view is read at: pinned in `versions`, as of `as_of`, or latest.

    Raises:
        InvalidArgumentError: `BAD_OFFLINE_VERSION`: a pin for a view the plan does not
            read, or a negative version.
        NotFoundError: `OFFLINE_VERSION_NOT_FOUND` (see `read_snapshot`).
        FailedPreconditionError: `NOT_MATERIALIZED`: a view without history (at that
            version); `OFFLINE_VERSION_VACUUMED`: a pinned version's files are gone.

    """
    pins = dict(versions or {})
    names = {v.name for v in plan.views}
    for name, version in pins.items():
        if name not in names or version < 0:
            raise InvalidArgumentError(
                f"offline version {version} for feature view {quoted(name)}: "
                + ("the query does not read that view" if name not in names else "negative"),
                field="query.offline_versions",
                reason="BAD_OFFLINE_VERSION",
                metadata={"feature_view": name},
            )
    snapshots = {}
    for view in plan.views:
        pinned = view.name in pins or as_of is not None
        snapshot = read_snapshot(
            config, view.storage_name, version=pins.get(view.name), as_of=as_of
        )
        if pinned and snapshot is not None:
            _check_not_vacuumed(view.name, snapshot)
        if snapshot is None or not snapshot.files:
            raise FailedPreconditionError(
                f"feature view {view.name!r} has no offline history yet; run "
                "`skewless materialize` (or push rows) for it first",
                reason="NOT_MATERIALIZED",
                metadata={"feature_view": view.name},
            )
        snapshots[view.name] = snapshot
    return snapshots


def _check_not_vacuumed(view: str, snapshot: Snapshot) -> None:
    root = snapshot.root
    if root.is_local:
        missing = any(not os.path.exists(root.path(e.path)) for e in snapshot.files)
    else:  # one listing instead of a request per file
        with storage_errors(root):
            present = {f.key for f in root.storage.list_files(root.key, recursive=True)}
        missing = any(f"{root.key}/{e.path}" not in present for e in snapshot.files)
    if missing:
        raise FailedPreconditionError(
            f"offline version {snapshot.version} of feature view {view!r} can no longer "
            "be read: `skewless vacuum` removed its files; pin a newer version",
            reason="OFFLINE_VERSION_VACUUMED",
            metadata={"feature_view": view, "version": str(snapshot.version)},
        )


def view_histories(
    config: RepoConfig,
    plan: FeaturePlan,
    labels: pa.ChunkedArray,
    snapshots: dict[str, Snapshot] | None = None,
) -> list[ViewHistory]:
    """Each view's committed files that may hold a candidate for these label times.

    Reads each view's latest snapshot unless `snapshots` gives the one to read.
    """
    span = label_time_range(labels)
    histories = []
    for view in plan.views:
        snapshot = (
            snapshots[view.name]
            if snapshots is not None and view.name in snapshots
            else read_snapshot(config, view.storage_name)
        )
        if span is None:
            files = []
        else:
            start = span[0] - view.ttl_micros if view.ttl_micros else None
            files = snapshot_files(snapshot, start=start, end=span[1] + 1)
        version = snapshot.version if snapshot is not None else None
        remote = None if snapshot is None or snapshot.root.is_local else snapshot.root.filesystem
        histories.append(ViewHistory(view, tuple(files), version=version, filesystem=remote))
    return histories


def start_retrieval(
    config: RepoConfig,
    plan: FeaturePlan,
    entity_rows: pa.Table,
    *,
    label_time_column: str,
    batch_rows: int,
    entity_columns: bool = True,
    snapshots: dict[str, Snapshot] | None = None,
) -> HistoricalJoin:
    """Validates the entity rows and starts their point-in-time join (reading runs it).

    The join runs on the repository's offline engine (`offline.engine`).

    Raises:
        InvalidArgumentError: The entity rows lack a column, have unusable types, or
            null or out-of-range label times.
        FailedPreconditionError: `SPARK_NOT_INSTALLED` (Spark engine without PySpark).
        StoreUnavailableError: `SPARK_UNAVAILABLE`: Spark cannot be reached.

    """
    validate_entity_schema(entity_rows.schema, plan, label_time_column)
    histories = view_histories(config, plan, label_times(entity_rows, label_time_column), snapshots)
    return start_join(
        config,
        entity_rows,
        plan,
        histories,
        label_time_column=label_time_column,
        batch_rows=batch_rows,
        entity_columns=entity_columns,
    )


def start_join(
    config: RepoConfig,
    entity_rows: pa.Table,
    plan: FeaturePlan,
    histories: Sequence[ViewHistory],
    *,
    label_time_column: str,
    batch_rows: int,
    entity_columns: bool = True,
) -> HistoricalJoin:
    """Starts the join of entity rows against these histories on the configured engine."""
    if config.offline_engine == "spark":
        # Imported here: PySpark is optional, and only this engine needs it.
        from skewless.offline.spark_join import spark_point_in_time_join
        from skewless.offline.spark_session import spark_session

        settings = config.spark or SparkSettings()
        return spark_point_in_time_join(
            spark_session(settings),
            entity_rows,
            plan,
            histories,
            target=settings.target,
            label_time_column=label_time_column,
            batch_rows=batch_rows,
            entity_columns=entity_columns,
            stage_dir=config.spark_stage_dir,
        )
    join: PointInTimeJoin = point_in_time_join(
        entity_rows,
        plan,
        histories,
        label_time_column=label_time_column,
        batch_rows=batch_rows,
        memory_limit=config.join_memory_limit,
        history_memory_limit=config.history_memory_limit,
        entity_columns=entity_columns,
        temp_directory=config.spill_dir,
    )
    return join
