"""Pushed rows: validated against every target view, then staged and committed as history.

A push names a push source (its rows reach every feature view reading it) or one
feature view, and carries an Arrow IPC stream with the join keys, the source's
timestamp field, optionally its created timestamp field, and the features.
`prepare_push` checks everything any store will need before anything is written: a
missing column, a type that does not fit the declared type (`skewless.core.types.fits`),
a value that does not fit it (an integer out of range), a null join key or event time,
or an event or created time outside the range skewless stores, is refused with
`InvalidArgumentError` naming the row and the column. The rows come out in each view's
history schema, so the history write that follows cannot fail on the data.

`stage_history` writes the rows as staged (uncommitted) history files and
`commit_history` makes them part of the history; `skewless.materialization.push` puts the
online write between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, NotFoundError, listing, quoted, shown
from skewless.core.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from skewless.core.types import (
    TIME_RANGE,
    arrow_type,
    arrow_type_fits,
    first_time_out_of_range,
    value_type_name,
)
from skewless.offline.offline_store import (
    ORIGIN_PUSH,
    HistoryWriter,
    StagedFile,
    commit_append,
    discard,
)
from skewless.registry.feature_refs import ResolvedView, resolve_view
from skewless.v1 import registry_pb2, types_pb2

__all__ = [
    "PreparedPush",
    "StagedPush",
    "ViewRows",
    "commit_history",
    "discard_history",
    "prepare_push",
    "stage_history",
]

VT = types_pb2.ValueType
_TIMESTAMP = int(VT.VALUE_TYPE_TIMESTAMP)


@dataclass(frozen=True)
class ViewRows:
    """Validated rows of one view, in its history schema."""

    plan: ResolvedView
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


def _targets(
    registry: registry_pb2.Registry, push_source: str, feature_view: str
) -> list[ResolvedView]:
    if feature_view:
        return [resolve_view(registry, feature_view)]
    if not push_source:
        raise InvalidArgumentError(
            "name a push_source or a feature_view to push to",
            field="target",
            reason="NO_PUSH_TARGET",
        )
    pushable = sorted(s.name for s in registry.data_sources if s.WhichOneof("kind") == "push")
    if push_source not in pushable:
        raise NotFoundError(
            f"{quoted(push_source)} is not a registered push source (push sources: "
            f"{listing(pushable)})",
            reason="PUSH_SOURCE_NOT_FOUND",
            metadata={"push_source": push_source},
        )
    views = [
        resolve_view(registry, v.name) for v in registry.feature_views if v.source == push_source
    ]
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
        field=f"arrow_ipc_stream.{shown(column, 64)}",
        reason="INVALID_PUSH_ROWS",
        metadata={"column": column, **metadata},
    )


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


def _first_null(column: pa.ChunkedArray) -> int | None:
    if column.null_count == 0:
        return None
    return _first(pc.is_null(column))


def _cast(column: pa.ChunkedArray, value_type: int, name: str, view: str) -> pa.ChunkedArray:
    """Casts a column that fits `value_type` to its Arrow type, refusing values that do not."""
    target = arrow_type(value_type)
    if value_type == _TIMESTAMP:
        if pa.types.is_timestamp(column.type) and column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")  # naive means UTC
        if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
            # The store keeps microseconds: truncate, as label times are.
            return column.cast(target, safe=False)
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError) as exc:
        raise _refuse(
            f"column {quoted(name)} holds a value that does not fit the declared "
            f"{value_type_name(value_type)} of feature view {view!r}: {shown(exc, 120)}",
            name,
            feature_view=view,
            expected=value_type_name(value_type),
        ) from None


def _column(table: pa.Table, name: str, value_type: int, view: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise _refuse(
            f"column {quoted(name)} is missing: feature view {view!r} needs it "
            f"(the stream has: {listing(table.column_names)})",
            name,
            feature_view=view,
        )
    column = table.column(name)
    if pa.types.is_null(column.type):
        return pa.chunked_array([pa.nulls(len(column), arrow_type(value_type))])
    if not arrow_type_fits(value_type, column.type):
        hint = ""
        if value_type == _TIMESTAMP and (
            pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        ):
            hint = "; parse the strings into a timestamp column before pushing"
        raise _refuse(
            f"column {quoted(name)} has Arrow type {shown(column.type, 64)}, but feature view "
            f"{view!r} declares {value_type_name(value_type)}{hint}",
            name,
            feature_view=view,
            expected=value_type_name(value_type),
            actual=str(column.type),
        )
    return _cast(column, value_type, name, view)


def _check_times(column: pa.ChunkedArray, name: str, view: str) -> None:
    micros = column.cast(pa.int64())
    row = first_time_out_of_range(micros)
    if row is not None:
        raise _refuse(
            f"row {row}, column {quoted(name)}: {micros[row].as_py()} µs since the epoch is "
            f"outside the instants skewless stores ({TIME_RANGE})",
            name,
            row=str(row),
            feature_view=view,
        )


def _view_rows(plan: ResolvedView, table: pa.Table) -> ViewRows:
    view = plan.name
    columns: dict[str, pa.ChunkedArray] = {}
    for key in plan.join_keys:
        column = _column(table, key.name, key.value_type, view)
        row = _first_null(column)
        if row is not None:
            raise _refuse(
                f"row {row}, column {key.name!r}: join key values must not be null",
                key.name,
                row=str(row),
                feature_view=view,
            )
        columns[key.name] = column
    ts_name = plan.timestamp_field
    event = _column(table, ts_name, _TIMESTAMP, view)
    row = _first_null(event)
    if row is not None:
        raise _refuse(
            f"row {row}, column {ts_name!r}: the event time must not be null",
            ts_name,
            row=str(row),
            feature_view=view,
        )
    _check_times(event, ts_name, view)
    columns[EVENT_TIMESTAMP] = event
    ct_name = plan.created_timestamp_field
    if ct_name and ct_name in table.column_names:
        created = _column(table, ct_name, _TIMESTAMP, view)
        _check_times(created, ct_name, view)
        columns[CREATED_TIMESTAMP] = created
    else:
        columns[CREATED_TIMESTAMP] = pa.chunked_array(
            [pa.nulls(table.num_rows, arrow_type(_TIMESTAMP))]
        )
    for feature in plan.features:
        column = _column(table, feature.name, feature.value_type, view)
        if feature.value_type == _TIMESTAMP:
            _check_times(column, feature.name, view)
        columns[feature.name] = column
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
        InvalidArgumentError: A column is missing or does not fit its declared type, or a
            row has a null join key or event time, or a time outside the stored range
            (the message names the row and the column).
        NotFoundError: The push source or view is unknown.

    """
    views = tuple(_view_rows(plan, table) for plan in _targets(registry, push_source, feature_view))
    return PreparedPush(views=views, row_count=table.num_rows)


