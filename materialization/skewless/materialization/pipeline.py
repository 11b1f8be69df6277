"""Materialization: compute feature views over a window and write both stores.

For each view and window [start, end), one job:

1. runs the view's query over the window once, into a DuckDB table of the job's session
   (`skewless.offline.window_query`, `WindowQuery.snapshot`), so that both stores
   receive exactly the same rows even if the source changes meanwhile;
2. at the same time, on two threads:
   * stages those rows, in (event time, key) order, as `.tmp` history files (one per
     UTC day of event time);
   * writes the latest row per entity key to Redis with the compare-and-set script
     (`skewless.online.writer`);
3. when both are done, commits the staged files, atomically replacing the window in the
   history (`skewless.offline.offline_store.commit_window`);
4. advances the view's watermark to `end` (when the window starts at or before it).

If either half fails, the other stops at its next batch, the staged files are removed
and the job fails with the first half's error. A crash at any step leaves the previous
history (nothing is committed before both halves are done) and at worst
newer-but-identical online values; re-running the window converges to the state of one
clean run. Two jobs never materialize the same view at once: each view has a lock file
under `<data_dir>/materialization/<view>/` held with `flock`, which the kernel releases
when the holder dies (on object storage: a lease in the shared Redis, checked again
right before the commit; `skewless.materialization.lease`).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from skewless.core.config import RepoConfig, SparkSettings
from skewless.core.errors import (
    CancelledError,
    FailedPreconditionError,
    InvalidArgumentError,
    SkewlessError,
)
from skewless.materialization.view_state import ViewLocks, advance_watermark, read_watermark
from skewless.offline.offline_store import HistoryWriter, StagedFile, commit_window, discard
from skewless.offline.spark_views import SparkProgress, SparkProgressCallback
from skewless.offline.window_query import WindowQuery, open_window
from skewless.online.layout import online_expiry
from skewless.online.writer import OnlineWriter, prepare_rows
from skewless.registry.feature_refs import ResolvedView, resolve_view
from skewless.registry.key_locality import key_locality
from skewless.v1 import registry_pb2

__all__ = [
    "EPOCH",
    "MaterializeResult",
    "Phase",
    "Progress",
    "ProgressCallback",
    "ViewResult",
    "check_engine",
    "engine_warnings",
    "materializable_views",
    "materialize",
    "materialize_incremental",
    "resolve_redis_url",
]

#: Where an incremental run starts for a view that was never materialized.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONLINE_BATCH_ROWS = 50_000
#: Windows of at least this many rows write Redis while their history is staged.
_OVERLAP_MIN_ROWS = 100_000


class Phase(enum.StrEnum):
    """What a materialization is doing for a view."""

    COMPUTE = "compute"  # the view's rows to staged history files
    ONLINE = "online"  # the latest row per key to Redis
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """A progress report.

    Attributes:
        view: The view being materialized.
        phase: What it is doing (`Phase`).
        rows_done: Rows handled in this phase so far.
        rows_total: Rows of the view's window.
        view_index: Position of the view in the job (0-based).
        view_count: Number of views in the job.
        spark: Where the view's Spark jobs are (Spark engine only, else None).

    """

    view: str
    phase: Phase
    rows_done: int
    rows_total: int
    view_index: int
    view_count: int
    spark: SparkProgress | None = None

    @property
    def fraction(self) -> float:
        """Estimated completion of the whole job, 0 to 1."""
        if self.phase == Phase.DONE:
            inner = 1.0
        else:
            share = self.rows_done / self.rows_total if self.rows_total else 0.0
            inner = 0.7 * share if self.phase == Phase.COMPUTE else 0.7 + 0.3 * min(share, 1.0)
        return min(1.0, (self.view_index + inner) / max(self.view_count, 1))


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ViewResult:
    """What one view's materialization did.

    Attributes:
        view: The view.
        start: Window start (inclusive).
        end: Window end (exclusive).
        rows_read: Rows the view's SQL produced for the window.
        rows_written: Rows committed to the history (0 for online-only views).
        online_rows_written: Redis keys replaced (older rows are not).

    """

    view: str
    start: datetime
    end: datetime
    rows_read: int
    rows_written: int
    online_rows_written: int


@dataclass(frozen=True)
class MaterializeResult:
    """The outcome of a materialization, view by view."""

    views: tuple[ViewResult, ...]

    @property
    def rows_read(self) -> int:
        """Total rows computed."""
        return sum(v.rows_read for v in self.views)

    @property
    def rows_written(self) -> int:
        """Total history rows written."""
        return sum(v.rows_written for v in self.views)


def resolve_redis_url(config: RepoConfig) -> str:
    """Returns the Redis URL jobs write to.

    Raises:
        FailedPreconditionError: No URL is configured and no fixed embedded port is set.

    """
    if config.redis_url:
        return config.redis_url
    if config.redis_port:
        return f"redis://127.0.0.1:{config.redis_port}/0"
    raise FailedPreconditionError(
        "no online store to write: set online_store.redis_url (or a fixed online_store.port "
        "for the Redis `skewless serve` starts) in skewless.yaml",
        reason="REDIS_NOT_CONFIGURED",
    )


def materializable_views(registry: registry_pb2.Registry) -> list[str]:
    """Names of the views that read a batch (file, SQL or Delta) source and are stored somewhere."""
    kinds = {s.name: s.WhichOneof("kind") for s in registry.data_sources}
    return sorted(
        v.name
        for v in registry.feature_views
        if kinds.get(v.source) in ("file", "sql", "delta") and (v.online or v.offline)
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_engine(config: RepoConfig, plans: Sequence[ResolvedView]) -> None:
    """Refuses views the configured engine cannot compute (before anything runs).

    Raises:
        FailedPreconditionError: `VIEW_NOT_KEY_LOCAL`: on the Spark engine, a view's
            SQL cannot be split by entity key (`skewless.registry.key_locality`).

    """
    if config.offline_engine != "spark":
        return
    for plan in plans:
        if plan.source.WhichOneof("kind") != "push":
            key_locality(plan.view.sql, plan.key_names, view=plan.name)


def engine_warnings(config: RepoConfig, registry: registry_pb2.Registry) -> list[str]:
    """Why the configured engine would refuse some materializable views (never raises).

    On the Spark engine, one message per view whose SQL cannot be split by entity key
    (`VIEW_NOT_KEY_LOCAL`, naming the view and the construct); empty on DuckDB. `plan`
    shows them so that the refusal is known before a job starts.
    """
    if config.offline_engine != "spark":
        return []
    warnings = []
    for name in materializable_views(registry):
        try:
            check_engine(config, [resolve_view(registry, name)])
        except FailedPreconditionError as exc:
            warnings.append(exc.message)
        except SkewlessError:  # an unresolvable view is validation's to report
            continue
    return warnings


def _open(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    plan: ResolvedView,
    start: datetime,
    end: datetime,
    spark_report: SparkProgressCallback | None,
    cancelled: threading.Event | None = None,
) -> WindowQuery:
    """The view's window, its SQL run by the configured engine."""
    if config.offline_engine != "spark":
        return open_window(config, registry, plan, start, end)
    from skewless.offline.spark_session import spark_session
    from skewless.offline.spark_views import spark_view_rows

    settings = config.spark or SparkSettings()
    session = spark_session(settings)
    rows = spark_view_rows(
        session,
        config,
        registry,
        plan,
        start,
        end,
        target=settings.target,
        progress=spark_report,
        cancelled=cancelled,
    )
    return open_window(config, registry, plan, start, end, rows=rows)


