"""The point-in-time join on Apache Spark, with exactly the DuckDB engine's answers.

Why this formulation: the DuckDB engine's answer is a function of each entity key's rows
alone (candidates, winner, tie-breaks and TTL never look at another key). So the join
is split by key, not re-implemented: for each feature view,

1. the entity rows (join keys in the history's key types, label time as int64
   microseconds, input row number) become a Spark DataFrame; rows with a NULL key
   (which never match) stay behind. A session whose executors run on this machine
   (`local[N]`) reads them from a Parquet file written to the staging directory (about
   5x cheaper than `createDataFrame`, which pickles the Arrow batches through the
   driver); Spark Connect and remote masters get them through `createDataFrame`;
2. Spark reads the view's committed files (the same list the DuckDB engine reads,
   pruned to the label time range: `event_timestamp <= max label` and, with a TTL,
   `>= min label - TTL`), with each row's created time, its file's rank in the
   path-sorted file list and its row index in the file (`_metadata.row_index`), the
   DuckDB engine's tie-breaks;
3. both sides get the same hash bucket of the join keys (`pmod(hash(keys), buckets)`,
   computed on identical Spark types) and are co-grouped by it:
   `groupBy(bucket).cogroup(...).applyInArrow` runs `skewless.offline.spark_partition`
   on each bucket, which resolves ties and runs `asof.winner_positions`, the DuckDB
   engine's own as-of step, and returns the winners' features with their row numbers;
4. the result comes back to the server as Arrow (`toArrow`), is scattered into input
   order by row number (rows without a winner get nulls), and streams out through the
   same batch assembly as the DuckDB engine (`point_in_time.assemble_batches`).

Buckets rather than one group per key: a Python call per key would cost far more than
the join itself at millions of keys; a bucket is joined by one vectorized call. Exact by
construction: a key's rows all land in one bucket, and within it the same code decides.

Each retrieval tags its Spark jobs (a job tag in a classic session, an operation tag
on Spark Connect): `cancel` interrupts them, so a cancelled call stops its Spark work.
Failures become our statuses through `skewless.offline.spark_errors`.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless.core.errors import SkewlessError
from skewless.core.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from skewless.core.types import MAX_TIME_MICROS, MIN_TIME_MICROS, arrow_type
from skewless.offline import asof, spark_partition
from skewless.offline.asof import align_key
from skewless.offline.entity_rows import (
    label_times,
    output_schema,
    to_table,
    validate_entity_schema,
)
from skewless.offline.history_index import LoadedHistory, ViewHistory
from skewless.offline.point_in_time import (
    DEFAULT_CHUNK_ROWS,
    OUTPUT_BATCH_ROWS,
    JoinCancelled,
    assemble_batches,
)
from skewless.offline.spark_errors import spark_failure
from skewless.offline.spark_partition import (
    BUCKET,
    CREATED,
    FILE_RANK,
    FILE_ROW,
    LABEL,
    ROW,
    TIME,
    feature_column,
    partition_join,
)
from skewless.registry.feature_refs import FeaturePlan, ViewPlan

__all__ = ["SparkPointInTimeJoin", "spark_point_in_time_join"]

_log = logging.getLogger(__name__)

#: Entity rows per bucket the join aims at (at least 4 buckets per shuffle partition).
BUCKET_ROWS = 250_000
_BUCKETS_PER_PARTITION = 4

#: Threads submitting the views' Spark jobs of one join at once.
_VIEW_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="skewless-spark-view")

#: How long, and how often, a cancellation repeats while the join's threads still run.
_CANCEL_SECONDS = 60.0
_CANCEL_REPEAT_SECONDS = 0.25
#: Where job cancellations run (see `_Jobs.interrupt`).
_CANCEL_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="skewless-spark-cancel")

_by_value_lock = threading.Lock()
_by_value = False


def _ship_partition_code() -> None:
    """Pickle the per-bucket code by value: a cluster's workers need no skewless install."""
    global _by_value
    with _by_value_lock:
        if _by_value:
            return
        from pyspark import cloudpickle

        cloudpickle.register_pickle_by_value(asof)  # type: ignore[no-untyped-call]
        cloudpickle.register_pickle_by_value(spark_partition)  # type: ignore[no-untyped-call]
        _by_value = True


def _is_connect(session: Any) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")


def _functions(session: Any) -> Any:
    """PySpark's column functions for this kind of session.

    `pyspark.sql.functions` picks classic or Connect from process-wide state; a process
    may hold both kinds of session, so the Connect module is named for Connect sessions.
    """
    if _is_connect(session):
        from pyspark.sql.connect import functions as connect_functions

        return connect_functions
    from pyspark.sql import functions as classic_functions

    return classic_functions