@dataclass
class StagedPush:
    """Pushed rows written as staged history files, not yet part of any history.

    Attributes:
        files: The staged files of each view kept offline.
        rows: Rows staged, over all views.

    """

    files: dict[str, list[StagedFile]]
    rows: int


def stage_history(config: RepoConfig, prepared: PreparedPush) -> StagedPush:
    """Writes each offline view's pushed rows as staged files (nothing is committed).

    On failure nothing stays staged.
    """
    staged = StagedPush(files={}, rows=0)
    try:
        for item in prepared.views:
            if not item.plan.view.offline or item.table.num_rows == 0:
                continue
            writer = HistoryWriter(
                config, item.plan.storage_name, item.plan.history_schema, origin=ORIGIN_PUSH
            )
            try:
                writer.write(item.table)
                staged.files[item.plan.storage_name] = writer.close()
            except BaseException:
                writer.abort()
                raise
            staged.rows += item.table.num_rows
    except BaseException:
        discard_history(staged)
        raise
    return staged


def commit_history(config: RepoConfig, staged: StagedPush) -> int:
    """Adds the staged files to each view's history; returns the rows committed.

    A view's files are committed at once; on failure the views not committed yet keep
    their files staged for `discard_history`.
    """
    for view, files in list(staged.files.items()):
        commit_append(config, view, files)
        del staged.files[view]
    return staged.rows


def discard_history(staged: StagedPush) -> None:
    """Removes what is still staged (after a failure)."""
    for files in staged.files.values():
        discard(files)
    staged.files.clear()