def _select(registry: registry_pb2.Registry, views: Sequence[str] | None) -> list[ResolvedView]:
    names = list(views) if views else materializable_views(registry)
    plans = [resolve_view(registry, name) for name in dict.fromkeys(names)]
    for plan in plans:
        if plan.source.WhichOneof("kind") == "push":
            raise FailedPreconditionError(
                f"feature view {plan.name!r} reads push source {plan.source.name!r}: its rows "
                "arrive through PushFeatures and cannot be materialized from a batch source",
                reason="PUSH_SOURCE_NOT_MATERIALIZABLE",
                metadata={"feature_view": plan.name, "source": plan.source.name},
            )
    return plans


class _Stopped(Exception):
    """The other half of a view's job failed: this one stops too."""


def _check_cancelled(cancelled: threading.Event | None, view: str) -> None:
    """Raises `CancelledError` once `cancelled` is set (checked before every write)."""
    if cancelled is not None and cancelled.is_set():
        raise CancelledError(
            f"materializing feature view {view!r} was cancelled before its window was "
            "committed; nothing more was written, and re-running the window is safe",
            reason="MATERIALIZATION_CANCELLED",
            metadata={"feature_view": view},
        )


class _Reports:
    """The progress of a view whose history and online halves run at once.

    Reports are serialized (the callback is never called from two threads at once) and
    kept in phase order: online reports that arrive while the history is still being
    computed are held, and the last one is let through when the history is staged.
    """

    def __init__(self, report: Callable[[Phase, int, int], None], total: int) -> None:
        self._report = report
        self._total = total
        self._lock = threading.Lock()
        self._computed = False
        self._held: int | None = None

    def compute(self, done: int) -> None:
        with self._lock:
            self._report(Phase.COMPUTE, done, self._total)

    def computed(self, rows: int) -> None:
        with self._lock:
            self._computed = True
            self._total = rows
            if self._held is not None:
                self._report(Phase.ONLINE, self._held, self._total)

    def online(self, done: int) -> None:
        with self._lock:
            if self._computed:
                self._report(Phase.ONLINE, done, self._total)
            else:
                self._held = done


