"""Push: rows from stream processors, validated, then written to both stores.

A push names a push source (its rows reach every feature view reading it) or one
feature view, and carries an Arrow IPC stream with the join keys, the source's
timestamp field, optionally its created timestamp field, and the features. Every view's
columns are checked before anything is written (`prepare_push`): a missing column, a
type that cannot hold the declared type exactly, a null join key or a null event time
is refused with `InvalidArgumentError` naming the row and the column. Accepted rows are
written to Redis under the same compare-and-set rule as materialization, then appended
to each view's history (`append_history`), so training sees what was served.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, NotFoundError
from skewless.core.types import arrow_type, value_type_name, value_type_of_arrow
from skewless.offline.offline_store import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    ORIGIN_PUSH,
    HistoryWriter,
    commit_append,
)
from skewless.offline.window_query import ViewPlan, plan_view
from skewless.v1 import registry_pb2, types_pb2

__all__ = ["PreparedPush", "ViewRows", "append_history", "prepare_push", "read_ipc_stream"]

VT = types_pb2.ValueType
_WIDENINGS = {
    (VT.VALUE_TYPE_INT32, VT.VALUE_TYPE_INT64),
    (VT.VALUE_TYPE_FLOAT32, VT.VALUE_TYPE_FLOAT64),
    (VT.VALUE_TYPE_INT32_LIST, VT.VALUE_TYPE_INT64_LIST),
    (VT.VALUE_TYPE_FLOAT32_LIST, VT.VALUE_TYPE_FLOAT64_LIST),
}


@dataclass(frozen=True)
class ViewRows:
    """Validated rows of one view, in its history schema."""

    plan: ViewPlan
    table: pa.Table


@dataclass(frozen=True)
class PreparedPush:
    """A validated push: the rows for every target view.

    Attributes:
        views: One entry per target view.
        row_count: Rows in the push.

    """

    views: tuple[ViewRows, ...]
    row_count: int


def read_ipc_stream(data: bytes) -> pa.Table:
    """Parses an Arrow IPC stream.

    Raises:
        InvalidArgumentError: The bytes are not an Arrow IPC stream.

    """
    if not data:
        raise InvalidArgumentError(
            "arrow_ipc_stream is empty; send an Arrow IPC stream (schema, then record batches)",
            field="arrow_ipc_stream",
        )
    try:
        with pa.ipc.open_stream(data) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise InvalidArgumentError(
            f"arrow_ipc_stream is not a valid Arrow IPC stream: {exc}",
            field="arrow_ipc_stream",
            reason="INVALID_ARROW_STREAM",
        ) from exc


def _targets(
    registry: registry_pb2.Registry, push_source: str, feature_view: str
) -> list[ViewPlan]:
    if feature_view:
        return [plan_view(registry, feature_view)]
    if not push_source:
        raise InvalidArgumentError(
            "name a push_source or a feature_view to push to", field="target"
        )
    source = next((s for s in registry.data_sources if s.name == push_source), None)
    if source is None or source.WhichOneof("kind") != "push":
        known = ", ".join(
            sorted(s.name for s in registry.data_sources if s.WhichOneof("kind") == "push")
        )
        raise NotFoundError(
            f"{push_source!r} is not a registered push source (push sources: {known or 'none'})",
            reason="PUSH_SOURCE_NOT_FOUND",
            metadata={"push_source": push_source},
        )
    views = [plan_view(registry, v.name) for v in registry.feature_views if v.source == push_source]
    if not views:
        raise NotFoundError(
            f"no feature view reads push source {push_source!r}; nothing would store its rows",
            reason="PUSH_SOURCE_UNUSED",
            metadata={"push_source": push_source},
        )
    return views


def _refuse(message: str, column: str, **metadata: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        message,
        field=f"arrow_ipc_stream.{column}",
        reason="INVALID_PUSH_ROWS",
        metadata={"column": column, **metadata},
    )


def _first_null(column: pa.ChunkedArray) -> int | None:
    if column.null_count == 0:
        return None
    return int(pc.index(pc.is_null(column), True).as_py())


def _column(table: pa.Table, name: str, value_type: int, view: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise _refuse(
            f"column {name!r} is missing: feature view {view!r} needs it "
            f"(the stream has: {', '.join(table.column_names)})",
            name,
            feature_view=view,
        )
    column = table.column(name)
    if pa.types.is_null(column.type):
        return pa.chunked_array([pa.nulls(len(column), arrow_type(value_type))])
    actual = value_type_of_arrow(column.type)
    if actual != value_type and (actual, value_type) not in _WIDENINGS:
        raise _refuse(
            f"column {name!r} has Arrow type {column.type}, but feature view {view!r} "
            f"declares {value_type_name(value_type)}",
            name,
            feature_view=view,
            expected=value_type_name(value_type),
            actual=str(column.type),
        )
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        column = pc.assume_timezone(column, "UTC")
    try:
        return column.cast(arrow_type(value_type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _refuse(
            f"column {name!r} cannot be stored as {value_type_name(value_type)}: {exc}",
            name,
            feature_view=view,
        ) from exc


def _view_rows(plan: ViewPlan, table: pa.Table) -> ViewRows:
    view = plan.name
    columns: dict[str, pa.ChunkedArray] = {}
    for name, value_type in plan.join_keys:
        column = _column(table, name, value_type, view)
        row = _first_null(column)
        if row is not None:
            raise _refuse(
                f"row {row}, column {name!r}: join key values must not be null",
                name,
                row=str(row),
                feature_view=view,
            )
        columns[name] = column
    ts_name = plan.timestamp_field
    event = _column(table, ts_name, VT.VALUE_TYPE_TIMESTAMP, view)
    row = _first_null(event)
    if row is not None:
        raise _refuse(
            f"row {row}, column {ts_name!r}: the event time must not be null",
            ts_name,
            row=str(row),
            feature_view=view,
        )
    columns[EVENT_TIMESTAMP] = event
    ct_name = plan.created_timestamp_field
    if ct_name and ct_name in table.column_names:
        columns[CREATED_TIMESTAMP] = _column(table, ct_name, VT.VALUE_TYPE_TIMESTAMP, view)
    else:
        columns[CREATED_TIMESTAMP] = pa.chunked_array(
            [pa.nulls(table.num_rows, arrow_type(VT.VALUE_TYPE_TIMESTAMP))]
        )
    for name, value_type in plan.features:
        columns[name] = _column(table, name, value_type, view)
    schema = plan.history_schema
    rows = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    return ViewRows(plan=plan, table=rows)


def prepare_push(
    registry: registry_pb2.Registry,
    table: pa.Table,
    *,
    push_source: str = "",
    feature_view: str = "",
) -> PreparedPush:
    """Validates pushed rows against every target view; nothing is written.

    Raises:
        InvalidArgumentError: A column is missing or mistyped, or a row has a null join key
            or event time (the message names the row and the column).
        NotFoundError: The push source or view is unknown.

    """
    views = tuple(_view_rows(plan, table) for plan in _targets(registry, push_source, feature_view))
    return PreparedPush(views=views, row_count=table.num_rows)


def append_history(config: RepoConfig, prepared: PreparedPush) -> int:
    """Appends the pushed rows to each (offline) view's history; returns rows appended."""
    appended = 0
    for item in prepared.views:
        if not item.plan.view.offline or item.table.num_rows == 0:
            continue
        writer = HistoryWriter(config, item.plan.name, item.plan.history_schema, origin=ORIGIN_PUSH)
        try:
            writer.write(item.table)
            staged = writer.close()
        except BaseException:
            writer.abort()
            raise
        try:
            commit_append(config, item.plan.name, staged)
        finally:
            for file in staged:
                file.tmp_path.unlink(missing_ok=True)
        appended += item.table.num_rows
    return appended
