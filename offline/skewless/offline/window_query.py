"""Feature view transformations: the view's SQL over its source, for one time window.

DuckDB runs `SELECT ... FROM (<view sql>) WHERE <event time> >= start AND < end` over
the relation `source` (the view's data source) and streams the result as Arrow record
batches in the history layout (`skewless.offline.offline_store`): join keys,
`event_timestamp`, `created_timestamp`, then the declared features, each cast to its
declared type. Before any row is read the output columns are checked against the
definition; a missing column or an incompatible type raises `DefinitionError` naming
the view and the column.

Names that reach SQL (sources, columns) are validated identifiers and are quoted;
window bounds are bound parameters. The view's SQL and SQL sources are the user's
definitions and run as written.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from skewless.core.config import RepoConfig
from skewless.core.duckdb_session import connect
from skewless.core.errors import DefinitionError, FailedPreconditionError
from skewless.core.names import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    SOURCE_RELATION,
    check_identifier,
    quote_identifier,
)
from skewless.core.types import (
    TypeFamily,
    duckdb_column_type,
    duckdb_type,
    duckdb_type_fits,
    value_type_name,
)
from skewless.registry.delta_sources import open_delta_source
from skewless.registry.feature_refs import ResolvedView
from skewless.v1 import registry_pb2, types_pb2

__all__ = [
    "WINDOW_BATCH_ROWS",
    "WindowQuery",
    "open_window",
    "read_source",
    "value_out_of_range",
    "view_body",
    "view_sql_failed",
]

#: Rows per record batch streamed out of DuckDB.
WINDOW_BATCH_ROWS = 131_072
#: The table `WindowQuery.snapshot` computes the window into.
_SNAPSHOT = "_skewless_window"
#: The relation holding rows another engine computed (`open_window(rows=...)`).
_COMPUTED = "_skewless_computed"
VT = types_pb2.ValueType


def _register_file(
    con: duckdb.DuckDBPyConnection, config: RepoConfig, source: Any, as_name: str
) -> None:
    path = Path(source.file.path)
    if not path.is_absolute():
        path = config.root / path
    fmt = source.file.format
    is_csv = fmt == registry_pb2.FILE_FORMAT_CSV or (
        fmt == registry_pb2.FILE_FORMAT_UNSPECIFIED and str(path).lower().endswith(".csv")
    )
    try:
        relation = con.read_csv(str(path), header=True) if is_csv else con.read_parquet(str(path))
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        raise DefinitionError(
            f"data source {source.name!r}: cannot read {path}: {exc}",
            reason="SOURCE_UNREADABLE",
            metadata={"source": source.name, "path": str(path)},
        ) from exc
    relation.create_view(as_name, replace=True)


def _register_delta(
    con: duckdb.DuckDBPyConnection, config: RepoConfig, source: Any, as_name: str
) -> None:
    version = source.delta.version if source.delta.HasField("version") else None
    dataset = open_delta_source(config.root, source.name, source.delta.path, version)
    con.register(as_name, dataset)


def _connect(
    config: RepoConfig, registry: registry_pb2.Registry, plan: ResolvedView
) -> duckdb.DuckDBPyConnection:
    con = connect(memory_limit=config.job_memory_limit, spill_dir=config.spill_dir)
    source = plan.source
    kind = source.WhichOneof("kind")
    if kind == "push":
        raise FailedPreconditionError(
            f"feature view {plan.name!r} reads push source {source.name!r}: its rows arrive "
            "through PushFeatures and cannot be materialized from a batch source",
            reason="PUSH_SOURCE_NOT_MATERIALIZABLE",
            metadata={"feature_view": plan.name, "source": source.name},
        )
    if kind == "sql":
        for other in registry.data_sources:
            if other.WhichOneof("kind") == "file":
                _register_file(con, config, other, check_identifier(other.name, "data source"))
            elif other.WhichOneof("kind") == "delta":
                _register_delta(con, config, other, check_identifier(other.name, "data source"))
        try:
            con.execute(f"CREATE TEMP VIEW {SOURCE_RELATION} AS {source.sql.query}")
        except duckdb.Error as exc:
            raise DefinitionError(
                f"data source {source.name!r}: its SQL query fails: {exc}",
                reason="SOURCE_SQL_INVALID",
                metadata={"source": source.name},
            ) from exc
    elif kind == "file":
        _register_file(con, config, source, SOURCE_RELATION)
    elif kind == "delta":
        _register_delta(con, config, source, SOURCE_RELATION)
    else:
        raise DefinitionError(
            f"data source {source.name!r} has no kind (file, sql, delta or push)",
            reason="SOURCE_INVALID",
            metadata={"source": source.name},
        )
    return con


def _describe(con: duckdb.DuckDBPyConnection, body: str, plan: ResolvedView) -> Any:
    """The view's output relation with no rows (its columns and types)."""
    try:
        return con.sql(f"SELECT * FROM ({body}) AS _view LIMIT 0")
    except duckdb.Error as exc:
        raise DefinitionError(
            f"feature view {plan.name!r}: its SQL fails: {exc}",
            reason="VIEW_SQL_INVALID",
            metadata={"feature_view": plan.name},
        ) from exc