def _write_latest(
    config: RepoConfig,
    plan: ResolvedView,
    window: WindowQuery,
    writer: OnlineWriter,
    report: Callable[[int], None],
    stop: threading.Event,
    cancelled: threading.Event | None = None,
) -> int:
    """Writes the latest row per key of the window to Redis; returns the keys replaced.

    On failure it sets `stop`, so that the history half stops too.
    """
    expire = online_expiry(plan.view)
    written = done = 0
    try:
        for batch in window.batches(latest_only=True, batch_rows=_ONLINE_BATCH_ROWS):
            if stop.is_set():
                raise _Stopped
            rows = prepare_rows(
                config.project,
                plan.storage_name,
                batch,
                join_keys=plan.key_names,
                features=plan.features,
            )
            _check_cancelled(cancelled, plan.name)
            written += writer.write(rows, expire_after=expire)
            done += batch.num_rows
            report(done)
    except _Stopped:
        raise
    except BaseException:
        stop.set()
        raise
    return written


def _stage_history(
    config: RepoConfig,
    plan: ResolvedView,
    window: WindowQuery,
    report: Callable[[int], None],
    stop: threading.Event,
    cancelled: threading.Event | None = None,
) -> tuple[list[StagedFile], int]:
    """Stages the window's rows as history files (removed again if anything fails).

    Returns:
        The staged files and the number of rows they hold.

    """
    history = HistoryWriter(config, plan.storage_name, plan.history_schema)
    rows = 0
    try:
        for batch in window.batches(time_ordered=True):
            if stop.is_set():
                raise _Stopped
            _check_cancelled(cancelled, plan.name)
            history.write(batch)
            rows += batch.num_rows
            report(rows)
        return history.close(), rows
    except BaseException:
        history.abort()
        raise


