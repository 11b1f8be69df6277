"""Historical retrieval without gRPC: check, prune and start the point-in-time join.

The server's `HistoricalService` streams what `start_retrieval` returns; everything
between a resolved `FeaturePlan` plus entity rows and the running join is here:
every requested view must have history (FAILED_PRECONDITION otherwise), the entity
rows are validated (`skewless.offline.entity_rows`), each view's committed files are
pruned to those that can hold a candidate for the label time range, and the join runs
with the repository's memory limits.
"""

from __future__ import annotations

import pyarrow as pa

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError
from skewless.offline.entity_rows import label_time_range, label_times, validate_entity_schema
from skewless.offline.history_index import ViewHistory
from skewless.offline.offline_store import history_files
from skewless.offline.point_in_time import PointInTimeJoin, point_in_time_join
from skewless.registry.feature_refs import FeaturePlan

__all__ = ["check_history", "start_retrieval", "view_histories"]


def check_history(config: RepoConfig, plan: FeaturePlan) -> None:
    """Refuses a plan with a view that has no offline history yet.

    Raises:
        FailedPreconditionError: `NOT_MATERIALIZED`, naming the view.

    """
    for view in plan.views:
        if not history_files(config, view.storage_name):
            raise FailedPreconditionError(
                f"feature view {view.name!r} has no offline history yet; run "
                "`skewless materialize` (or push rows) for it first",
                reason="NOT_MATERIALIZED",
                metadata={"feature_view": view.name},
            )


def view_histories(
    config: RepoConfig, plan: FeaturePlan, labels: pa.ChunkedArray
) -> list[ViewHistory]:
    """Each view's committed files that may hold a candidate for these label times."""
    span = label_time_range(labels)
    histories = []
    for view in plan.views:
        if span is None:
            files = []
        else:
            start = span[0] - view.ttl_micros if view.ttl_micros else None
            files = history_files(config, view.storage_name, start=start, end=span[1] + 1)
        histories.append(ViewHistory(view, tuple(files)))
    return histories


def start_retrieval(
    config: RepoConfig,
    plan: FeaturePlan,
    entity_rows: pa.Table,
    *,
    label_time_column: str,
    batch_rows: int,
    entity_columns: bool = True,
) -> PointInTimeJoin:
    """Validates the entity rows and starts their point-in-time join (reading runs it).

    Raises:
        InvalidArgumentError: The entity rows lack a column, have unusable types, or
            null or out-of-range label times.

    """
    validate_entity_schema(entity_rows.schema, plan, label_time_column)
    histories = view_histories(config, plan, label_times(entity_rows, label_time_column))
    return point_in_time_join(
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
