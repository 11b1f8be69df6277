"""The pruned history of one feature view, read once for a point-in-time join.

For each view of a retrieval, the history rows that can be candidates (pruned by the label
time range) are read from Parquet once into Arrow and split in two:

* the *index*: join keys, event time and row position, registered in DuckDB for the tie
  checks and handed to the as-of step (`skewless.offline.asof`; narrow, so the sorts
  move little data);
* the *features*: the view's features in its order and declared types, gathered by
  position after the join. Past a memory budget they go to an Arrow file that is
  memory-mapped instead (its name is removed at once: nothing outlives the process).

Ties (two rows with one key and one event time) are resolved on the index only: it then
keeps each group's winner by created time, file rank (path order) and row in file.

DuckDB reads local history files itself. Files on object storage (DuckDB's S3 extension
is not used) are read by pyarrow's S3 filesystem, a few files ahead, into one Arrow
stream in path order with the same columns (a column a file lacks is null, each file's
row numbers and rank added for the tie-break), which DuckDB scans with the same query.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from skewless.core.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP, quote_identifier
from skewless.core.storage import object_store_error
from skewless.core.types import arrow_type
from skewless.registry.feature_refs import ViewPlan

__all__ = [
    "INDEX_POSITION",
    "INDEX_TIME",
    "STRATEGIES",
    "HistoryLoader",
    "LoadedHistory",
    "ViewHistory",
    "arange",
    "has_ties",
]

#: How each view's history index treats rows sharing a key and an event time: "plain"
#: uses the index as read (exact only when there are no such ties, which is checked
#: first unless forced); "dedupe" keeps each group's documented winner.
STRATEGIES = ("plain", "dedupe")

#: Rows per record batch when reading a view's pruned history.
_LOAD_BATCH_ROWS = 1_048_576
_SCAN = "union_by_name = true, hive_partitioning = false"
#: The index columns holding a row's event time and its position in the features.
INDEX_TIME = "__ts"
INDEX_POSITION = "__pos"


def _where(index: int, view: ViewPlan) -> str:
    where = f"{EVENT_TIMESTAMP} <= $hi{index}"
    if view.ttl_micros > 0:
        where += f" AND {EVENT_TIMESTAMP} >= $lo{index}"
    return where


def _load_sql(index: int, view: ViewPlan, dedupe: bool, remote: bool = False) -> str:
    """Reads the pruned history: the index columns first, then the features.

    `remote`: read the Arrow stream `__src<index>` (`_remote_source`) instead of the files.
    """
    columns = [
        *(quote_identifier(k) for k in view.join_key_names),
        f"{EVENT_TIMESTAMP}::TIMESTAMPTZ AS {INDEX_TIME}",
    ]
    if dedupe:
        # The path itself would cost a string per row: rank it instead (the list is
        # sorted by path string, so the rank keeps the path order).
        columns += [
            f"{CREATED_TIMESTAMP}::TIMESTAMPTZ AS __c",
            "__file_index AS __fi",
            "file_row_number::BIGINT AS __fr",
        ]
    columns += [f"{quote_identifier(f.name)} AS __f{j}" for j, f in enumerate(view.features)]
    select = f"SELECT {', '.join(columns)} FROM "
    if remote:
        return f"{select}__src{index} WHERE {_where(index, view)}"
    if not dedupe:
        return f"{select}read_parquet($files{index}, {_SCAN}) WHERE {_where(index, view)}"
    return (
        f"{select}read_parquet($files{index}, filename = true, file_row_number = true, {_SCAN}) "
        f"JOIN (SELECT unnest($files{index}) AS __path, "
        f"unnest(range(len($files{index}))) AS __file_index) ON filename = __path "
        f"WHERE {_where(index, view)}"
    )


def _winners_sql(table: str, view: ViewPlan) -> str:
    """Keeps, per (key, event time), the index row of the documented winner."""
    keys = ", ".join(quote_identifier(k) for k in view.join_key_names)
    order = "__c DESC NULLS LAST, __fi DESC, __fr DESC"
    return (
        f"SELECT {keys}, {INDEX_TIME}, {INDEX_POSITION} FROM {table} QUALIFY row_number() "
        f"OVER (PARTITION BY {keys}, {INDEX_TIME} ORDER BY {order}) = 1"
    )


@dataclass(frozen=True)
class ViewHistory:
    """One view of a plan with the files holding its history.

    Attributes:
        view: The view's part of the plan.
        files: The view's committed history files (see `history_files`); empty when
            none can hold a candidate (its features are then null).
        version: The offline table version the files were listed from (None when the
            view has no table).
        filesystem: The object store's filesystem the files are paths of; None for
            local files (DuckDB reads those itself).

    """

    view: ViewPlan
    files: tuple[Path | str, ...]
    version: int | None = None
    filesystem: pafs.FileSystem | None = None


@dataclass
class LoadedHistory:
    """A view's pruned history: its index (also registered in DuckDB) and its features.

    Attributes:
        table: The registered index (join keys, event time, position), one row per
            candidate winner.
        features: The view's features, in its order and declared types, one row per
            history row read (`take` by position).
        index: The registered index itself.
        held_bytes: Feature bytes counted against the memory budget (0 when mapped).

    """

    table: str
    features: pa.Table
    index: pa.Table
    held_bytes: int


class _Spill:
    """Feature batches written to an Arrow file that is then memory-mapped."""

    def __init__(self, directory: Path | None, schema: pa.Schema) -> None:
        fd, name = tempfile.mkstemp(prefix="history-", suffix=".arrow", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self.writer = pa.ipc.new_file(str(self.path), schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def finish(self) -> pa.Table:
        self.writer.close()
        try:
            return pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()
        finally:
            # The mapping outlives the name: nothing is left behind, even after a crash.
            self.path.unlink()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.path.unlink(missing_ok=True)


def _one_chunk_per_column(table: pa.Table) -> pa.Table:
    """Makes each column one array (`take` on chunked columns is ~3x slower).

    A column at a time, so that the peak is the table plus one column, not twice it.
    """
    names = table.schema.names
    columns = []
    for name in names:
        columns.append(table.column(name).combine_chunks())
        table = table.drop_columns([name])
    return pa.table(columns, names=names)


def arange(con: duckdb.DuckDBPyConnection, n: int) -> pa.ChunkedArray:
    """0..n-1 as int64 (DuckDB builds it in parallel; a Python range costs ~0.1 µs a row)."""
    relation = con.sql(f"SELECT range FROM range({int(n)})")
    assert relation is not None
    return relation.to_arrow_table().column(0)


class HistoryLoader:
    """Reads each view's pruned history once, holding features up to a memory budget."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        memory_limit: int | None,
        temp_directory: Path | None,
    ) -> None:
        self.con = con
        self.memory_left = memory_limit
        self.temp_directory = temp_directory

    def load(
        self, index: int, vh: ViewHistory, params: dict[str, Any], dedupe: bool
    ) -> LoadedHistory:
        """Reads view number `index` of a join and registers its index as `__h<index>`.

        Args:
            index: The view's position in the plan (names its tables and parameters).
            vh: The view and its history files.
            params: The label-range bounds `hi<index>` / `lo<index>` of the scan.
            dedupe: Resolve ties (see `has_ties`); reads the tie-break columns too.

        """
        view = vh.view
        remote = vh.filesystem is not None
        failures: list[BaseException] = []
        if remote:
            source = _remote_source(vh, dedupe, failures)
            self.con.register(f"__src{index}", source)
            relation = self.con.sql(_load_sql(index, view, dedupe, remote=True), params=params)
        else:
            relation = self.con.sql(
                _load_sql(index, view, dedupe), params={f"files{index}": _paths(vh), **params}
            )
        assert relation is not None
        n_index = len(view.join_key_names) + (4 if dedupe else 1)
        schema = pa.schema(
            [pa.field(f"__f{j}", arrow_type(f.value_type)) for j, f in enumerate(view.features)]
        )
        index_batches: list[pa.RecordBatch] = []
        held: list[pa.RecordBatch] = []
        held_bytes = 0
        spill: _Spill | None = None
        reader = relation.to_arrow_reader(_LOAD_BATCH_ROWS)
        try:
            for batch in reader:
                index_batches.append(batch.select(range(n_index)))
                columns = [batch.column(n_index + j) for j in range(len(view.features))]
                features = pa.RecordBatch.from_arrays(
                    [
                        c if c.type == f.type else c.cast(f.type)
                        for c, f in zip(columns, schema, strict=True)
                    ],
                    schema=schema,
                )
                if spill is None and self.memory_left is not None:
                    if features.nbytes > self.memory_left:
                        spill = _Spill(self.temp_directory, schema)
                        for kept in held:
                            spill.write(kept)
                        held = []
                    else:
                        self.memory_left -= features.nbytes
                        held_bytes += features.nbytes
                if spill is not None:
                    spill.write(features)
                else:
                    held.append(features)
            if spill is not None:
                table = spill.finish()
                if self.memory_left is not None:
                    self.memory_left += held_bytes  # those went to the file as well
                held_bytes = 0
            else:
                chunked = pa.Table.from_batches(held, schema)
                held.clear()
                table = _one_chunk_per_column(chunked)
                del chunked
        except BaseException:
            if spill is not None:
                spill.abort()
            if failures:  # DuckDB wraps what the stream raised: raise the status itself
                raise failures[0] from None
            raise
        finally:
            reader.close()
            if remote:
                self.con.unregister(f"__src{index}")
        index_schema = pa.schema([reader.schema.field(k) for k in range(n_index)])
        index_table = pa.Table.from_batches(index_batches, index_schema)
        del index_batches
        index_table = index_table.append_column(
            INDEX_POSITION, arange(self.con, index_table.num_rows)
        )
        name = f"__h{index}"
        if dedupe:
            self.con.register(f"__all{index}", index_table)
            winners = self.con.sql(_winners_sql(f"__all{index}", view))
            assert winners is not None
            index_table = winners.to_arrow_table()
            self.con.unregister(f"__all{index}")
        self.con.register(name, index_table)
        return LoadedHistory(table=name, features=table, index=index_table, held_bytes=held_bytes)

    def release_index(self, history: LoadedHistory) -> None:
        """Drops a loaded history's index (DuckDB's registration and the table)."""
        self.con.unregister(history.table)
        history.index = history.index.slice(0, 0)

    def release(self, history: LoadedHistory) -> None:
        """Drops a loaded history and gives its memory back to the budget."""
        self.con.unregister(history.table)
        if self.memory_left is not None:
            self.memory_left += history.held_bytes


