"""Materialization job records, persisted under `<data_dir>/jobs/` for the CLI and server.

Each job is one JSON file `<job id>.json`, replaced atomically on every change. Job IDs
start with their UTC creation time, so that their order is their age. A job left
PENDING or RUNNING by a process that no longer exists is reported as FAILED.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skewless.core.config import RepoConfig
from skewless.core.errors import (
    CancelledError,
    InvalidArgumentError,
    NotFoundError,
    SkewlessError,
    quoted,
)
from skewless.core.heap import release_free_memory_soon
from skewless.materialization.pipeline import (
    Phase,
    Progress,
    ProgressCallback,
    check_engine,
    materializable_views,
    materialize,
    materialize_incremental,
)
from skewless.materialization.view_state import ViewLocks
from skewless.registry.feature_refs import resolve_view
from skewless.v1 import registry_pb2

__all__ = [
    "JobError",
    "JobRecord",
    "JobState",
    "JobStore",
    "ProgressThrottle",
    "StartedJob",
    "Trigger",
    "is_job_id",
    "run_job",
    "start_job",
]

_log = logging.getLogger(__name__)


class Trigger(enum.StrEnum):
    """Who started a job."""

    CLI = "cli"
    API = "api"
    SCHEDULE = "schedule"


class JobState(enum.StrEnum):
    """The lifecycle of a job."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped on request; `error` says so (code CANCELLED)


@dataclass(frozen=True)
class JobError:
    """Why a job failed, as the status of the call that would have done its work.

    Attributes:
        code: The `google.rpc.Code` name (`FAILED_PRECONDITION`, `UNAVAILABLE`, ...).
        reason: The `ErrorInfo` reason (UPPER_SNAKE_CASE).
        message: What went wrong and what to do, in English (no server paths).
        metadata: The dynamic values the message mentions.

    """

    code: str
    reason: str
    message: str
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException, config: RepoConfig) -> JobError:
        """The error of a job that raised `exc`; unexpected errors say nothing internal."""
        if isinstance(exc, SkewlessError):
            return cls(
                code=exc.code,
                reason=exc.reason,
                message=config.redacted(exc.message),
                metadata={k: config.redacted(v) for k, v in exc.metadata.items()},
            )
        return cls(
            code="INTERNAL",
            reason="INTERNAL",
            message="the job failed unexpectedly; the server log has the details",
        )


#: A job left PENDING or RUNNING by a process that no longer exists.
_PROCESS_EXITED = "JOB_PROCESS_EXITED"


