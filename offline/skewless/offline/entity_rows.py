"""Entity rows of a historical retrieval: what they must hold, and reading them.

Entity rows carry every join key of the requested views (with a type that fits the
declared key type) and a label time column (a timestamp, naive = UTC, or a date), each
label time inside the instants skewless stores; `validate_entity_schema` and
`label_times` check that before anything is joined.

A request may name its rows instead of uploading them: a path or a SQL query. The
server reads them itself, so that ten million rows need not cross the wire, but only
inside a DuckDB sandbox: files under the configured roots (`server.entity_source_roots`,
the repository by default) and the registered sources' own files, nothing else (DuckDB's
`allowed_directories` / `allowed_paths` with external access off and the configuration
locked). Anything else is PERMISSION_DENIED.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from skewless.core.config import RepoConfig
from skewless.core.duckdb_session import connect, sandboxed
from skewless.core.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    listing,
    quoted,
    shown,
)
from skewless.core.types import (
    TIME_RANGE,
    arrow_type,
    arrow_type_fits,
    first_time_out_of_range,
    value_type_name,
)
from skewless.registry.feature_refs import FeaturePlan
from skewless.v1 import registry_pb2

__all__ = [
    "label_time_range",
    "label_times",
    "output_schema",
    "plain_types",
    "read_path",
    "read_sql",
    "to_table",
    "validate_entity_schema",
]

_UTC_US = pa.timestamp("us", tz="UTC")


def validate_entity_schema(schema: pa.Schema, plan: FeaturePlan, label_time_column: str) -> None:
    """Checks that entity rows carry every join key and a label time of usable types.

    Raises:
        InvalidArgumentError: A join key or the label time column is missing or has a
            type the join cannot use, or a feature's output name clashes with an input
            column.

    """
    names = set(schema.names)
    if len(names) != len(schema.names):
        dupes = sorted({n for n in schema.names if schema.names.count(n) > 1})
        raise InvalidArgumentError(
            f"entity rows have duplicate column names: {listing(dupes)}; rename them",
            field="entity_rows",
            reason="DUPLICATE_COLUMN",
            metadata={"columns": ",".join(dupes)},
        )
    if label_time_column not in names:
        raise InvalidArgumentError(
            f"entity rows have no label time column {quoted(label_time_column)} "
            f"(columns: {listing(schema.names)}); add it or set label_time_column",
            field="label_time_column",
            reason="MISSING_LABEL_TIME_COLUMN",
            metadata={"column": label_time_column},
        )
    label_type = schema.field(label_time_column).type
    if not (pa.types.is_timestamp(label_type) or pa.types.is_date(label_type)):
        raise InvalidArgumentError(
            f"label time column {quoted(label_time_column)} has type {shown(label_type, 64)}; "
            "it must be a timestamp (naive timestamps are read as UTC) or a date",
            field="label_time_column",
            reason="WRONG_COLUMN_TYPE",
            metadata={"column": label_time_column, "type": str(label_type)},
        )
    for key in plan.join_keys:
        if key.name not in names:
            views = [v.name for v in plan.views if key.name in v.join_key_names]
            raise InvalidArgumentError(
                f"entity rows have no column {key.name!r}, the join key of feature view(s) "
                f"{', '.join(views)}; add it (type {value_type_name(key.value_type)})",
                field="entity_rows",
                reason="MISSING_JOIN_KEY",
                metadata={"column": key.name, "feature_views": ",".join(views)},
            )
        actual = schema.field(key.name).type
        if not arrow_type_fits(key.value_type, actual) or pa.types.is_null(actual):
            raise InvalidArgumentError(
                f"join key column {key.name!r} has type {shown(actual, 64)}; the entity "
                f"declares {value_type_name(key.value_type)}",
                field="entity_rows",
                reason="WRONG_COLUMN_TYPE",
                metadata={
                    "column": key.name,
                    "type": str(actual),
                    "expected": value_type_name(key.value_type),
                },
            )
    for feature in plan.features:
        if feature.output_name in names:
            raise InvalidArgumentError(
                f"feature {feature.view}:{feature.name} would be returned as "
                f"{feature.output_name!r}, which is already an entity row column; rename "
                "the column or set full_feature_names",
                field="full_feature_names",
                reason="DUPLICATE_OUTPUT_NAME",
                metadata={"output_name": feature.output_name},
            )


def output_schema(
    entity_schema: pa.Schema, plan: FeaturePlan, *, entity_columns: bool = True
) -> pa.Schema:
    """Returns the result schema: the entity row columns (if asked), then the features."""
    fields = list(entity_schema) if entity_columns else []
    fields.extend(pa.field(f.output_name, arrow_type(f.value_type)) for f in plan.features)
    return pa.schema(fields)


def label_times(table: pa.Table, label_time_column: str) -> pa.ChunkedArray:
    """The label times of validated entity rows, as timestamp[us, UTC].

    Dates are midnight UTC; nanosecond times are truncated to microseconds, the
    precision of the offline store.

    Raises:
        InvalidArgumentError: A label time is null, cannot be a microsecond timestamp,
            or lies outside the instants skewless stores.

    """
    column = table.column(label_time_column)
    try:
        if pa.types.is_date(column.type):
            labels = column.cast(pa.timestamp("us")).cast(_UTC_US)
        elif column.type.unit == "ns":
            labels = column.cast(_UTC_US, safe=False)
        else:
            labels = column.cast(_UTC_US)
    except (pa.ArrowInvalid, OverflowError):
        labels = None
    if labels is not None and labels.null_count:
        raise InvalidArgumentError(
            f"label time column {quoted(label_time_column)} has {labels.null_count} null "
            "value(s); every entity row needs a label time",
            field="label_time_column",
            reason="NULL_LABEL_TIME",
            metadata={"column": label_time_column, "null_count": str(labels.null_count)},
        )
    row = None if labels is None else first_time_out_of_range(labels.cast(pa.int64()))
    if labels is None or row is not None:
        raise InvalidArgumentError(
            f"label time column {quoted(label_time_column)} holds a time outside the "
            f"instants skewless stores ({TIME_RANGE})",
            field="label_time_column",
            reason="LABEL_TIME_OUT_OF_RANGE",
            metadata={
                "column": label_time_column,
                **({"row": str(row)} if row is not None else {}),
            },
        )
    return labels


def label_time_range(labels: pa.ChunkedArray) -> tuple[int, int] | None:
    """The earliest and latest label time in microseconds, or None when there are none.

    Callers list only the history files that can hold candidates: event times from
    `earliest - ttl` to `latest` (both kept inside the stored range).
    """
    if len(labels) == 0:
        return None
    bounds = pc.min_max(labels.cast(pa.int64()))
    return int(bounds["min"].as_py()), int(bounds["max"].as_py())


def plain_types(table: pa.Table) -> pa.Table:
    """Decodes dictionary columns (each result batch must be self-contained)."""
    if not any(pa.types.is_dictionary(f.type) for f in table.schema):
        return table
    fields = [
        pa.field(f.name, f.type.value_type, f.nullable, f.metadata)
        if pa.types.is_dictionary(f.type)
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def to_table(entity_rows: Any) -> pa.Table:
    """Entity rows as one table: a Table, RecordBatch, reader or Arrow stream, read whole."""
    if isinstance(entity_rows, pa.Table):
        return entity_rows
    if isinstance(entity_rows, pa.RecordBatch):
        return pa.Table.from_batches([entity_rows])
    if isinstance(entity_rows, pa.RecordBatchReader):
        return entity_rows.read_all()
    if hasattr(entity_rows, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(entity_rows).read_all()
    raise TypeError(
        "entity rows must be a pyarrow Table, RecordBatch, RecordBatchReader or an object "
        f"exporting an Arrow stream, got {type(entity_rows).__name__}"
    )


def _utc_named(table: pa.Table) -> pa.Table:
    """Names DuckDB's `Etc/UTC` zone `UTC`, as the offline store and the client do."""
    fields = [
        pa.field(f.name, pa.timestamp(f.type.unit, tz="UTC"), f.nullable, f.metadata)
        if pa.types.is_timestamp(f.type) and f.type.tz == "Etc/UTC"
        else f
        for f in table.schema
    ]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema == table.schema else table.cast(schema)