class _Jobs:
    """Tags the Spark jobs of one retrieval, so that they can be interrupted."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.tag = f"skewless-historical-{uuid.uuid4().hex}"
        self.connect = _is_connect(session)
        self._lock = threading.Lock()
        self._running = 0

    def start(self) -> None:
        """Tags every job this thread starts from now on."""
        with self._lock:
            self._running += 1
        if self.connect:
            self.session.addTag(self.tag)
        else:
            context = self.session.sparkContext
            context.addJobTag(self.tag)
            context.setInterruptOnCancel(True)

    def stop(self) -> None:
        """Stops tagging this thread's jobs."""
        with self._lock:
            self._running -= 1
        if self.connect:
            self.session.removeTag(self.tag)
        else:
            self.session.sparkContext.removeJobTag(self.tag)

    def interrupt(self) -> None:
        """Cancels the running tagged jobs, if any, without waiting (from any thread).

        The cancellation is a call to Spark (an RPC on Spark Connect): it runs on a
        thread of its own, so that a caller on an event loop is never held by it.
        """
        with self._lock:
            if self._running == 0:
                return
        _CANCEL_POOL.submit(self._interrupt_now)

    def _interrupt_now(self) -> None:
        # Again while threads still work: a view's job may start just after a cancel.
        deadline = time.monotonic() + _CANCEL_SECONDS
        while True:
            try:
                if self.connect:
                    self.session.interruptTag(self.tag)
                else:
                    self.session.sparkContext.cancelJobsWithTag(self.tag)
            except Exception:  # a session that is gone has nothing to cancel
                _log.debug("cancelling Spark jobs of %s failed", self.tag, exc_info=True)
                return
            with self._lock:
                if self._running == 0:
                    return
            if time.monotonic() > deadline:
                return
            time.sleep(_CANCEL_REPEAT_SECONDS)

    def application_id(self) -> str | None:
        """The Spark application the jobs run in, if Spark says."""
        try:
            if self.connect:
                value = self.session.conf.get("spark.app.id", None)
            else:
                value = self.session.sparkContext.applicationId
        except Exception:  # informational only
            return None
        return str(value) if value else None


@dataclass
class SparkPointInTimeJoin:
    """A prepared join on Spark: reading `reader` runs it; `cancel` stops it.

    Attributes:
        schema: The result schema.
        reader: The result as record batches, in input order.
        num_rows: The number of result rows (the number of entity rows).
        application_id: The Spark application that ran it (known once it ran).

    """

    schema: pa.Schema
    reader: pa.RecordBatchReader
    num_rows: int
    _jobs: _Jobs = field(repr=False)
    _loaded: list[Any] = field(repr=False, default_factory=list)
    _cancelled: threading.Event = field(repr=False, default_factory=threading.Event)
    application_id: str | None = None

    def cancel(self) -> None:
        """Stops the join and cancels its Spark jobs (safe from another thread)."""
        self._cancelled.set()
        self._jobs.interrupt()

    def close(self) -> None:
        """Stops the join and releases the collected features."""
        self.cancel()
        self.reader.close()
        self._loaded.clear()


def _bucket_count(session: Any, rows: int) -> int:
    try:
        partitions = int(session.conf.get("spark.sql.shuffle.partitions"))
    except (TypeError, ValueError):
        partitions = 200
    return max(_BUCKETS_PER_PARTITION * max(1, partitions), math.ceil(rows / BUCKET_ROWS))


def _file_ranks(frame: Any, paths: Sequence[str]) -> dict[str, int]:
    """Each file's rank in `paths` (sorted), keyed by every form Spark writes its URI in.

    `inputFiles` gives `file:///x`; `_metadata.file_path` gives `file:/x`: both are
    decoded back to the path the server listed.
    """
    rank = {p: i for i, p in enumerate(paths)}
    out: dict[str, int] = {}
    for uri in frame.inputFiles():
        parsed = urllib.parse.urlparse(uri)
        local = urllib.parse.unquote(parsed.path) if parsed.scheme in ("", "file") else uri
        if local not in rank:
            continue
        out[uri] = rank[local]
        if uri.startswith("file:///"):
            out["file:/" + uri[len("file:///") :]] = rank[local]
    return out


def _bound(micros: int) -> int:
    return min(max(micros, MIN_TIME_MICROS), MAX_TIME_MICROS)