@dataclass(frozen=True)
class JobRecord:
    """One materialization job.

    Attributes:
        job_id: Unique, time-ordered ID.
        feature_views: The views it materializes.
        window_start: Start of the window (inclusive); for incremental jobs the earliest
            watermark, None until known.
        window_end: End of the window (exclusive).
        incremental: Whether each view continues from its watermark.
        state: The current state.
        rows_read: Rows computed from the sources so far.
        rows_written: History rows written so far.
        progress: Completion estimate, 0 to 1.
        error: For failed jobs, what went wrong (None otherwise).
        create_time: When the job was created.
        update_time: When it last changed.
        pid: The process running it.
        trigger: Who started it (`cli`, `api`, `schedule`).
        host: The machine running it (a data dir on object storage is shared by
            several); a dead process is only detected on its own machine.
        spark_application_id: On the Spark engine, the Spark application running the
            job's views ("" otherwise).
        spark_stages_completed: Stages of the current view's Spark jobs that finished.
        spark_stages_total: Stages of the current view's Spark jobs known so far.
        spark_tasks_completed: Tasks of those stages that finished.
        spark_tasks_total: Tasks of those stages.

    """

    job_id: str
    feature_views: tuple[str, ...]
    window_start: datetime | None
    window_end: datetime
    incremental: bool
    state: JobState
    rows_read: int = 0
    rows_written: int = 0
    progress: float = 0.0
    error: JobError | None = None
    create_time: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    update_time: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    pid: int = dataclasses.field(default_factory=os.getpid)
    trigger: Trigger = Trigger.API
    host: str = dataclasses.field(default_factory=socket.gethostname)
    spark_application_id: str = ""
    spark_stages_completed: int = 0
    spark_stages_total: int = 0
    spark_tasks_completed: int = 0
    spark_tasks_total: int = 0

    @property
    def finished(self) -> bool:
        """Whether the job succeeded, failed or was cancelled."""
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    def to_json(self) -> dict[str, Any]:
        """Returns the record as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["error"] = dataclasses.asdict(self.error) if self.error is not None else None
        data["feature_views"] = list(self.feature_views)
        data["state"] = self.state.value
        data["trigger"] = Trigger(self.trigger).value
        for name in ("window_start", "window_end", "create_time", "update_time"):
            value = getattr(self, name)
            data[name] = value.isoformat() if value is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """Parses a record written by `to_json`."""
        times = {
            name: datetime.fromisoformat(data[name]) if data.get(name) else None
            for name in ("window_start", "window_end", "create_time", "update_time")
        }
        error = data.get("error")
        if isinstance(error, str):  # records written before errors had a code
            error = {"code": "UNKNOWN", "reason": "JOB_FAILED", "message": error} if error else None
        return cls(
            **{
                **data,
                **times,
                "feature_views": tuple(data["feature_views"]),
                "state": JobState(data["state"]),
                "trigger": Trigger(data.get("trigger", Trigger.API)),
                "error": JobError(**error) if error else None,
            }
        )


#: The folder (key prefix) of job records in the data dir.
JOBS_DIR = "jobs"

_JOB_ID = re.compile(r"\d{8}T\d{12}-[0-9a-f]{8}")


def is_job_id(text: str) -> bool:
    """Whether `text` has the form of a job ID (`<UTC creation time>-<8 hex digits>`)."""
    return isinstance(text, str) and _JOB_ID.fullmatch(text) is not None


_HOST = socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """The job records of one project."""

    def __init__(self, config: RepoConfig) -> None:
        """Binds the store to `<data_dir>/jobs` (a folder, or a prefix on object storage)."""
        self.storage = config.storage
        self._lock = threading.Lock()

    def _path(self, job_id: str) -> str:
        if not is_job_id(job_id):
            raise InvalidArgumentError(
                f"{quoted(job_id, 64)} is not a job ID: job IDs look like "
                "20240501T120000123456-1a2b3c4d (list jobs to see them)",
                field="job_id",
                reason="INVALID_JOB_ID",
                metadata={"job_id": job_id},
            )
        return f"{JOBS_DIR}/{job_id}.json"

    def _save(self, record: JobRecord) -> None:
        # One writer per record (the job's process): an atomic replace is enough.
        self.storage.write_bytes(self._path(record.job_id), json.dumps(record.to_json()).encode())

    def create(
        self,
        feature_views: Sequence[str],
        *,
        window_start: datetime | None,
        window_end: datetime,
        incremental: bool = False,
        trigger: Trigger = Trigger.API,
    ) -> JobRecord:
        """Records a new PENDING job and returns it."""
        now = datetime.now(UTC)
        record = JobRecord(
            job_id=f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}",
            feature_views=tuple(feature_views),
            window_start=window_start,
            window_end=window_end,
            incremental=incremental,
            state=JobState.PENDING,
            create_time=now,
            update_time=now,
            trigger=Trigger(trigger),
        )
        self._save(record)
        return record

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Applies field changes to a job (and its update time) and returns it."""
        with self._lock:
            record = self._read(job_id)
            record = dataclasses.replace(record, **changes, update_time=datetime.now(UTC))
            self._save(record)
            return record

    def _read(self, job_id: str) -> JobRecord:
        raw = self.storage.read_bytes(self._path(job_id))
        if raw is None:
            raise NotFoundError(
                f"no materialization job {job_id}; list jobs to see the known IDs",
                reason="JOB_NOT_FOUND",
                metadata={"job_id": job_id},
            )
        return JobRecord.from_json(json.loads(raw))

    def _reported(self, record: JobRecord) -> JobRecord:
        if not record.finished and record.host in ("", _HOST) and not _alive(record.pid):
            return dataclasses.replace(
                record,
                state=JobState.FAILED,
                error=JobError(
                    code="ABORTED",
                    reason=_PROCESS_EXITED,
                    message=(
                        f"the process running this job (pid {record.pid}) exited before it "
                        "finished; re-running the same window is safe"
                    ),
                    metadata={"pid": str(record.pid)},
                ),
            )
        return record

    def get(self, job_id: str) -> JobRecord:
        """Returns one job.

        Raises:
            NotFoundError: Unknown job ID.

        """
        return self._reported(self._read(job_id))

    def list(self, feature_view: str = "") -> list[JobRecord]:
        """Returns all jobs (optionally only those including a view), newest first."""
        records = []
        for stored in reversed(self.storage.list_files(JOBS_DIR)):
            if not stored.key.endswith(".json") or not is_job_id(stored.key[5:-5]):
                continue
            try:
                raw = self.storage.read_bytes(stored.key)
                if raw is None:
                    continue
                record = JobRecord.from_json(json.loads(raw))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if feature_view and feature_view not in record.feature_views:
                continue
            records.append(self._reported(record))
        return records


class ProgressThrottle:
    """Lets through at most one update per `interval` seconds (the last one always passes)."""

    def __init__(self, interval: float = 0.5) -> None:
        """Sets the minimum time between updates."""
        self.interval = interval
        self._last = 0.0

    def ready(self) -> bool:
        """Whether an update may be written now."""
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False