#: Table functions entity SQL may call: readers of files (inside the sandbox) and series.
_TABLE_FUNCTIONS = frozenset(
    {
        "read_parquet",
        "parquet_scan",
        "read_csv",
        "read_csv_auto",
        "read_json",
        "read_json_auto",
        "range",
        "generate_series",
        "unnest",
    }
)
#: Scalar functions entity SQL may not call: they reveal the server's settings,
#: environment or catalog, or run SQL given as a string.
_REFUSED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getenv",
        "getvariable",
        "current_database",
        "current_catalog",
        "current_schema",
        "current_schemas",
        "current_user",
        "session_user",
        "user",
        "version",
        "platform",
        "which_secret",
        "sql_auto_complete",
        "json_execute_serialized_sql",
        "json_serialize_sql",
        "json_serialize_plan",
        "json_deserialize_sql",
        "query",
        "query_table",
    }
)
_REFUSED_PREFIXES = ("duckdb_", "pragma_", "current_")


def _outside_roots(config: RepoConfig, what: str, field: str) -> PermissionDeniedError:
    shown_roots = ", ".join(config.redacted(str(r) + os.sep) or "./" for r in config.entity_roots)
    return PermissionDeniedError(
        f"{what} reads outside the folders entity rows may come from ({shown_roots}, "
        "relative to the repository) and the registered sources; move the file under one "
        "of them or add its folder to server.entity_source_roots in skewless.yaml",
        reason="ENTITY_SOURCE_NOT_ALLOWED",
        metadata={"field": field},
    )