def _history_frame(
    session: Any, view: ViewPlan, paths: Sequence[str], key_types: dict[str, Any], lo_hi: Any
) -> Any:
    """The view's pruned history as Spark reads it, in the partition step's columns."""
    F = _functions(session)  # PySpark's convention
    from pyspark.sql.pandas.types import from_arrow_schema

    # The schema is given, not inferred: inference runs a Spark job per read, and the
    # declared types are what the DuckDB engine casts to. A column missing from a file
    # reads as NULL there, as DuckDB's `union_by_name` does.
    stored = pa.schema(
        [
            *(pa.field(k.name, arrow_type(k.value_type)) for k in view.join_keys),
            pa.field(EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
            pa.field(CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC")),
            *(pa.field(f.name, arrow_type(f.value_type)) for f in view.features),
        ]
    )
    raw = session.read.schema(from_arrow_schema(stored)).parquet(*paths)
    ranks = _file_ranks(raw, paths)
    rank_map = F.create_map(*[x for uri, r in ranks.items() for x in (F.lit(uri), F.lit(r))])
    created = F.unix_micros(F.col(CREATED_TIMESTAMP))
    lo, hi = lo_hi
    condition = F.col(EVENT_TIMESTAMP) <= F.timestamp_micros(F.lit(_bound(hi)))
    if lo is not None:
        condition = condition & (F.col(EVENT_TIMESTAMP) >= F.timestamp_micros(F.lit(_bound(lo))))
    for k in view.join_key_names:
        condition = condition & F.col(k).isNotNull()
    return raw.where(condition).select(
        *(F.col(k).cast(key_types[k]).alias(k) for k in view.join_key_names),
        F.unix_micros(F.col(EVENT_TIMESTAMP)).alias(TIME),
        created.alias(CREATED),
        F.coalesce(F.try_element_at(rank_map, F.col("_metadata.file_path")), F.lit(-1))
        .cast("int")
        .alias(FILE_RANK),
        F.col("_metadata.row_index").cast("long").alias(FILE_ROW),
        *(F.col(f.name).alias(feature_column(j)) for j, f in enumerate(view.features)),
    )


def _reads_local_files(session: Any) -> bool:
    """Whether the session's executors run in this machine (a `local[N]` classic session)."""
    if _is_connect(session):
        return False
    return str(session.sparkContext.master).startswith("local")


def _entity_frame(session: Any, entities: pa.Table, stage: Path | None) -> Any:
    """The entity rows as a Spark DataFrame: read from a staged Parquet file when possible."""
    if stage is None or not _reads_local_files(session):
        return session.createDataFrame(entities)
    path = stage / "entities.parquet"
    pq.write_table(entities, path, compression="none")
    return session.read.parquet(str(path))


def _join_view(
    session: Any,
    table: pa.Table,
    micros: pa.ChunkedArray,
    vh: ViewHistory,
    *,
    slice_rows: int,
    stage_dir: Path | None,
) -> tuple[LoadedHistory, np.ndarray] | None:
    """One view's join on Spark: its winners' features and each entity row's position.

    The entity rows are staged under a directory of their own in `stage_dir` (removed
    when the view's join ends, whatever its outcome), or sent to Spark directly when
    `stage_dir` is None.
    """
    view = vh.view
    keys = view.join_key_names
    aligned = {
        k.name: align_key(table.column(k.name), arrow_type(k.value_type)) for k in view.join_keys
    }
    entities = pa.table(
        {
            **aligned,
            LABEL: micros,
            ROW: pa.array(np.arange(table.num_rows, dtype=np.int64)),
        }
    )
    has_key = None
    for k in keys:
        valid = pc.is_valid(entities.column(k))
        has_key = valid if has_key is None else pc.and_(has_key, valid)
    if has_key is not None:
        entities = entities.filter(has_key)
    if entities.num_rows == 0:
        return None
    buckets = _bucket_count(session, entities.num_rows)
    stage: Path | None = None
    if stage_dir is not None:
        stage_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix="spark-entities-", dir=stage_dir))
    try:
        return _join_staged(session, table, micros, vh, entities, buckets, slice_rows, stage)
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)


def _join_staged(
    session: Any,
    table: pa.Table,
    micros: pa.ChunkedArray,
    vh: ViewHistory,
    entities: pa.Table,
    buckets: int,
    slice_rows: int,
    stage: Path | None,
) -> tuple[LoadedHistory, np.ndarray]:
    """`_join_view` once the entity rows are known and (maybe) staged in `stage`."""
    F = _functions(session)  # PySpark's convention
    from pyspark.sql.types import LongType, StructField, StructType

    view = vh.view
    keys = view.join_key_names
    left = _entity_frame(session, entities, stage)
    key_types = {k: left.schema[k].dataType for k in keys}
    bounds = pc.min_max(micros)
    t_min, t_max = int(bounds["min"].as_py()), int(bounds["max"].as_py())
    lo = t_min - view.ttl_micros if view.ttl_micros > 0 else None
    paths = sorted(str(p) for p in vh.files)
    right = _history_frame(session, view, paths, key_types, (lo, t_max))

    def bucket() -> Any:
        return F.pmod(F.hash(*(F.col(k) for k in keys)), F.lit(buckets))

    n_features = len(view.features)
    result_schema = StructType(
        [
            StructField(ROW, LongType(), False),
            *(right.schema[feature_column(j)] for j in range(n_features)),
        ]
    )
    joined = (
        left.withColumn(BUCKET, bucket())
        .groupBy(BUCKET)
        .cogroup(right.withColumn(BUCKET, bucket()).groupBy(BUCKET))
        .applyInArrow(
            partition_join(keys, view.ttl_micros, n_features, slice_rows=slice_rows),
            schema=result_schema,
        )
    )
    winners = joined.toArrow()
    positions = np.full(table.num_rows, -1, dtype=np.int64)
    rows = winners.column(ROW).to_numpy()
    positions[rows] = np.arange(len(rows), dtype=np.int64)
    features = pa.table(
        [
            winners.column(feature_column(j)).cast(arrow_type(f.value_type))
            for j, f in enumerate(view.features)
        ],
        names=[feature_column(j) for j in range(n_features)],
    )
    loaded = LoadedHistory(table="", features=features, index=pa.table({}), held_bytes=0)
    return loaded, positions