def value_out_of_range(plan: ResolvedView, detail: str) -> DefinitionError:
    """A value of the view's output does not fit its declared type, on whichever engine."""
    return DefinitionError(
        f"feature view {plan.name!r}: a value does not fit its declared type: {detail}",
        reason="COLUMN_VALUE_OUT_OF_RANGE",
        metadata={"feature_view": plan.name},
    )


def view_sql_failed(plan: ResolvedView, detail: str) -> DefinitionError:
    """The view's SQL failed while running over the source rows, on whichever engine."""
    return DefinitionError(
        f"feature view {plan.name!r}: its SQL failed while running: {detail}",
        reason="VIEW_SQL_FAILED",
        metadata={"feature_view": plan.name},
    )


def view_body(plan: ResolvedView) -> str:
    """The view's SQL over `source` (`SELECT * FROM source` for a view without SQL)."""
    return plan.view.sql.strip().rstrip(";") or f"SELECT * FROM {SOURCE_RELATION}"


def read_source(
    config: RepoConfig, registry: registry_pb2.Registry, plan: ResolvedView
) -> tuple[pa.Table, pa.Schema]:
    """Reads the view's whole source as DuckDB does, and the schema of the view's output.

    Raises:
        DefinitionError: The source cannot be read or the view's SQL fails.

    """
    con = _connect(config, registry, plan)
    try:
        out_schema = _describe(con, view_body(plan), plan).to_arrow_table().schema
        try:
            table = con.sql(f"SELECT * FROM {SOURCE_RELATION}").to_arrow_table()
        except duckdb.Error as exc:
            raise DefinitionError(
                f"data source {plan.source.name!r}: cannot be read: {exc}",
                reason="SOURCE_UNREADABLE",
                metadata={"source": plan.source.name},
            ) from exc
        return table, out_schema
    finally:
        con.close()