def _unreadable(config: RepoConfig, what: str, field: str, exc: Exception) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{what} failed: {shown(config.redacted(str(exc)), 300)}",
        field=field,
        reason="INVALID_ENTITY_SOURCE",
    )


#: Called with the DuckDB connection of an entity-row read as soon as it exists, so that
#: the caller can interrupt it (`con.interrupt()`) when the call is cancelled.
OnConnection = Callable[[duckdb.DuckDBPyConnection], None]


def read_path(
    config: RepoConfig, path: str, *, on_connection: OnConnection | None = None
) -> pa.Table:
    """Reads entity rows from a Parquet or CSV file or glob the request names, in file order.

    Only files under the configured roots (`server.entity_source_roots`, the repository
    by default) are readable; a relative path starts at the repository.

    Raises:
        PermissionDeniedError: The path is outside every root.
        InvalidArgumentError: The file cannot be read as entity rows.

    """
    roots = config.entity_roots
    what = f"entity path {quoted(config.redacted(path), 80)}"
    if "\x00" in path:
        raise InvalidArgumentError(
            f"{what} holds a NUL character", field="query.path", reason="INVALID_ENTITY_SOURCE"
        )
    full = Path(path)
    if not full.is_absolute():
        full = config.root / full
    full = Path(os.path.normpath(full))
    if not any(full.is_relative_to(r) for r in roots):
        raise _outside_roots(config, what, "query.path")
    con = sandboxed(roots, memory_limit=config.join_memory_limit)
    if on_connection is not None:
        on_connection(con)
    try:
        lower = path.lower()
        if lower.endswith((".csv", ".csv.gz", ".tsv")):
            relation = con.read_csv(str(full))
        else:
            relation = con.read_parquet(str(full))
        return _utc_named(relation.to_arrow_table())
    except duckdb.PermissionException as exc:
        raise _outside_roots(config, what, "query.path") from exc
    except duckdb.Error as exc:
        raise _unreadable(config, f"reading {what}", "query.path", exc) from exc
    finally:
        con.close()


def _registered_reads(pattern: Path) -> tuple[list[Path], list[Path]]:
    """What a registered file source reads: ([folder], []) for a glob, ([], [file]) else."""
    parts = Path(os.path.normpath(pattern)).parts
    fixed = list(itertools.takewhile(lambda part: not set(part) & set("*?[{"), parts))
    if len(fixed) == len(parts):
        return [], [Path(*parts)]
    return [Path(*fixed) if fixed else Path(os.sep)], []