def _paths(vh: ViewHistory) -> list[str]:
    return sorted(str(p) for p in vh.files)


#: Files on object storage read ahead of the one being scanned.
_REMOTE_READ_AHEAD = 4


def _remote_source(
    vh: ViewHistory, dedupe: bool, failures: list[BaseException]
) -> pa.RecordBatchReader:
    """The view's history files on object storage as one Arrow stream, in path order.

    Columns: join keys, event and created time, features (in the view's declared types;
    null where a file lacks one), and with `dedupe` `__file_index` (the file's rank in
    path order) and `file_row_number`, as DuckDB's own scan gives them. A read failure
    is appended to `failures` as its status (`object_store_error`) before it is raised.
    """
    fs = vh.filesystem
    assert fs is not None
    view = vh.view
    paths = _paths(vh)
    features = [(f.name, arrow_type(f.value_type)) for f in view.features]
    utc = pa.timestamp("us", tz="UTC")
    fixed = [(EVENT_TIMESTAMP, utc)] + ([(CREATED_TIMESTAMP, utc)] if dedupe else [])
    try:
        first = pq.read_schema(paths[0], filesystem=fs) if paths else pa.schema([])
    except OSError as exc:
        raise object_store_error(exc, paths[0].split("/", 1)[0]) from None
    keys = [
        (k, first.field(k).type if k in first.names else pa.string()) for k in view.join_key_names
    ]
    wanted = [*keys, *fixed, *features]
    fields = [pa.field(name, typ) for name, typ in wanted]
    if dedupe:
        fields += [pa.field("__file_index", pa.int64()), pa.field("file_row_number", pa.int64())]
    schema = pa.schema(fields)

    def read(path: str) -> pa.Table:
        try:
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=True)
                present = [n for n, _ in wanted if n in parquet.schema_arrow.names]
                return parquet.read(columns=present)
        except OSError as exc:
            failure = object_store_error(exc, path.split("/", 1)[0])
            failures.append(failure)
            raise failure from None

    def batches() -> Iterator[pa.RecordBatch]:
        with ThreadPoolExecutor(_REMOTE_READ_AHEAD, thread_name_prefix="skewless-s3") as pool:
            pending = deque(pool.submit(read, p) for p in paths[:_REMOTE_READ_AHEAD])
            for rank in range(len(paths)):
                table = pending.popleft().result()
                ahead = rank + _REMOTE_READ_AHEAD
                if ahead < len(paths):
                    pending.append(pool.submit(read, paths[ahead]))
                n = table.num_rows
                columns = []
                for name, typ in wanted:
                    if name in table.column_names:
                        column = table.column(name)
                        columns.append(column if column.type == typ else column.cast(typ))
                    else:
                        columns.append(pa.chunked_array([pa.nulls(n, typ)]))
                if dedupe:
                    columns.append(pa.chunked_array([pa.array(np.full(n, rank, np.int64))]))
                    columns.append(pa.chunked_array([pa.array(np.arange(n, dtype=np.int64))]))
                yield from pa.Table.from_arrays(columns, schema=schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _strictly_ordered(index: pa.Table, keys: Sequence[str]) -> bool:
    """True when each row is greater in (event time, keys) order than the one before.

    Then no two rows share a key and an event time: a handful of vectorized comparisons
    prove it for history stored in time order (as day partitions written window by
    window are). NULL keys give False (no proof).
    """
    n = index.num_rows
    if n < 2:
        return True
    columns = [index.column(INDEX_TIME), *(index.column(k) for k in keys)]
    before = [c.slice(0, n - 1) for c in columns]
    after = [c.slice(1) for c in columns]
    greater = pc.greater(after[0], before[0])
    equal = pc.equal(after[0], before[0])
    for b, a in zip(before[1:], after[1:], strict=True):
        greater = pc.or_(greater, pc.and_(equal, pc.greater(a, b)))
        equal = pc.and_(equal, pc.equal(a, b))
    return bool(pc.all(pc.fill_null(greater, False)).as_py())


def has_ties(con: duckdb.DuckDBPyConnection, history: LoadedHistory, view: ViewPlan) -> bool:
    """True when two rows of a plainly loaded index share the join key and event time.

    History in (event time, key) order is proven tie-free by one pass of comparisons;
    otherwise DuckDB counts the (key, event time) groups holding more than one row.
    """
    keys = view.join_key_names
    if _strictly_ordered(history.index, keys):
        return False
    group = ", ".join([*(quote_identifier(k) for k in keys), INDEX_TIME])
    counts = con.sql(
        f"SELECT count(*) FROM (SELECT 1 FROM {history.table} GROUP BY {group} HAVING count(*) > 1)"
    )
    assert counts is not None
    return int(counts.fetchall()[0][0]) > 0
