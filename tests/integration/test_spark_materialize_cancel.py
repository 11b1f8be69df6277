"""Cancelling a materialization job on the Spark engine cancels its Spark work.

A job whose view is still computing on the test run's local Spark session is cancelled:
it must end CANCELLED within seconds (not when its Spark job would have finished), its
running Spark jobs must end cancelled, and the stores must hold what they held before:
no partial history commit, no Redis write, no staged file, the watermark where it was,
and the views' locks free for the next job. The same guarantees on DuckDB, for a job
cancelled while its history is being staged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from skewless.core.config import RepoConfig
from skewless.materialization.jobs import (
    JobRecord,
    JobState,
    JobStore,
    StartedJob,
    Trigger,
    run_job,
    start_job,
)
from skewless.materialization.pipeline import Phase, Progress, materialize
from skewless.materialization.view_state import read_watermark
from skewless.server.services.materialization import job_to_proto
from skewless.v1 import materialization_service_pb2 as pb
from skewless.v1 import registry_pb2
from tests.integration.matfixtures import T0, driver_rows, make_config, make_registry, write_source
from tests.integration.test_materialize import history, online

HOUR = timedelta(hours=1)
#: Row-local and deterministic, but about 50 ms of CPU a row on an executor: the 960
#: source rows keep two local cores busy for about half a minute (26.6 s measured).
SLOW_SQL = (
    "SELECT * FROM source WHERE levenshtein(repeat('a', 4000 + trips % 2), repeat('b', 4000)) >= 0"
)


@dataclass
class JobInThread:
    """A materialization job of `driver_stats` running in a thread, and its cancel event."""

    started: StartedJob
    store: JobStore
    cancelled: threading.Event = field(default_factory=threading.Event)
    final: list[JobRecord] = field(default_factory=list)
    thread: threading.Thread | None = None

    def cancel_and_wait(self) -> JobRecord:
        """Cancels the job; it must stop within 10 s of the cancel. Returns its record."""
        assert self.thread is not None
        cancelled_at = time.monotonic()
        self.cancelled.set()
        self.thread.join(30)
        took = time.monotonic() - cancelled_at
        assert not self.thread.is_alive(), "the job kept running after the cancel"
        assert took < 10, f"the job took {took:.1f} s to stop after the cancel"
        return self.final[0]


def start_in_thread(config: RepoConfig, registry: registry_pb2.Registry) -> JobInThread:
    """Starts a 48-hour window job of `driver_stats` and runs it in a thread."""
    started = start_job(
        config,
        registry,
        ["driver_stats"],
        window_start=T0,
        window_end=T0 + 48 * HOUR,
        incremental=False,
        trigger=Trigger.API,
    )
    job = JobInThread(started=started, store=JobStore(config))
    job.thread = threading.Thread(
        target=lambda: job.final.append(
            run_job(
                config,
                registry,
                job.store,
                started.record,
                locks=started.locks,
                cancelled=job.cancelled,
            )
        )
    )
    job.thread.start()
    return job


def test_cancelling_a_spark_job_stops_its_spark_work_and_writes_nothing(
    tmp_path: Path, redis_url: str, spark: Any
) -> None:
    config = make_config(tmp_path, redis_url, project="cancel", engine="spark")
    write_source(config, driver_rows())
    materialize(config, make_registry(), T0, T0 + 12 * HOUR)  # what the stores hold before
    history_before = history(config)
    online_before = online(redis_url, "cancel")
    watermark_before = read_watermark(config, "driver_stats")
    assert history_before.num_rows > 0 and online_before

    tracker = spark.sparkContext.statusTracker()
    job = start_in_thread(config, make_registry(sql=SLOW_SQL))
    deadline = time.monotonic() + 120
    while not tracker.getActiveJobsIds():
        assert job.thread is not None and job.thread.is_alive(), job.final
        assert time.monotonic() < deadline, "no Spark job started"
        time.sleep(0.05)
    time.sleep(1.0)  # the job's tasks are running the view's SQL
    running = set(tracker.getActiveJobsIds())
    assert job.store.get(job.started.record.job_id).state == JobState.RUNNING
    record = job.cancel_and_wait()
    assert record.state == JobState.CANCELLED and record.finished
    assert record.error is not None and record.error.code == "CANCELLED"
    assert record.error.reason == "MATERIALIZATION_CANCELLED"
    assert job.store.get(record.job_id).state == JobState.CANCELLED
    wire = job_to_proto(job.store.get(record.job_id))
    assert wire.state == pb.JOB_STATE_FAILED and wire.error_status.code == 1  # CANCELLED
    assert wire.spark.application_id == spark.sparkContext.applicationId

    deadline = time.monotonic() + 30  # Spark ends cancelled jobs asynchronously
    while set(tracker.getActiveJobsIds()) & running and time.monotonic() < deadline:
        time.sleep(0.1)
    statuses = {str(tracker.getJobInfo(j).status) for j in running if tracker.getJobInfo(j)}
    assert statuses == {"FAILED"}, statuses  # cancelled, not finished

    assert history(config).equals(history_before)  # no partial commit
    assert online(redis_url, "cancel") == online_before  # no Redis write
    assert read_watermark(config, "driver_stats") == watermark_before
    assert not [p for p in config.data_dir.rglob("*") if p.name.endswith(".tmp")]
    again = start_job(  # the locks were released
        config,
        make_registry(),
        ["driver_stats"],
        window_start=T0,
        window_end=T0 + HOUR,
        incremental=False,
        trigger=Trigger.API,
    )
    again.locks.release()


def test_a_job_cancelled_mid_window_on_duckdb_commits_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    config = make_config(tmp_path, redis_url, project="cancel_duck")
    write_source(config, driver_rows())
    registry = make_registry()
    materialize(config, registry, T0, T0 + 12 * HOUR)
    history_before = history(config)
    online_before = online(redis_url, "cancel_duck")
    started = start_job(
        config,
        registry,
        ["driver_stats"],
        window_start=T0,
        window_end=T0 + 48 * HOUR,
        incremental=False,
        trigger=Trigger.API,
    )
    cancelled = threading.Event()
    reports: list[Progress] = []

    def cancel_after_the_first_batch(report: Progress) -> None:
        reports.append(report)
        if report.phase == Phase.COMPUTE and report.rows_done > 0:
            cancelled.set()  # the history is half staged, Redis not yet written

    record = run_job(
        config,
        registry,
        JobStore(config),
        started.record,
        locks=started.locks,
        progress=cancel_after_the_first_batch,
        cancelled=cancelled,
    )
    assert cancelled.is_set() and record.state == JobState.CANCELLED, record.error
    assert not any(r.phase == Phase.DONE for r in reports)
    assert history(config).equals(history_before)
    assert online(redis_url, "cancel_duck") == online_before
    assert not [p for p in config.data_dir.rglob("*") if p.name.endswith(".tmp")]