@dataclass(frozen=True)
class StartedJob:
    """A recorded PENDING job and the locks of its views, ready for `run_job`.

    Attributes:
        record: The job's record.
        locks: The views' job locks; `run_job` releases them when the job ends.

    """

    record: JobRecord
    locks: ViewLocks


def start_job(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    views: Sequence[str],
    *,
    window_start: datetime | None,
    window_end: datetime,
    incremental: bool,
    trigger: Trigger,
    locks: ViewLocks | None = None,
) -> StartedJob:
    """Checks the views, takes their locks and records a PENDING job (the one way to start).

    Args:
        config: The repository.
        registry: The registry holding the views.
        views: The views; empty means every materializable view.
        window_start: The window's start; None for incremental jobs (known when they run).
        window_end: The window's end (exclusive).
        incremental: Continue each view from its watermark.
        trigger: Who starts it (`cli`, `api`, `schedule`).
        locks: The views' locks when the caller took them already (released on error).

    Raises:
        NotFoundError: An unknown view (nothing is locked or recorded).
        FailedPreconditionError: Another job holds a view's lock, or
            (`VIEW_NOT_KEY_LOCAL`) the Spark engine cannot split a view's SQL by key.

    """
    names = list(dict.fromkeys(views)) or materializable_views(registry)
    try:
        check_engine(config, [resolve_view(registry, name) for name in names])
    except BaseException:
        if locks is not None:
            locks.release()
        raise
    if locks is None:
        locks = ViewLocks(config, names)
    try:
        record = JobStore(config).create(
            names,
            window_start=window_start,
            window_end=window_end,
            incremental=incremental,
            trigger=trigger,
        )
    except BaseException:
        locks.release()
        raise
    return StartedJob(record=record, locks=locks)


def run_job(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    store: JobStore,
    record: JobRecord,
    *,
    locks: ViewLocks | None = None,
    progress: ProgressCallback | None = None,
    cancelled: threading.Event | None = None,
) -> JobRecord:
    """Runs a recorded job to its end, keeping its record up to date; never raises.

    Args:
        config: The repository.
        registry: The registry holding the job's views.
        store: Where the record lives.
        record: The PENDING job (views, window, incremental flag).
        locks: The views' locks if already held (they are released at the end).
        progress: Also called with every progress report.
        cancelled: Set (from any thread) to cancel the job: the current view's window is
            not committed, nothing more goes to Redis, its staged files are removed and,
            on the Spark engine, its running Spark jobs are cancelled.

    Returns:
        The final record (SUCCEEDED, FAILED with the error, or CANCELLED).

    """
    job_id = record.job_id
    throttle = ProgressThrottle()
    finished_rows = 0
    last_view = ""
    last_rows = 0

    def on_progress(report: Progress) -> None:
        nonlocal finished_rows, last_view, last_rows
        if report.view != last_view:
            finished_rows += last_rows
            last_view, last_rows = report.view, 0
        if report.phase in (Phase.COMPUTE, Phase.DONE):
            last_rows = report.rows_done
        if progress is not None:
            progress(report)
        if report.spark is not None:
            spark = report.spark
            store.update(
                job_id,
                spark_application_id=spark.application_id,
                spark_stages_completed=spark.stages_completed,
                spark_stages_total=spark.stages_total,
                spark_tasks_completed=spark.tasks_completed,
                spark_tasks_total=spark.tasks_total,
            )
            return
        if throttle.ready():
            store.update(job_id, rows_read=finished_rows + last_rows, progress=report.fraction)

    try:
        store.update(job_id, state=JobState.RUNNING)
        if record.incremental:
            result = materialize_incremental(
                config,
                registry,
                record.window_end,
                record.feature_views,
                on_progress,
                locks=locks,
                cancelled=cancelled,
            )
        else:
            assert record.window_start is not None
            result = materialize(
                config,
                registry,
                record.window_start,
                record.window_end,
                record.feature_views,
                on_progress,
                locks=locks,
                cancelled=cancelled,
            )
        starts = [v.start for v in result.views]
        return store.update(
            job_id,
            state=JobState.SUCCEEDED,
            rows_read=result.rows_read,
            rows_written=result.rows_written,
            progress=1.0,
            window_start=min(starts) if starts else record.window_start,
        )
    except CancelledError as exc:
        _log.info("materialization job %s cancelled: %s", job_id, exc.message)
        return store.update(
            job_id, state=JobState.CANCELLED, error=JobError.from_exception(exc, config)
        )
    except SkewlessError as exc:
        _log.warning("materialization job %s failed: %s", job_id, exc.message)
        return store.update(
            job_id, state=JobState.FAILED, error=JobError.from_exception(exc, config)
        )
    except Exception as exc:
        _log.exception("materialization job %s failed", job_id)
        return store.update(
            job_id, state=JobState.FAILED, error=JobError.from_exception(exc, config)
        )
    finally:
        if locks is not None:
            locks.release()
        release_free_memory_soon()  # the job's freed memory back to the system
