"""A feature view's SQL on Apache Spark, with the DuckDB engine's rows (materialization).

The view's SQL is not translated into Spark SQL. `skewless.registry.key_locality`
decides from its syntax tree how it may be split, and Spark runs the view's own DuckDB
SQL on each piece of the source, on its executors (`skewless.offline.spark_view_partition`):

* row-local views on each Arrow batch (`mapInArrow`);
* key-grouped views on groups of whole entity keys
  (`groupBy(pmod(hash(keys), buckets)).applyInArrow`);
* any other view is refused (`VIEW_NOT_KEY_LOCAL`, the message naming the construct).

Each piece keeps only its rows with event time in the window and non-NULL keys (the
window is applied after the view's SQL, as on DuckDB, so a window function still sees
the rows before the window). The rows come back to the driver as Arrow (`toArrow`) and
go through the DuckDB engine's own checks, casts, history commit and Redis
compare-and-set (`skewless.offline.window_query.open_window(rows=...)`).

The source is read on the driver with DuckDB (`read_source`: file, Delta or SQL
source, read exactly as the DuckDB engine reads it) and handed to Spark as Arrow, so
both engines split the same rows with the same types.

Progress: a session the server starts reports the Spark application id and the stages
and tasks of the view's jobs (its job group), every half second; a Spark Connect
session reports the application id only. Failures become our statuses
(`skewless.offline.spark_errors`); a DuckDB error on an executor is the DuckDB engine's
status for it (`COLUMN_VALUE_OUT_OF_RANGE`, `VIEW_SQL_FAILED`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from skewless.core.config import RepoConfig
from skewless.core.errors import CancelledError, FailedPreconditionError, SkewlessError
from skewless.core.names import check_identifier, quote_identifier
from skewless.offline import spark_view_partition
from skewless.offline.spark_errors import spark_failure
from skewless.offline.spark_view_partition import (
    BUCKET,
    VALUE_OUT_OF_RANGE_MARK,
    VIEW_SQL_FAILED_MARK,
    run_on_batches,
    run_on_groups,
)
from skewless.offline.window_query import (
    read_source,
    value_out_of_range,
    view_body,
    view_sql_failed,
)
from skewless.registry.feature_refs import ResolvedView
from skewless.registry.key_locality import Locality, key_locality
from skewless.v1 import registry_pb2

__all__ = ["SparkProgress", "SparkProgressCallback", "spark_view_rows"]

_log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
#: How often a cancelled view's Spark jobs are cancelled (again) while they run.
_CANCEL_SECONDS = 0.1
_by_value_lock = threading.Lock()
_by_value = False


@dataclass(frozen=True)
class SparkProgress:
    """Where a view's Spark jobs are.

    Attributes:
        application_id: The Spark application running them ("" if Spark does not say).
        stages_completed: Stages of the view's jobs that finished.
        stages_total: Stages of the view's jobs known so far.
        tasks_completed: Tasks of those stages that finished.
        tasks_total: Tasks of those stages.

    """

    application_id: str
    stages_completed: int = 0
    stages_total: int = 0
    tasks_completed: int = 0
    tasks_total: int = 0


SparkProgressCallback = Callable[[SparkProgress], None]


def _ship_code() -> None:
    """Pickle the executor code by value: a cluster's workers need no skewless install."""
    global _by_value
    with _by_value_lock:
        if _by_value:
            return
        from pyspark import cloudpickle

        cloudpickle.register_pickle_by_value(spark_view_partition)  # type: ignore[no-untyped-call]
        _by_value = True


def _is_connect(session: Any) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")


def _functions(session: Any) -> Any:
    if _is_connect(session):
        from pyspark.sql.connect import functions as connect_functions

        return connect_functions
    from pyspark.sql import functions as classic_functions

    return classic_functions


def _application_id(session: Any) -> str:
    try:
        if _is_connect(session):
            value = session.conf.get("spark.app.id", None)
        else:
            value = session.sparkContext.applicationId
    except Exception:  # informational only
        return ""
    return str(value) if value else ""


