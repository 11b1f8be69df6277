"""Entity rows a historical retrieval names instead of uploading: a path or a SQL query.

The server reads them itself, so that ten million rows need not cross the wire, but only
inside a DuckDB sandbox: files under the configured roots (`server.entity_source_roots`,
the repository by default) and the registered sources' own files, nothing else (DuckDB's
`allowed_directories` / `allowed_paths` with external access off and the configuration
locked). Anything else is PERMISSION_DENIED.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from skewless.core.errors import InvalidArgumentError, PermissionDeniedError
from skewless.v1 import registry_pb2

__all__ = ["read_path", "read_sql"]


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


def _sandboxed(roots: Sequence[Path], files: Sequence[Path] = ()) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read files under `roots` and `files` only.

    DuckDB's own boundary (`allowed_directories` / `allowed_paths` with external access
    off, then the configuration locked), so no function, glob or `..` of the request
    reaches past it.
    """
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        dirs = [f"{r}{os.sep}" for r in roots]
        con.execute("SET allowed_directories = $dirs", {"dirs": dirs})
        con.execute("SET allowed_paths = $paths", {"paths": [str(f) for f in files]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _outside_roots(
    what: str, field: str, roots: Sequence[Path], detail: str
) -> PermissionDeniedError:
    shown = ", ".join(str(r) for r in roots)
    return PermissionDeniedError(
        f"{what} reads outside the folders entity rows may come from ({shown}): {detail}; "
        "move the file under one of them or add its folder to server.entity_source_roots "
        "in skewless.yaml",
        reason="ENTITY_SOURCE_NOT_ALLOWED",
        metadata={"field": field, "allowed_roots": shown},
    )


def read_path(roots: Sequence[Path], root: Path, path: str) -> pa.Table:
    """Reads entity rows from a Parquet or CSV file or glob under `roots`, in file order."""
    full = Path(path)
    if not full.is_absolute():
        full = root / full
    full = Path(os.path.normpath(full))
    if not any(full.is_relative_to(r) for r in roots):
        raise _outside_roots(f"entity path {path!r}", "query.path", roots, str(full))
    con = _sandboxed(roots)
    try:
        lower = path.lower()
        if lower.endswith((".csv", ".csv.gz", ".tsv")):
            relation = con.read_csv(str(full))
        else:
            relation = con.read_parquet(str(full))
        return _utc_named(relation.to_arrow_table())
    except duckdb.PermissionException as exc:
        raise _outside_roots(f"entity path {path!r}", "query.path", roots, str(exc)) from exc
    except duckdb.Error as exc:
        raise InvalidArgumentError(
            f"cannot read entity rows from {path!r}: {exc}",
            field="query.path",
            reason="UNREADABLE_ENTITY_SOURCE",
            metadata={"path": path},
        ) from exc
    finally:
        con.close()


def _registered_reads(pattern: Path) -> tuple[list[Path], list[Path]]:
    """What a registered file source reads: ([folder], []) for a glob, ([], [file]) else."""
    parts = Path(os.path.normpath(pattern)).parts
    fixed = list(itertools.takewhile(lambda part: not set(part) & set("*?[{"), parts))
    if len(fixed) == len(parts):
        return [], [Path(*parts)]
    return [Path(*fixed) if fixed else Path(os.sep)], []


def read_sql(
    roots: Sequence[Path], root: Path, registry: registry_pb2.Registry, sql: str
) -> pa.Table:
    """Runs one DuckDB SELECT with every registered data source available by name.

    The registered sources' files are readable wherever they are (the registry is the
    operator's); anything else the query reads must be under `roots`.
    """
    sources = [
        (s, root / s.file.path) for s in registry.data_sources if s.WhichOneof("kind") == "file"
    ]
    folders, files = list(roots), []
    for _, full in sources:
        more_folders, more_files = _registered_reads(full)
        folders += more_folders
        files += more_files
    con = _sandboxed(folders, files)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidArgumentError(
                f"the entity SQL does not parse: {exc}",
                field="query.sql",
                reason="INVALID_SQL",
            ) from exc
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise InvalidArgumentError(
                "the entity SQL must be exactly one SELECT statement",
                field="query.sql",
                reason="INVALID_SQL",
            )
        for source, full in sources:
            if source.file.format == registry_pb2.FILE_FORMAT_CSV:
                con.read_csv(str(full)).create_view(source.name)
            else:
                con.read_parquet(str(full)).create_view(source.name)
        for source in registry.data_sources:
            if source.WhichOneof("kind") == "sql":
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
        raise _outside_roots("the entity SQL", "query.sql", roots, str(exc)) from exc
    except duckdb.Error as exc:
        raise InvalidArgumentError(
            f"the entity SQL failed: {exc}", field="query.sql", reason="INVALID_SQL"
        ) from exc
    finally:
        con.close()
