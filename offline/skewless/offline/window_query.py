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

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from skewless.core.config import RepoConfig
from skewless.core.errors import DefinitionError, FailedPreconditionError, NotFoundError
from skewless.core.names import quote_identifier
from skewless.core.types import arrow_type, duckdb_type, list_element_type, value_type_name
from skewless.offline.offline_store import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from skewless.v1 import registry_pb2, types_pb2

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "ViewPlan",
    "WindowQuery",
    "check_identifier",
    "open_window",
    "plan_view",
]

#: Rows per record batch streamed out of DuckDB.
DEFAULT_BATCH_ROWS = 131_072
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
VT = types_pb2.ValueType

_INTS = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "HUGEINT",
    "UHUGEINT",
}
_FLOATS = {"FLOAT", "DOUBLE"}
_TIMES = {
    "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE",
    "TIMESTAMP_NS",
    "TIMESTAMP_MS",
    "TIMESTAMP_S",
    "DATE",
}


def check_identifier(name: str, what: str) -> str:
    """Returns `name` if it is a plain SQL identifier, else raises `DefinitionError`."""
    if not _IDENTIFIER.match(name):
        raise DefinitionError(
            f"{what} {name!r} is not a valid identifier (letters, digits, underscore; "
            "at most 63 characters, not starting with a digit)",
            reason="INVALID_IDENTIFIER",
            metadata={"name": name},
        )
    return name