def _stage_progress(session: Any, group: str, application_id: str) -> SparkProgress:
    """The stages of the group's jobs; a finished job's unrun stages were skipped.

    Spark skips a stage whose output an earlier stage already has; as in Spark's UI,
    skipped stages are not counted.
    """
    tracker = session.sparkContext.statusTracker()
    stages: dict[int, bool] = {}  # stage id -> its job finished
    for job_id in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job_id)
        if info is not None:
            for stage_id in info.stageIds:
                stages[stage_id] = stages.get(stage_id, False) or info.status == "SUCCEEDED"
    done = total = tasks_done = tasks_total = 0
    for stage_id, job_done in stages.items():
        stage = tracker.getStageInfo(stage_id)
        finished = stage is not None and 0 < stage.numTasks <= stage.numCompletedTasks
        if job_done and not finished:
            continue  # skipped
        total += 1
        if stage is None:
            continue
        tasks_total += stage.numTasks
        tasks_done += stage.numCompletedTasks
        done += finished
    return SparkProgress(application_id, done, total, tasks_done, tasks_total)


class _Progress:
    """Runs one view's Spark jobs as a group: reports their stages, and cancels them.

    The jobs carry a job group (a classic session) or an operation tag (Spark
    Connect). While the calling thread waits on Spark, a thread reports progress every
    `_POLL_SECONDS` and, once `cancelled` is set, cancels the group's jobs, again every
    `_CANCEL_SECONDS` while the work goes on (a job may start just after a cancel).
    """

    def __init__(
        self,
        session: Any,
        report: SparkProgressCallback | None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.session = session
        self.report = report
        self.cancelled = cancelled
        self.group = f"skewless-materialize-{uuid.uuid4().hex}"
        self.application_id = _application_id(session)
        self.classic = not _is_connect(session)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _snapshot(self) -> SparkProgress:
        if not self.classic:
            return SparkProgress(self.application_id)
        try:
            return _stage_progress(self.session, self.group, self.application_id)
        except Exception:  # progress is informational
            return SparkProgress(self.application_id)

    def _cancel_jobs(self) -> None:
        try:
            if self.classic:
                self.session.sparkContext.cancelJobGroup(self.group)
            else:
                self.session.interruptTag(self.group)
        except Exception:  # a session that is gone has nothing to cancel
            _log.debug("cancelling Spark jobs of %s failed", self.group, exc_info=True)

    def _poll(self) -> None:
        next_report = time.monotonic() + _POLL_SECONDS
        while not self._stop.wait(_CANCEL_SECONDS):
            if self.cancelled is not None and self.cancelled.is_set():
                self._cancel_jobs()
            if self.report is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + _POLL_SECONDS
                self.report(self._snapshot())

    def __enter__(self) -> _Progress:
        if self.classic:
            self.session.sparkContext.setJobGroup(
                self.group, "skewless materialization", interruptOnCancel=True
            )
        else:
            self.session.addTag(self.group)
        if self.report is not None:
            self.report(SparkProgress(self.application_id))
        if self.report is not None or self.cancelled is not None:
            self._thread = threading.Thread(
                target=self._poll, name="skewless-spark-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.report is not None:
            self.report(self._snapshot())
        if self.classic:
            self.session.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        else:
            self.session.removeTag(self.group)


def _spark_schema(plan: ResolvedView, schema: pa.Schema, what: str) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    for field in schema:
        try:
            from_arrow_schema(pa.schema([field]))
        except Exception:
            raise FailedPreconditionError(
                f"feature view {plan.name!r}: {what} column {field.name!r} has type "
                f"{field.type}, which Spark cannot carry; cast it in the view's SQL or "
                "use offline.engine: duckdb",
                reason="SPARK_TYPE_UNSUPPORTED",
                metadata={"feature_view": plan.name, "column": field.name},
            ) from None
    return from_arrow_schema(schema)


def _windowed_select(plan: ResolvedView, out_schema: pa.Schema) -> tuple[str, bool]:
    """The view's SQL restricted to the window; and whether its event time is aware."""
    q = quote_identifier
    ts = plan.timestamp_field
    aware = ts in out_schema.names and getattr(out_schema.field(ts).type, "tz", None) is not None
    where = [f"{q(ts)} >= $start", f"{q(ts)} < $end"]
    where.extend(f"{q(k)} IS NOT NULL" for k in plan.key_names)
    return f"SELECT * FROM ({view_body(plan)}) AS _view WHERE {' AND '.join(where)}", aware


def spark_view_rows(
    session: Any,
    config: RepoConfig,
    registry: registry_pb2.Registry,
    plan: ResolvedView,
    start: datetime,
    end: datetime,
    *,
    target: str,
    progress: SparkProgressCallback | None = None,
    cancelled: threading.Event | None = None,
) -> pa.Table:
    """The view's rows with event time in [start, end), computed on Spark.

    Setting `cancelled` (from any thread) cancels the view's running Spark jobs; the
    call then raises `CancelledError`.

    Returns:
        The view's output columns as its DuckDB SQL gives them (before the history
        casts), only rows in the window with non-NULL keys.

    Raises:
        FailedPreconditionError: `VIEW_NOT_KEY_LOCAL` (the view cannot be split by
            key), `SPARK_TYPE_UNSUPPORTED`, or a Spark failure
            (`skewless.offline.spark_errors`).
        DefinitionError: The source cannot be read, or the view's SQL fails.
        StoreUnavailableError: Spark cannot be reached or the job failed.
        CancelledError: `cancelled` was set before the rows came back.

    """
    locality = key_locality(plan.view.sql, plan.key_names, view=plan.name)
    source, out_schema = read_source(config, registry, plan)
    select, aware = _windowed_select(plan, out_schema)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    params: dict[str, Any] = {
        "start": start if aware else start.replace(tzinfo=None),
        "end": end if aware else end.replace(tzinfo=None),
    }
    if locality == Locality.KEY_GROUPED:
        missing = [k for k in plan.key_names if k not in source.schema.names]
        if missing:
            raise FailedPreconditionError(
                f"feature view {plan.name!r} cannot run on the Spark engine: it groups by "
                f"entity key {missing[0]!r}, which its source does not have",
                reason="VIEW_NOT_KEY_LOCAL",
                metadata={"feature_view": plan.name, "construct": f"key {missing[0]}"},
            )
    out_spark = _spark_schema(plan, out_schema, "output")
    _spark_schema(plan, source.schema, "source")
    from pyspark.sql.pandas.types import to_arrow_schema

    out_arrow = to_arrow_schema(out_spark, timezone="UTC")
    _ship_code()

    def check_cancelled() -> None:
        if cancelled is not None and cancelled.is_set():
            raise CancelledError(
                f"materializing feature view {plan.name!r} was cancelled; its Spark jobs "
                "were cancelled and nothing was written",
                reason="MATERIALIZATION_CANCELLED",
                metadata={"feature_view": plan.name},
            )

    check_cancelled()
    try:
        with _Progress(session, progress, cancelled):
            frame = session.createDataFrame(source)
            if locality == Locality.ROW_LOCAL:
                result = frame.mapInArrow(
                    run_on_batches(select, params, source.schema, out_arrow), out_spark
                )
            else:
                F = _functions(session)  # PySpark's convention
                buckets = max(1, int(session.conf.get("spark.sql.shuffle.partitions") or 1))
                keys = [F.col(check_identifier(k, "join key")) for k in plan.key_names]
                result = (
                    frame.withColumn(BUCKET, F.pmod(F.hash(*keys), F.lit(buckets)))
                    .groupBy(BUCKET)
                    .applyInArrow(
                        run_on_groups(select, params, source.schema, out_arrow), out_spark
                    )
                )
            table = result.toArrow()
    except SkewlessError:
        raise
    except Exception as exc:
        check_cancelled()  # a cancelled job's failure is the cancel, not an error
        text = str(exc)
        for mark, error in (
            (VALUE_OUT_OF_RANGE_MARK, value_out_of_range),
            (VIEW_SQL_FAILED_MARK, view_sql_failed),
        ):
            if mark in text:
                raise error(plan, text.split(mark, 1)[1].splitlines()[0]) from None
        raise spark_failure(exc, target, view=plan.name) from None
    check_cancelled()
    return table.cast(out_schema) if table.num_rows else out_schema.empty_table()