def _materialize_online_only(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    plan: ResolvedView,
    start: datetime,
    end: datetime,
    writer: OnlineWriter | None,
    report: Callable[[Phase, int, int], None],
    spark_report: SparkProgressCallback | None = None,
    cancelled: threading.Event | None = None,
) -> ViewResult:
    """A view without history: DuckDB keeps the latest row per key; only Redis is written."""
    if writer is None:
        raise FailedPreconditionError("no online writer", reason="REDIS_NOT_CONFIGURED")
    expire = online_expiry(plan.view)
    written = done = 0
    with _open(config, registry, plan, start, end, spark_report, cancelled) as window:
        total = window.row_count
        for batch in window.batches(latest_only=True):
            rows = prepare_rows(
                config.project,
                plan.storage_name,
                batch,
                join_keys=plan.key_names,
                features=plan.features,
            )
            _check_cancelled(cancelled, plan.name)
            written += writer.write(rows, expire_after=expire)
            done += batch.num_rows
            report(Phase.ONLINE, done, total)
    _check_cancelled(cancelled, plan.name)
    advance_watermark(config, plan.storage_name, start, end)
    return ViewResult(
        view=plan.name,
        start=start,
        end=end,
        rows_read=total,
        rows_written=0,
        online_rows_written=written,
    )


def _materialize_view(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    plan: ResolvedView,
    start: datetime,
    end: datetime,
    writer: OnlineWriter | None,
    report: Callable[[Phase, int, int], None],
    fence: Callable[[str], None] | None = None,
    spark_report: SparkProgressCallback | None = None,
    cancelled: threading.Event | None = None,
) -> ViewResult:
    if not plan.view.offline:
        return _materialize_online_only(
            config, registry, plan, start, end, writer, report, spark_report, cancelled
        )
    if plan.view.online and writer is None:
        raise FailedPreconditionError("no online writer", reason="REDIS_NOT_CONFIGURED")
    with _open(config, registry, plan, start, end, spark_report, cancelled) as window:
        reports = _Reports(report, window.row_count)
        stop = threading.Event()
        latest = window.snapshot() if writer is not None and plan.view.online else None
        # Both halves read one snapshot of the window, each on its own cursor; a small
        # window is not worth a thread: its online half runs after its history.
        overlap = latest is not None and window.row_count >= _OVERLAP_MIN_ROWS
        online: Future[int] | None = None
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="materialize-online") as pool:
                try:
                    if overlap:
                        assert latest is not None and writer is not None
                        online = pool.submit(
                            _write_latest,
                            config,
                            plan,
                            latest,
                            writer,
                            reports.online,
                            stop,
                            cancelled,
                        )
                    try:
                        staged, rows_read = _stage_history(
                            config, plan, window, reports.compute, stop, cancelled
                        )
                    except _Stopped:
                        assert online is not None
                        online.result()  # raises the online half's error
                        raise
                    reports.computed(rows_read)
                    try:
                        if online is not None:
                            online_written = online.result()
                        elif latest is not None and writer is not None and rows_read:
                            online_written = _write_latest(
                                config, plan, latest, writer, reports.online, stop, cancelled
                            )
                        else:
                            online_written = 0
                    except BaseException:
                        discard(staged)
                        raise
                except BaseException:
                    stop.set()  # the online half stops at its next batch
                    raise
        finally:
            if latest is not None:
                latest.close()  # after the pool has waited for the online half
    try:
        _check_cancelled(cancelled, plan.name)  # a cancel before the commit keeps none
        if fence is not None:
            fence(plan.name)  # still the view's lock holder (a lease may have expired)
        commit_window(config, plan.storage_name, start, end, staged)
    finally:
        discard(staged)
    advance_watermark(config, plan.storage_name, start, end)
    return ViewResult(
        view=plan.name,
        start=start,
        end=end,
        rows_read=rows_read,
        rows_written=rows_read,
        online_rows_written=online_written,
    )