def spark_point_in_time_join(
    session: Any,
    entity_rows: Any,
    plan: FeaturePlan,
    histories: Sequence[ViewHistory],
    *,
    target: str,
    label_time_column: str = EVENT_TIMESTAMP,
    batch_rows: int = OUTPUT_BATCH_ROWS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    entity_columns: bool = True,
    stage_dir: Path | None = None,
) -> SparkPointInTimeJoin:
    """Starts the point-in-time join of entity rows against the plan's views, on Spark.

    The arguments mean what they mean for `point_in_time.point_in_time_join`; `session`
    is a PySpark session (classic or Spark Connect) and `target` names it in messages.
    `stage_dir`, when given, is where a local session's entity rows are staged as Parquet
    for the duration of the join (see the module's docs).

    Raises:
        InvalidArgumentError: The entity rows lack a join key or label time column, have
            unusable types, or null or out-of-range label times.

    """
    _ship_partition_code()
    table = to_table(entity_rows)
    validate_entity_schema(table.schema, plan, label_time_column)
    by_name = {vh.view.name: vh for vh in histories}
    missing = [v.name for v in plan.views if v.name not in by_name]
    if missing:
        raise ValueError(f"no history given for view(s) {', '.join(missing)}")
    ordered = [by_name[v.name] for v in plan.views]
    micros = label_times(table, label_time_column).cast(pa.int64())
    schema = output_schema(table.schema, plan, entity_columns=entity_columns)
    jobs = _Jobs(session)
    loaded: list[LoadedHistory | None] = []
    cancelled = threading.Event()
    join: SparkPointInTimeJoin | None = None

    def check() -> None:
        if cancelled.is_set():
            raise JoinCancelled("the join was cancelled")

    def join_one(vh: ViewHistory) -> tuple[LoadedHistory, np.ndarray] | None:
        """One view's join, its jobs tagged (tags are per thread)."""
        check()
        if not vh.files:
            return None
        jobs.start()
        try:
            check()
            return _join_view(
                session, table, micros, vh, slice_rows=max(1, chunk_rows), stage_dir=stage_dir
            )
        except (JoinCancelled, SkewlessError):
            raise
        except Exception as exc:
            if cancelled.is_set():
                raise JoinCancelled("the join was cancelled") from None
            raise spark_failure(exc, target, view=vh.view.name) from None
        finally:
            jobs.stop()

    def run() -> list[np.ndarray | None]:
        """Joins every view, as concurrent Spark jobs (each one small on its own)."""
        try:
            if len(ordered) == 1:
                results = [join_one(ordered[0])]
            else:
                # Every view's work ends before the join does (none outlives a failure).
                futures = [_VIEW_POOL.submit(join_one, vh) for vh in ordered]
                wait(futures)
                results = [f.result() for f in futures]
        finally:
            application = jobs.application_id()
            if join is not None:
                join.application_id = application
            _log.info(
                "point-in-time join on Spark (%s, application %s): %d entity rows, %d view(s)",
                target,
                application or "unknown",
                table.num_rows,
                len(ordered),
            )
        check()
        positions: list[np.ndarray | None] = []
        for done in results:
            loaded.append(None if done is None else done[0])
            positions.append(None if done is None else done[1])
        return positions

    reader = pa.RecordBatchReader.from_batches(
        schema,
        assemble_batches(
            table if entity_columns else table.select([]),
            run,
            check,
            loaded,
            schema,
            plan,
            batch_rows,
        ),
    )
    join = SparkPointInTimeJoin(
        schema=schema,
        reader=reader,
        num_rows=table.num_rows,
        _jobs=jobs,
        _loaded=loaded,
        _cancelled=cancelled,
    )
    return join