def _to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class WindowQuery:
    """An open query over one view's window; iterate `batches()`, then `close()`.

    Attributes:
        plan: The view.
        start: Window start (inclusive, UTC).
        end: Window end (exclusive, UTC).
        row_count: Rows the window holds (counted before streaming).

    """

    plan: ResolvedView
    start: datetime
    end: datetime
    row_count: int
    _con: duckdb.DuckDBPyConnection
    _select: str
    _params: dict[str, Any]
    _batch_rows: int
    _from_where: str = ""
    _casts: tuple[tuple[str, str], ...] = ()
    _snapshotted: bool = False

    def batches(
        self,
        *,
        latest_only: bool = False,
        time_ordered: bool = False,
        batch_rows: int | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Streams the window's rows in the history schema, `batch_rows` at a time.

        Args:
            latest_only: Only the latest row per entity key (greatest event time, then
                created time), for views that are not kept offline.
            time_ordered: In (event time, entity key) order, as the offline store keeps
                history: retrievals then prove it free of ties in one cheap pass.
            batch_rows: Rows per batch (else the query's own).

        Raises:
            DefinitionError: A value cannot be cast to its declared type.

        """
        schema = self.plan.history_schema
        select = self._select
        if latest_only:
            select = self._latest_select()
        if time_ordered and (latest_only or not self._snapshotted):  # a snapshot is in order
            select = f"SELECT * FROM ({select}) AS _rows ORDER BY {self._history_order()}"
        with self._errors():
            reader = self._con.sql(select, params=self._params).to_arrow_reader(
                batch_rows or self._batch_rows
            )
            for batch in reader:
                if batch.num_rows:
                    yield batch.cast(schema)

    def _latest_select(self) -> str:
        """The query of the latest row per key.

        The rows at their key's greatest event time, and among those the greatest
        created time (a missing one first). A grouped maximum and a join cost a fraction
        of a window over every row; the window only ranks the few rows that share their
        key's latest event time. The rows are computed once (a materialized CTE, or the
        snapshot table).
        """
        q = quote_identifier
        keys = [q(k) for k in self.plan.key_names]
        key_list = ", ".join(keys)
        on = " AND ".join(f"_r.{k} = _m.{k}" for k in keys)
        # The snapshot table is read as it is (a CTE of it would be copied first).
        rows = _SNAPSHOT if self._snapshotted else "_rows"
        head = "" if self._snapshotted else f"_rows AS MATERIALIZED ({self._select}), "
        return (
            f"WITH {head}"
            f"_m AS (SELECT {key_list}, max({EVENT_TIMESTAMP}) AS _skewless_latest "
            f"FROM {rows} GROUP BY {key_list}) "
            f"SELECT _r.* FROM {rows} AS _r JOIN _m "
            f"ON {on} AND _r.{EVENT_TIMESTAMP} = _m._skewless_latest "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(f'_r.{k}' for k in keys)} "
            f"ORDER BY _r.{CREATED_TIMESTAMP} DESC NULLS LAST) = 1"
        )

    def snapshot(self) -> WindowQuery:
        """Computes the window's rows once, into a table of this query's session.

        From then on `batches` of this query, and of the query returned, read that table:
        every reader sees the same rows even if the source changes meanwhile, and the
        view's SQL runs once. The table holds the rows in (event time, key) order, so
        that a time-ordered read is a plain scan. The returned query has its own DuckDB
        cursor, so that it can be read on another thread while this one is read; close
        both.

        Raises:
            DefinitionError: A value cannot be cast to its declared type.

        """
        if not self._snapshotted:
            with self._errors():
                # Stored in history order, which a plain scan keeps (insertion order).
                self._con.execute("SET preserve_insertion_order = true")
                self._con.execute(
                    f"CREATE TABLE {_SNAPSHOT} AS SELECT * FROM ({self._select}) AS _rows "
                    f"ORDER BY {self._history_order()}",
                    self._params,
                )
            self._select = f"SELECT * FROM {_SNAPSHOT}"
            self._params = {}
            self._snapshotted = True
        return dataclasses.replace(self, _con=self._con.cursor())

    def _history_order(self) -> str:
        keys = ", ".join(quote_identifier(k) for k in self.plan.key_names)
        return f"{EVENT_TIMESTAMP}, {keys}"

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turns DuckDB's failures while running the view into `DefinitionError`s."""
        try:
            yield
        except (duckdb.ConversionException, duckdb.OutOfRangeException) as exc:
            column = None if self._snapshotted else self._failing_column()
            if column is not None:
                raise _column_error(
                    self.plan,
                    column,
                    f"a value does not fit the declared type: {exc}",
                    "COLUMN_VALUE_OUT_OF_RANGE",
                ) from exc
            raise DefinitionError(
                f"feature view {self.plan.name!r}: a value does not fit its declared type: {exc}",
                reason="COLUMN_VALUE_OUT_OF_RANGE",
                metadata={"feature_view": self.plan.name},
            ) from exc
        except duckdb.Error as exc:
            raise DefinitionError(
                f"feature view {self.plan.name!r}: its SQL failed while running: {exc}",
                reason="VIEW_SQL_FAILED",
                metadata={"feature_view": self.plan.name},
            ) from exc

    def _failing_column(self) -> str | None:
        """Finds the first column holding a value its cast refuses (after a failure)."""
        for column, sql_type in self._casts:
            q = quote_identifier(column)
            try:
                rows = self._con.sql(
                    f"SELECT count(*) {self._from_where} AND {q} IS NOT NULL "
                    f"AND TRY_CAST({q} AS {sql_type}) IS NULL",
                    params=self._params,
                ).fetchall()
            except duckdb.Error:  # the view's own SQL fails: no declared cast to blame
                return None
            if rows and rows[0][0]:
                return column
        return None

    def close(self) -> None:
        """Closes the DuckDB connection."""
        self._con.close()

    def __enter__(self) -> WindowQuery:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _column_error(plan: ResolvedView, column: str, message: str, reason: str) -> DefinitionError:
    return DefinitionError(
        f"feature view {plan.name!r}, column {column!r}: {message}",
        reason=reason,
        metadata={"feature_view": plan.name, "column": column},
    )


def open_window(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    plan: ResolvedView,
    start: datetime,
    end: datetime,
    *,
    batch_rows: int = WINDOW_BATCH_ROWS,
    rows: pa.Table | None = None,
) -> WindowQuery:
    """Prepares the view's rows with event time in [start, end) and checks their columns.

    Args:
        config: The repository (relative source paths resolve against its root).
        registry: The registry (SQL sources may read other file sources by name).
        plan: The view, from `resolve_view`.
        start: Window start, inclusive; naive means UTC.
        end: Window end, exclusive; naive means UTC.
        batch_rows: Rows per streamed record batch (bounds memory).
        rows: The view's rows as another engine computed them (the Spark engine): they
            stand for the view's SQL, and are checked, cast and windowed the same way.

    Raises:
        DefinitionError: A column is missing or has a type incompatible with its
            declaration (the message names the view and the column), or the source
            cannot be read.
        FailedPreconditionError: The view reads a push source.

    """
    start, end = _to_utc(start), _to_utc(end)
    if rows is None:
        con = _connect(config, registry, plan)
        body = view_body(plan)
    else:
        con = connect(memory_limit=config.job_memory_limit, spill_dir=config.spill_dir)
        con.register(_COMPUTED, rows)
        body = f"SELECT * FROM {_COMPUTED}"
    try:
        described = _describe(con, body, plan)
        types = {
            name: str(t).upper() for name, t in zip(described.columns, described.types, strict=True)
        }
        ts_field = plan.timestamp_field
        ct_field = plan.created_timestamp_field
        required: list[tuple[str, int | None]] = [
            *((k.name, k.value_type) for k in plan.join_keys),
            (ts_field, None),
            *([(ct_field, None)] if ct_field else []),
            *((f.name, f.value_type) for f in plan.features),
        ]
        for column, value_type in required:
            if column not in types:
                raise _column_error(
                    plan,
                    column,
                    f"missing from the view's output (it has: {', '.join(types)})",
                    "COLUMN_MISSING",
                )
            expected = value_type if value_type is not None else VT.VALUE_TYPE_TIMESTAMP
            if not duckdb_type_fits(expected, types[column]) or (
                value_type is None and duckdb_column_type(types[column]).family == TypeFamily.LIST
            ):
                raise _column_error(
                    plan,
                    column,
                    f"has type {types[column]}, which cannot be stored as the declared "
                    f"{value_type_name(expected)}",
                    "COLUMN_TYPE_MISMATCH",
                )
        q = quote_identifier
        cols = [
            f"CAST({q(k.name)} AS {duckdb_type(k.value_type)}) AS {q(k.name)}"
            for k in plan.join_keys
        ]
        cols.append(f"CAST({q(ts_field)} AS TIMESTAMPTZ) AS {EVENT_TIMESTAMP}")
        if ct_field:
            cols.append(f"CAST({q(ct_field)} AS TIMESTAMPTZ) AS {CREATED_TIMESTAMP}")
        else:
            cols.append(f"CAST(NULL AS TIMESTAMPTZ) AS {CREATED_TIMESTAMP}")
        cols.extend(
            f"CAST({q(f.name)} AS {duckdb_type(f.value_type)}) AS {q(f.name)}"
            for f in plan.features
        )
        aware = types[ts_field] == "TIMESTAMP WITH TIME ZONE"
        params: dict[str, Any] = {
            "start": start if aware else start.replace(tzinfo=None),
            "end": end if aware else end.replace(tzinfo=None),
        }
        where = [f"{q(ts_field)} >= $start", f"{q(ts_field)} < $end"]
        where.extend(f"{q(k)} IS NOT NULL" for k in plan.key_names)
        from_where = f"FROM ({body}) AS _view WHERE {' AND '.join(where)}"
        try:
            count_rows = con.sql(f"SELECT count(*) {from_where}", params=params).fetchall()
        except (duckdb.ConversionException, duckdb.OutOfRangeException) as exc:
            raise value_out_of_range(plan, str(exc)) from exc
        except duckdb.Error as exc:
            raise view_sql_failed(plan, str(exc)) from exc
        select = f"SELECT {', '.join(cols)} {from_where}"
        return WindowQuery(
            plan=plan,
            start=start,
            end=end,
            row_count=int(count_rows[0][0]) if count_rows else 0,
            _con=con,
            _select=select,
            _params=params,
            _batch_rows=batch_rows,
            _from_where=from_where,
            _casts=tuple((k.name, duckdb_type(k.value_type)) for k in plan.join_keys)
            + tuple((f.name, duckdb_type(f.value_type)) for f in plan.features),
        )
    except BaseException:
        con.close()
        raise