def _walk(node: Any, functions: list[str], tables: list[str], ctes: set[str]) -> None:
    if isinstance(node, dict):
        name = node.get("function_name")
        if isinstance(name, str):
            functions.append(name.lower())
        if node.get("type") == "BASE_TABLE":
            tables.append(str(node.get("table_name", "")).lower())
            if node.get("schema_name") or node.get("catalog_name"):
                tables.append(f"{node.get('catalog_name')}.{node.get('schema_name')}")
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    ctes.add(entry["key"].lower())
        for value in node.values():
            _walk(value, functions, tables, ctes)
    elif isinstance(node, list):
        for value in node:
            _walk(value, functions, tables, ctes)


def _check_entity_sql(sql: str, sources: set[str]) -> None:
    """Refuses entity SQL that is not one SELECT over registered sources and files.

    Parsed by DuckDB itself (`json_serialize_sql`): the statement may name only
    registered sources (and its own CTEs) as tables, call only the file readers and
    series as table functions, and no function that reveals server facts.
    """
    con = connect()
    try:
        row = con.execute("SELECT json_serialize_sql($1::VARCHAR)", [sql]).fetchone()
        tree: dict[str, Any] = json.loads(row[0]) if row is not None else {"error": True}
    finally:
        con.close()
    if tree.get("error"):
        raise InvalidArgumentError(
            f"the entity SQL does not parse: {shown(tree.get('error_message', ''), 200)}",
            field="query.sql",
            reason="INVALID_SQL",
        )
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise InvalidArgumentError(
            "the entity SQL must be exactly one SELECT statement",
            field="query.sql",
            reason="INVALID_SQL",
        )
    functions: list[str] = []
    tables: list[str] = []
    ctes: set[str] = set()
    _walk(statements[0], functions, tables, ctes)
    for table in tables:
        if table not in sources and table not in ctes:
            raise PermissionDeniedError(
                f"the entity SQL reads {quoted(table, 64)}, which is not a registered data "
                "source; entity SQL may read registered sources (by name) and files under "
                "the allowed folders",
                reason="ENTITY_SQL_NOT_ALLOWED",
                metadata={"table": table},
            )
    for name in functions:
        if name in _REFUSED_FUNCTIONS or name.startswith(_REFUSED_PREFIXES):
            raise PermissionDeniedError(
                f"the entity SQL calls {quoted(name, 64)}, which entity SQL may not use "
                "(it reveals server settings or runs other SQL)",
                reason="ENTITY_SQL_NOT_ALLOWED",
                metadata={"function": name},
            )


def read_sql(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    sql: str,
    *,
    on_connection: OnConnection | None = None,
) -> pa.Table:
    """Runs one DuckDB SELECT with every registered data source available by name.

    The registered sources' files are readable wherever they are (the registry is the
    operator's); anything else the query reads must be under the configured roots. The
    query may not call functions that reveal server facts (settings, environment,
    catalog) or run SQL from a string, and its settings are locked.

    Raises:
        PermissionDeniedError: The query reads outside the roots or calls such a function.
        InvalidArgumentError: It is not one SELECT, or it fails.

    """
    root = config.root
    sources = [
        (s, root / s.file.path) for s in registry.data_sources if s.WhichOneof("kind") == "file"
    ]
    queried = [s for s in registry.data_sources if s.WhichOneof("kind") == "sql"]
    _check_entity_sql(sql, {s.name for s, _ in sources} | {s.name for s in queried})
    folders, files = list(config.entity_roots), []
    for _, full in sources:
        more_folders, more_files = _registered_reads(full)
        folders += more_folders
        files += more_files
    con = sandboxed(folders, files, memory_limit=config.join_memory_limit)
    if on_connection is not None:
        on_connection(con)
    try:
        for source, full in sources:
            if source.file.format == registry_pb2.FILE_FORMAT_CSV:
                con.read_csv(str(full)).create_view(source.name)
            else:
                con.read_parquet(str(full)).create_view(source.name)
        for source in queried:
            view = con.sql(source.sql.query)
            if view is not None:
                view.create_view(source.name)
        relation = con.sql(sql)
        if relation is None:
            raise InvalidArgumentError(
                "the entity SQL returns no rows", field="query.sql", reason="INVALID_SQL"
            )
        return _utc_named(relation.to_arrow_table())
    except duckdb.PermissionException as exc:
        raise _outside_roots(config, "the entity SQL", "query.sql") from exc
    except duckdb.Error as exc:
        raise _unreadable(config, "the entity SQL", "query.sql", exc) from exc
    finally:
        con.close()