@dataclass(frozen=True)
class ViewPlan:
    """What materializing or pushing one feature view needs from the registry.

    Attributes:
        view: The feature view definition.
        source: Its data source definition.
        join_keys: (name, value type) of each join key, in entity order.
        features: (name, value type) of each feature, in declaration order.

    """

    view: registry_pb2.FeatureView
    source: registry_pb2.DataSource
    join_keys: tuple[tuple[str, int], ...]
    features: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        """The view's name."""
        return str(self.view.name)

    @property
    def timestamp_field(self) -> str:
        """The source column holding event times."""
        return str(self.source.timestamp_field)

    @property
    def created_timestamp_field(self) -> str | None:
        """The source column holding created times, if any."""
        return str(self.source.created_timestamp_field) or None

    @property
    def key_names(self) -> tuple[str, ...]:
        """The join key column names."""
        return tuple(name for name, _ in self.join_keys)

    @property
    def history_schema(self) -> pa.Schema:
        """The Arrow schema of this view's history rows."""
        fields = [pa.field(name, arrow_type(vt), nullable=False) for name, vt in self.join_keys]
        fields.append(pa.field(EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False))
        fields.append(pa.field(CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC")))
        fields.extend(pa.field(name, arrow_type(vt)) for name, vt in self.features)
        return pa.schema(fields)


def plan_view(registry: registry_pb2.Registry, name: str) -> ViewPlan:
    """Resolves a feature view, its source and its entities' join keys.

    Raises:
        NotFoundError: No such view.
        DefinitionError: The view names a missing source or entity, or a bad identifier.

    """
    view = next((v for v in registry.feature_views if v.name == name), None)
    if view is None:
        known = ", ".join(sorted(v.name for v in registry.feature_views)) or "none"
        raise NotFoundError(
            f"feature view {name!r} is not in the registry (known views: {known})",
            reason="FEATURE_VIEW_NOT_FOUND",
            metadata={"feature_view": name},
        )
    source = next((s for s in registry.data_sources if s.name == view.source), None)
    if source is None:
        raise DefinitionError(
            f"feature view {name!r} reads source {view.source!r}, which is not registered",
            reason="SOURCE_NOT_FOUND",
            metadata={"feature_view": name, "source": view.source},
        )
    entities = {e.name: e for e in registry.entities}
    join_keys: list[tuple[str, int]] = []
    for entity_name in view.entities:
        entity = entities.get(entity_name)
        if entity is None:
            raise DefinitionError(
                f"feature view {name!r} uses entity {entity_name!r}, which is not registered",
                reason="ENTITY_NOT_FOUND",
                metadata={"feature_view": name, "entity": entity_name},
            )
        for key in entity.join_keys:
            if key.name not in (k for k, _ in join_keys):
                join_keys.append((check_identifier(key.name, "join key"), int(key.value_type)))
    features = tuple(
        (check_identifier(f.name, "feature"), int(f.value_type)) for f in view.features
    )
    check_identifier(source.timestamp_field, "timestamp field")
    if source.created_timestamp_field:
        check_identifier(source.created_timestamp_field, "created timestamp field")
    return ViewPlan(view=view, source=source, join_keys=tuple(join_keys), features=features)


def _base_type(sql_type: str) -> str:
    sql_type = sql_type.upper()
    if sql_type.startswith("DECIMAL"):
        return "DECIMAL"
    return sql_type


def _compatible(sql_type: str, value_type: int) -> bool:
    """Whether a DuckDB column type may be cast to a declared value type without loss of meaning."""
    base = _base_type(sql_type)
    if base.endswith("[]"):
        element = list_element_type(value_type)
        return element is not None and _compatible(base[:-2], element)
    if value_type in (VT.VALUE_TYPE_INT32, VT.VALUE_TYPE_INT64):
        return base in _INTS
    if value_type in (VT.VALUE_TYPE_FLOAT32, VT.VALUE_TYPE_FLOAT64):
        return base in _INTS or base in _FLOATS or base == "DECIMAL"
    if value_type == VT.VALUE_TYPE_STRING:
        return base == "VARCHAR"
    if value_type == VT.VALUE_TYPE_BYTES:
        return base == "BLOB"
    if value_type == VT.VALUE_TYPE_BOOL:
        return base == "BOOLEAN"
    if value_type == VT.VALUE_TYPE_TIMESTAMP:
        return base in _TIMES
    return False


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


def _connect(
    config: RepoConfig, registry: registry_pb2.Registry, plan: ViewPlan
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        config={
            "memory_limit": "1GB",
            "temp_directory": str(config.data_dir / "tmp" / "duckdb"),
        }
    )
    con.execute("SET TimeZone = 'UTC'")
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
        try:
            con.execute(f"CREATE TEMP VIEW source AS {source.sql.query}")
        except duckdb.Error as exc:
            raise DefinitionError(
                f"data source {source.name!r}: its SQL query fails: {exc}",
                reason="SOURCE_SQL_INVALID",
                metadata={"source": source.name},
            ) from exc
    elif kind == "file":
        _register_file(con, config, source, "source")
    else:
        raise DefinitionError(
            f"data source {source.name!r} has no kind (file, sql or push)",
            reason="SOURCE_INVALID",
            metadata={"source": source.name},
        )
    return con


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

    plan: ViewPlan
    start: datetime
    end: datetime
    row_count: int
    _con: duckdb.DuckDBPyConnection
    _select: str
    _params: dict[str, Any]
    _batch_rows: int
    _from_where: str = ""
    _casts: tuple[tuple[str, str], ...] = ()

    def batches(
        self, *, latest_only: bool = False, time_ordered: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """Streams the window's rows in the history schema, `batch_rows` at a time.

        Args:
            latest_only: Only the latest row per entity key (greatest event time, then
                created time), for views that are not kept offline.
            time_ordered: In (event time, entity key) order, as the offline store keeps
                history: retrievals then prove it free of ties in one cheap pass.

        Raises:
            DefinitionError: A value cannot be cast to its declared type.

        """
        schema = self.plan.history_schema
        select = self._select
        if latest_only:
            keys = ", ".join(quote_identifier(k) for k in self.plan.key_names)
            select = (
                f"SELECT * FROM ({select}) AS _rows QUALIFY row_number() OVER (PARTITION BY "
                f"{keys} ORDER BY {EVENT_TIMESTAMP} DESC, {CREATED_TIMESTAMP} DESC NULLS LAST) = 1"
            )
        if time_ordered:
            keys = ", ".join(quote_identifier(k) for k in self.plan.key_names)
            select = f"SELECT * FROM ({select}) AS _rows ORDER BY {EVENT_TIMESTAMP}, {keys}"
        try:
            reader = self._con.sql(select, params=self._params).to_arrow_reader(self._batch_rows)
            for batch in reader:
                if batch.num_rows:
                    yield batch.cast(schema)
        except (duckdb.ConversionException, duckdb.OutOfRangeException) as exc:
            column = self._failing_column()
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
            rows = self._con.sql(
                f"SELECT count(*) {self._from_where} AND {q} IS NOT NULL "
                f"AND TRY_CAST({q} AS {sql_type}) IS NULL",
                params=self._params,
            ).fetchall()
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


def _column_error(plan: ViewPlan, column: str, message: str, reason: str) -> DefinitionError:
    return DefinitionError(
        f"feature view {plan.name!r}, column {column!r}: {message}",
        reason=reason,
        metadata={"feature_view": plan.name, "column": column},
    )


def open_window(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    plan: ViewPlan,
    start: datetime,
    end: datetime,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> WindowQuery:
    """Prepares the view's rows with event time in [start, end) and checks their columns.

    Args:
        config: The repository (relative source paths resolve against its root).
        registry: The registry (SQL sources may read other file sources by name).
        plan: The view, from `plan_view`.
        start: Window start, inclusive; naive means UTC.
        end: Window end, exclusive; naive means UTC.
        batch_rows: Rows per streamed record batch (bounds memory).

    Raises:
        DefinitionError: A column is missing or has a type incompatible with its
            declaration (the message names the view and the column), or the source
            cannot be read.
        FailedPreconditionError: The view reads a push source.

    """
    start, end = _to_utc(start), _to_utc(end)
    con = _connect(config, registry, plan)
    try:
        body = plan.view.sql.strip().rstrip(";") or "SELECT * FROM source"
        try:
            described = con.sql(f"SELECT * FROM ({body}) AS _view LIMIT 0")
        except duckdb.Error as exc:
            raise DefinitionError(
                f"feature view {plan.name!r}: its SQL fails: {exc}",
                reason="VIEW_SQL_INVALID",
                metadata={"feature_view": plan.name},
            ) from exc
        types = {
            name: str(t).upper() for name, t in zip(described.columns, described.types, strict=True)
        }
        ts_field = plan.timestamp_field
        ct_field = plan.created_timestamp_field
        required: list[tuple[str, int | None]] = [
            *plan.join_keys,
            (ts_field, None),
            *([(ct_field, None)] if ct_field else []),
            *plan.features,
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
            if not _compatible(types[column], expected) or (
                value_type is None and _base_type(types[column]).endswith("[]")
            ):
                raise _column_error(
                    plan,
                    column,
                    f"has type {types[column]}, which cannot be stored as the declared "
                    f"{value_type_name(expected)}",
                    "COLUMN_TYPE_MISMATCH",
                )
        q = quote_identifier
        cols = [f"CAST({q(k)} AS {duckdb_type(vt)}) AS {q(k)}" for k, vt in plan.join_keys]
        cols.append(f"CAST({q(ts_field)} AS TIMESTAMPTZ) AS {EVENT_TIMESTAMP}")
        if ct_field:
            cols.append(f"CAST({q(ct_field)} AS TIMESTAMPTZ) AS {CREATED_TIMESTAMP}")
        else:
            cols.append(f"CAST(NULL AS TIMESTAMPTZ) AS {CREATED_TIMESTAMP}")
        cols.extend(f"CAST({q(f)} AS {duckdb_type(vt)}) AS {q(f)}" for f, vt in plan.features)
        aware = types[ts_field] == "TIMESTAMP WITH TIME ZONE"
        params: dict[str, Any] = {
            "start": start if aware else start.replace(tzinfo=None),
            "end": end if aware else end.replace(tzinfo=None),
        }
        where = [f"{q(ts_field)} >= $start", f"{q(ts_field)} < $end"]
        where.extend(f"{q(k)} IS NOT NULL" for k in plan.key_names)
        from_where = f"FROM ({body}) AS _view WHERE {' AND '.join(where)}"
        count_rows = con.sql(f"SELECT count(*) {from_where}", params=params).fetchall()
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
            _casts=tuple((c, duckdb_type(vt)) for c, vt in (*plan.join_keys, *plan.features)),
        )
    except BaseException:
        con.close()
        raise