def _run(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    windows: list[tuple[ResolvedView, datetime, datetime]],
    progress: ProgressCallback | None,
    locks: ViewLocks | None,
    writer: OnlineWriter | None,
    cancelled: threading.Event | None = None,
) -> MaterializeResult:
    held = locks if locks is not None else ViewLocks(config, [p.name for p, _, _ in windows])
    own_writer = writer is None and any(p.view.online for p, _, _ in windows)
    if own_writer:
        writer = OnlineWriter.from_url(
            resolve_redis_url(config), cluster=config.redis_cluster, tls=config.redis_tls
        )
    try:
        results = []
        for index, (plan, start, end) in enumerate(windows):

            def report(
                phase: Phase, done: int, total: int, _i: int = index, _v: str = plan.name
            ) -> None:
                if progress is not None:
                    progress(Progress(_v, phase, done, total, _i, len(windows)))

            def spark_report(spark: SparkProgress, _i: int = index, _v: str = plan.name) -> None:
                if progress is not None:
                    progress(Progress(_v, Phase.COMPUTE, 0, 0, _i, len(windows), spark=spark))

            _check_cancelled(cancelled, plan.name)
            if end <= start:
                result = ViewResult(plan.name, start, end, 0, 0, 0)
            else:
                result = _materialize_view(
                    config,
                    registry,
                    plan,
                    start,
                    end,
                    writer,
                    report,
                    fence=held.check,
                    spark_report=spark_report,
                    cancelled=cancelled,
                )
            results.append(result)
            report(Phase.DONE, result.rows_read, result.rows_read)
        return MaterializeResult(views=tuple(results))
    finally:
        if own_writer and writer is not None:
            writer.close()
        if locks is None:
            held.release()


def materialize(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    start: datetime,
    end: datetime,
    views: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    *,
    locks: ViewLocks | None = None,
    writer: OnlineWriter | None = None,
    cancelled: threading.Event | None = None,
) -> MaterializeResult:
    """Materializes views over [start, end) into both stores.

    Args:
        config: The repository (`redis_url` set, or a fixed embedded Redis port).
        registry: The registry holding the views.
        start: Window start, inclusive; naive means UTC.
        end: Window end, exclusive; naive means UTC.
        views: View names; None or empty means every materializable view.
        progress: Called with a `Progress` after each batch.
        locks: Locks already held for these views (else they are acquired here).
        writer: An online writer to use (else one is opened from the config).
        cancelled: Set (from any thread) to stop: no history is committed and nothing
            more is written to Redis after it is seen (a Redis batch under way
            finishes); on the Spark engine the view's running Spark jobs are cancelled.

    Raises:
        InvalidArgumentError: `end` is before `start`.
        NotFoundError: An unknown view.
        DefinitionError: A column is missing or mistyped (nothing is written for that view).
        FailedPreconditionError: Another job is materializing one of the views, or
            (`VIEW_NOT_KEY_LOCAL`) the Spark engine cannot split a view's SQL by key.
        CancelledError: `cancelled` was set before the job finished; views before the
            current one stay committed, the current one's staged files are removed.

    """
    start, end = _utc(start), _utc(end)
    if end < start:
        raise InvalidArgumentError(
            f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})",
            field="end_time",
            reason="WINDOW_REVERSED",
            metadata={"start_time": start.isoformat(), "end_time": end.isoformat()},
        )
    plans = _select(registry, views)
    check_engine(config, plans)
    windows = [(p, start, end) for p in plans]
    return _run(config, registry, windows, progress, locks, writer, cancelled)


def materialize_incremental(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    end: datetime,
    views: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    *,
    locks: ViewLocks | None = None,
    writer: OnlineWriter | None = None,
    cancelled: threading.Event | None = None,
) -> MaterializeResult:
    """Materializes each view from its watermark (or the epoch) to `end`.

    Arguments and errors are those of `materialize`. A view already at or past `end`
    is left alone.
    """
    end = _utc(end)
    plans = _select(registry, views)
    check_engine(config, plans)
    held = locks if locks is not None else ViewLocks(config, [p.name for p in plans])
    try:
        windows = [(p, read_watermark(config, p.storage_name) or EPOCH, end) for p in plans]
        return _run(config, registry, windows, progress, held, writer, cancelled)
    finally:
        if locks is None:
            held.release()
