"""The code a Spark executor runs on one piece of a view's source: the view's DuckDB SQL.

Shipped with the job (pickled by value, `skewless.offline.spark_views`), so executors
need duckdb and pyarrow, not skewless. A piece is an Arrow batch (row-local views,
`mapInArrow`) or a group of whole entity keys (key-grouped views, `applyInArrow`).
Each piece is cast back to the source's Arrow types before DuckDB sees it (Spark's
types are coarser: a naive timestamp may come back with a time zone), so the SQL runs
on exactly the types it runs on in the DuckDB engine.

A DuckDB error raises `RuntimeError` with a mark before DuckDB's first message line
(`VALUE_OUT_OF_RANGE_MARK` for a value a cast refuses, else `VIEW_SQL_FAILED_MARK`),
which the driver turns into the DuckDB engine's status for the same failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa

__all__ = [
    "BUCKET",
    "VALUE_OUT_OF_RANGE_MARK",
    "VIEW_SQL_FAILED_MARK",
    "run_on_batches",
    "run_on_groups",
]

#: Precedes DuckDB's message in the error an executor raises for a failing view SQL.
VIEW_SQL_FAILED_MARK = "skewless-view-sql-failed: "
#: The same, for a value that does not fit a type (DuckDB's conversion errors).
VALUE_OUT_OF_RANGE_MARK = "skewless-value-out-of-range: "
#: The column that holds a row's bucket of entity keys (key-grouped views).
BUCKET = "_skewless_bucket"
#: The relation the view's SQL reads.
_SOURCE = "source"


def _run(con: Any, table: pa.Table, select: str, params: dict[str, Any]) -> pa.Table:
    con.register(_SOURCE, table)
    try:
        return con.sql(select, params=params).to_arrow_table()
    except duckdb.Error as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        out_of_range = isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException)
        mark = VALUE_OUT_OF_RANGE_MARK if out_of_range else VIEW_SQL_FAILED_MARK
        raise RuntimeError(f"{mark}{first}") from None
    finally:
        con.unregister(_SOURCE)


def run_on_batches(
    select: str, params: dict[str, Any], source_schema: pa.Schema, out_schema: pa.Schema
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The `mapInArrow` function of a row-local view: its SQL on each batch."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        con = duckdb.connect()
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch]).cast(source_schema)
                yield from _run(con, table, select, params).cast(out_schema).to_batches()
        finally:
            con.close()

    return run


def run_on_groups(
    select: str, params: dict[str, Any], source_schema: pa.Schema, out_schema: pa.Schema
) -> Callable[[pa.Table], pa.Table]:
    """The `applyInArrow` function of a key-grouped view: its SQL on each bucket of keys."""

    def run(group: pa.Table) -> pa.Table:
        table = group.drop_columns([BUCKET]).cast(source_schema)
        con = duckdb.connect()
        try:
            return _run(con, table, select, params).cast(out_schema)
        finally:
            con.close()

    return run
