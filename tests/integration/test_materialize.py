"""Materialization against real files, real DuckDB and a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis

from skewless.core.config import RepoConfig
from skewless.core.errors import DefinitionError, FailedPreconditionError
from skewless.materialization.jobs import JobState, JobStore
from skewless.materialization.pipeline import materialize, materialize_incremental
from skewless.materialization.view_state import ViewLocks, read_watermark
from skewless.offline.offline_store import history_files
from skewless.online.codec import decode_value
from tests.helpers.engines import ENGINES
from tests.integration.matfixtures import (
    T0,
    VT,
    driver_rows,
    make_config,
    make_registry,
    write_source,
)

DAY = timedelta(days=1)


def history(config: RepoConfig, view: str = "driver_stats") -> pa.Table:
    files = history_files(config, view)
    if not files:
        return pa.table({"driver_id": pa.array([], pa.int64())})
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.sort_by([("event_timestamp", "ascending"), ("driver_id", "ascending")])


def online(url: str, project: str = "mat", view: str = "driver_stats") -> dict[bytes, dict]:
    client = redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter(match=f"{project}:{view}:*".encode(), count=1000):
        out[key] = {
            f: (int(v) if f in (b"_ts", b"_ct") else decode_value(v))
            for f, v in client.hgetall(key).items()
        }
    client.close()
    return out


def expected_latest(table: pa.Table, end_offset_hours: int) -> dict[int, float]:
    """conv_rate of the latest row per driver with ts < T0 + end hours."""
    return {d: float(d * 1000 + end_offset_hours - 1) for d in set(table["driver_id"].to_pylist())}


@pytest.fixture
def repo(tmp_path: Path, redis_url: str) -> RepoConfig:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    return config


@pytest.fixture(params=ENGINES)
def engine_repo(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> RepoConfig:
    """The repository on each engine in turn (the view's SQL on DuckDB, then on Spark)."""
    if request.param == "spark":
        request.getfixturevalue("spark")  # the test run's one local session
    config = make_config(tmp_path / "repo", redis_url, engine=request.param)
    write_source(config, driver_rows())
    return config


def test_window_twice_equals_once(engine_repo: RepoConfig) -> None:
    repo = engine_repo
    registry = make_registry()
    first = materialize(repo, registry, T0, T0 + DAY)
    assert first.rows_read == 20 * 24
    once_history, once_online = history(repo), online(repo.redis_url)
    second = materialize(repo, registry, T0, T0 + DAY)
    assert second.rows_read == first.rows_read
    assert history(repo).equals(once_history)
    assert online(repo.redis_url) == once_online
    assert once_history.num_rows == 20 * 24
    latest = {k: v[b"conv_rate"] for k, v in once_online.items()}
    assert latest[b"mat:driver_stats:{7}"] == 7 * 1000 + 23.0
    row = once_online[b"mat:driver_stats:{7}"]
    assert row[b"label"] == "driver-7-23" and row[b"trips"] == 7 + 23
    assert row[b"_ts"] == int((T0 + timedelta(hours=23)).timestamp() * 1_000_000)
    assert read_watermark(repo, "driver_stats") == T0 + DAY


def test_older_window_never_overwrites_newer_online(engine_repo: RepoConfig) -> None:
    repo = engine_repo
    registry = make_registry()
    materialize(repo, registry, T0 + DAY, T0 + 2 * DAY)
    newer = online(repo.redis_url)
    result = materialize(repo, registry, T0, T0 + DAY)
    assert result.views[0].online_rows_written == 0
    assert online(repo.redis_url) == newer
    assert history(repo).num_rows == 20 * 48  # both windows in the history, once each


def test_rerun_of_overlapping_window_replaces_only_that_window(engine_repo: RepoConfig) -> None:
    repo = engine_repo
    registry = make_registry()
    materialize(repo, registry, T0, T0 + 2 * DAY)
    changed = driver_rows()
    changed = changed.set_column(3, "conv_rate", pc.multiply(changed["conv_rate"], -1.0))
    write_source(repo, changed)
    materialize(repo, registry, T0 + timedelta(hours=12), T0 + timedelta(hours=36))
    table = history(repo)
    assert table.num_rows == 20 * 48
    hours = [(t - T0).total_seconds() / 3600 for t in table["event_timestamp"].to_pylist()]
    for hour, rate in zip(hours, table["conv_rate"].to_pylist(), strict=True):
        inside = 12 <= hour < 36
        assert (rate <= 0) == inside or rate == 0.0


def test_incremental_runs_continue_from_the_watermark(engine_repo: RepoConfig) -> None:
    repo = engine_repo
    registry = make_registry()
    first = materialize_incremental(repo, registry, T0 + timedelta(hours=10))
    assert first.rows_read == 20 * 10
    assert read_watermark(repo, "driver_stats") == T0 + timedelta(hours=10)
    second = materialize_incremental(repo, registry, T0 + timedelta(hours=30))
    assert second.views[0].start == T0 + timedelta(hours=10)
    assert second.rows_read == 20 * 20
    nothing = materialize_incremental(repo, registry, T0 + timedelta(hours=30))
    assert nothing.rows_read == 0
    table = history(repo)
    keys = list(
        zip(table["driver_id"].to_pylist(), table["event_timestamp"].to_pylist(), strict=True)
    )
    assert len(keys) == len(set(keys)) == 20 * 30  # no gap, no overlap
    assert {v[b"conv_rate"] for v in online(repo.redis_url).values()} == {
        float(d * 1000 + 29) for d in range(20)
    }


def test_sql_transformation_and_casts(repo: RepoConfig) -> None:
    registry = make_registry(
        sql="SELECT driver_id, ts, created, conv_rate * 2 AS conv_rate, trips, "
        "upper(label) AS label FROM source WHERE driver_id < 5",
    )
    result = materialize(repo, registry, T0, T0 + DAY)
    assert result.rows_read == 5 * 24
    table = history(repo)
    assert table.schema.field("trips").type == pa.int64()  # int32 source cast to declared INT64
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert online(repo.redis_url)[b"mat:driver_stats:{2}"][b"label"] == "DRIVER-2-23"


@pytest.mark.parametrize(
    ("kwargs", "column"),
    [
        (
            {"feature_types": {"conv_rate": VT.VALUE_TYPE_FLOAT64, "label": VT.VALUE_TYPE_INT64}},
            "label",
        ),
        ({"feature_types": {"conv_rate": VT.VALUE_TYPE_BOOL}}, "conv_rate"),
        ({"feature_types": {"missing_feature": VT.VALUE_TYPE_FLOAT64}}, "missing_feature"),
        ({"sql": "SELECT driver_id, created, conv_rate FROM source"}, "ts"),
    ],
)
def test_bad_columns_name_view_and_column_and_write_nothing(
    repo: RepoConfig, kwargs: dict, column: str
) -> None:
    registry = make_registry(**kwargs)
    with pytest.raises(DefinitionError) as info:
        materialize(repo, registry, T0, T0 + DAY)
    assert "driver_stats" in info.value.message and repr(column) in info.value.message
    assert info.value.metadata == {"feature_view": "driver_stats", "column": column}
    assert history_files(repo, "driver_stats") == []
    assert online(repo.redis_url) == {}
    assert read_watermark(repo, "driver_stats") is None


def test_a_second_job_for_the_same_view_is_refused(repo: RepoConfig) -> None:
    registry = make_registry()
    with ViewLocks(repo, ["driver_stats"]), pytest.raises(FailedPreconditionError) as info:
        materialize(repo, registry, T0, T0 + DAY)
    assert "driver_stats" in info.value.message
    materialize(repo, registry, T0, T0 + DAY)  # released: runs


_KILLED_JOB = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from datetime import timedelta
    sys.path.insert(0, {root!r})
    from tests.integration.matfixtures import T0, make_config, make_registry
    from skewless.materialization import pipeline as m
    from skewless.materialization.jobs import JobStore, JobState
    config = make_config(Path({repo!r}), {url!r}, engine={engine!r})
    marker = Path({marker!r})
    store = JobStore(config)
    job = store.create(["driver_stats"], window_start=T0, window_end=T0 + timedelta(days=2),
                       trigger="cli")
    store.update(job.job_id, state=JobState.RUNNING)
    m._ONLINE_BATCH_ROWS = 5
    def progress(p):
        if p.phase == {phase!r} and p.rows_done > 0:
            marker.write_text(job.job_id)
            time.sleep(60)
    m.materialize(config, make_registry(), T0, T0 + timedelta(days=2), progress=progress)
    """
)


@pytest.mark.parametrize(
    ("phase", "engine"), [("compute", "duckdb"), ("online", "duckdb"), ("online", "spark")]
)
def test_sigkill_mid_window_then_rerun_converges(
    tmp_path: Path, redis_url: str, request: pytest.FixtureRequest, phase: str, engine: str
) -> None:
    if engine == "spark":
        request.getfixturevalue("spark")  # the re-run below uses the test run's session
    repo = make_config(tmp_path / "repo", redis_url, engine=engine)
    write_source(repo, driver_rows())
    registry = make_registry()
    materialize(repo, registry, T0, T0 + 2 * DAY)
    before_history = history(repo)
    changed = driver_rows()
    changed = changed.set_column(3, "conv_rate", pc.add(changed["conv_rate"], 0.5))
    write_source(repo, changed)
    marker = tmp_path / "marker"
    script = _KILLED_JOB.format(
        root=str(Path(__file__).resolve().parents[2]),
        repo=str(repo.root),
        url=repo.redis_url,
        marker=str(marker),
        phase=phase,
        engine=engine,
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the job ended before reaching the kill point"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    job_id = marker.read_text()
    # The crashed job: history is the previous state, the job record says it failed.
    assert history(repo).equals(before_history)
    record = JobStore(repo).get(job_id)
    assert record.state == JobState.FAILED and record.error is not None
    assert "exited" in record.error.message and record.error.reason == "JOB_PROCESS_EXITED"
    # The lock died with the holder; a re-run converges to one clean run.
    materialize(repo, registry, T0, T0 + 2 * DAY)
    table = history(repo)
    keys = list(
        zip(table["driver_id"].to_pylist(), table["event_timestamp"].to_pylist(), strict=True)
    )
    assert len(keys) == len(set(keys)) == 20 * 48
    assert sorted(table["conv_rate"].to_pylist()) == sorted(changed["conv_rate"].to_pylist())
    assert {k: v[b"conv_rate"] for k, v in online(repo.redis_url).items()} == {
        f"mat:driver_stats:{{{d}}}".encode(): d * 1000 + 47.5 for d in range(20)
    }
    leftovers = [p for p in (repo.offline_dir / "driver_stats").rglob("*") if p.suffix == ".tmp"]
    assert leftovers == [] or all(p.exists() for p in leftovers)  # stale .tmp are reaped later


def test_job_records_are_persisted(repo: RepoConfig) -> None:
    store = JobStore(repo)
    job = store.create(["driver_stats"], window_start=T0, window_end=T0 + DAY, trigger="cli")
    store.update(job.job_id, state=JobState.SUCCEEDED, rows_read=5, progress=1.0)
    other = store.create(["other"], window_start=None, window_end=T0 + DAY, incremental=True)
    again = JobStore(repo)
    assert [j.job_id for j in again.list()] == [other.job_id, job.job_id]
    assert [j.job_id for j in again.list("driver_stats")] == [job.job_id]
    got = again.get(job.job_id)
    assert got.state == JobState.SUCCEEDED and got.rows_read == 5 and got.window_start == T0


# --- schedules ---------------------------------------------------------------------------


def test_schedule_catches_up_and_retries_with_backoff(repo: RepoConfig) -> None:
    from skewless.materialization.schedule import Scheduler

    registry = make_registry(schedule=timedelta(hours=1))
    scheduler = Scheduler(repo, base_backoff=timedelta(minutes=1))
    now = T0 + timedelta(hours=30, minutes=10)
    first = asyncio.run(scheduler.tick(registry, now))
    assert [(j.state, j.rows_read, j.trigger) for j in first] == [
        (JobState.SUCCEEDED, 20 * 30, "schedule")
    ]
    assert read_watermark(repo, "driver_stats") == T0 + timedelta(hours=30)
    assert asyncio.run(scheduler.tick(registry, now + timedelta(minutes=20))) == []  # not due
    # The server was down for three periods: one run catches up on all of them.
    later = T0 + timedelta(hours=33, minutes=5)
    caught_up = asyncio.run(scheduler.tick(registry, later))
    assert [j.rows_read for j in caught_up] == [20 * 3]
    assert caught_up[0].window_start == T0 + timedelta(hours=30)
    assert read_watermark(repo, "driver_stats") == T0 + timedelta(hours=33)
    # A failing run is recorded with its error, then retried after the backoff.
    source = repo.root / "data" / "driver.parquet"
    saved = source.read_bytes()
    source.unlink()
    failing = T0 + timedelta(hours=34, minutes=1)
    failed = asyncio.run(scheduler.tick(registry, failing))
    assert failed[0].state == JobState.FAILED and failed[0].error is not None
    assert "driver.parquet" in failed[0].error.message
    assert str(repo.root) not in failed[0].error.message  # no server paths
    assert JobStore(repo).get(failed[0].job_id).error == failed[0].error
    source.write_bytes(saved)
    assert asyncio.run(scheduler.tick(registry, failing + timedelta(seconds=30))) == []  # backoff
    retried = asyncio.run(scheduler.tick(registry, failing + timedelta(minutes=1)))
    assert [(j.state, j.rows_read) for j in retried] == [(JobState.SUCCEEDED, 20)]
    table = history(repo)
    keys = list(
        zip(table["driver_id"].to_pylist(), table["event_timestamp"].to_pylist(), strict=True)
    )
    assert len(keys) == len(set(keys)) == 20 * 34


def test_run_scheduler_task_uses_the_holders_registry(repo: RepoConfig) -> None:
    from skewless.materialization.schedule import run_scheduler
    from skewless.registry.registry_store import RegistryStore
    from skewless.server.registry_holder import RegistryHolder

    RegistryStore(repo.registry_path).save(make_registry(schedule=timedelta(hours=6)))
    holder = RegistryHolder(RegistryStore(repo.registry_path))
    holder.reload()

    async def go() -> None:
        task = asyncio.create_task(
            run_scheduler(repo, holder, tick_seconds=0.02, clock=lambda: T0 + timedelta(hours=13))
        )
        deadline = time.monotonic() + 20
        while read_watermark(repo, "driver_stats") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert read_watermark(repo, "driver_stats") == T0 + timedelta(hours=12)


# --- the gRPC service and the CLI ----------------------------------------------------------


def test_materialization_service_over_grpc(repo: RepoConfig) -> None:
    import grpc
    from google.protobuf import timestamp_pb2

    from skewless.registry.registry_store import RegistryStore
    from skewless.server.app import create_server
    from skewless.v1 import materialization_service_pb2 as pb
    from skewless.v1 import materialization_service_pb2_grpc as pbg

    RegistryStore(repo.registry_path).save(make_registry())

    def ts(value) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(value)
        return stamp

    async def go() -> None:
        server, port = create_server(repo)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pbg.MaterializationServiceStub(channel)
                started = await stub.StartMaterialization(
                    pb.StartMaterializationRequest(start_time=ts(T0), end_time=ts(T0 + DAY))
                )
                job = started.job
                assert job.state in (pb.JOB_STATE_PENDING, pb.JOB_STATE_RUNNING)
                assert list(job.feature_views) == ["driver_stats"]
                deadline = time.monotonic() + 30
                while job.state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                    job = (
                        await stub.GetMaterializationJob(
                            pb.GetMaterializationJobRequest(job_id=job.job_id)
                        )
                    ).job
                assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
                assert (job.rows_read, job.rows_written, job.progress) == (480, 480, 1.0)
                incremental = await stub.StartMaterialization(
                    pb.StartMaterializationRequest(end_time=ts(T0 + 2 * DAY), incremental=True)
                )
                while True:
                    got = (
                        await stub.GetMaterializationJob(
                            pb.GetMaterializationJobRequest(job_id=incremental.job.job_id)
                        )
                    ).job
                    if got.state == pb.JOB_STATE_SUCCEEDED:
                        break
                    assert got.state != pb.JOB_STATE_FAILED, got.error
                    await asyncio.sleep(0.05)
                assert (
                    got.rows_read == 480
                    and got.window_start_time.ToDatetime() == T0.replace(tzinfo=None) + DAY
                )
                first_page = await stub.ListMaterializationJobs(
                    pb.ListMaterializationJobsRequest(page_size=1)
                )
                assert [j.job_id for j in first_page.jobs] == [got.job_id]
                second_page = await stub.ListMaterializationJobs(
                    pb.ListMaterializationJobsRequest(
                        page_size=1, page_token=first_page.next_page_token
                    )
                )
                assert [j.job_id for j in second_page.jobs] == [job.job_id]
                assert second_page.next_page_token == ""
                errors = {}
                for name, request in {
                    "unknown_view": pb.StartMaterializationRequest(
                        feature_views=["nope"], start_time=ts(T0), end_time=ts(T0 + DAY)
                    ),
                    "no_start": pb.StartMaterializationRequest(end_time=ts(T0)),
                    "reversed": pb.StartMaterializationRequest(
                        start_time=ts(T0 + DAY), end_time=ts(T0)
                    ),
                }.items():
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.StartMaterialization(request)
                    errors[name] = info.value.code()
                with ViewLocks(repo, ["driver_stats"]):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.StartMaterialization(
                            pb.StartMaterializationRequest(start_time=ts(T0), end_time=ts(T0 + DAY))
                        )
                    errors["locked"] = info.value.code()
                    assert "driver_stats" in info.value.details()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetMaterializationJob(
                        pb.GetMaterializationJobRequest(job_id="20240101T000000000000-0badcafe")
                    )
                errors["missing_job"] = info.value.code()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetMaterializationJob(
                        pb.GetMaterializationJobRequest(job_id="../../etc/passwd")
                    )
                errors["malformed_job_id"] = info.value.code()
                assert errors == {
                    "unknown_view": grpc.StatusCode.NOT_FOUND,
                    "no_start": grpc.StatusCode.INVALID_ARGUMENT,
                    "reversed": grpc.StatusCode.INVALID_ARGUMENT,
                    "locked": grpc.StatusCode.FAILED_PRECONDITION,
                    "missing_job": grpc.StatusCode.NOT_FOUND,
                    "malformed_job_id": grpc.StatusCode.INVALID_ARGUMENT,
                }
        finally:
            await server.stop(0)

    asyncio.run(go())


def test_cli_commands(repo: RepoConfig, capsys: pytest.CaptureFixture[str]) -> None:
    from skewless.cli import main
    from skewless.registry.registry_store import RegistryStore

    (repo.root / "skewless.yaml").write_text(
        f"project: mat\ndata_dir: .skewless\nonline_store: {{redis_url: '{repo.redis_url}'}}\n"
    )
    RegistryStore(repo.registry_path).save(make_registry())
    root = str(repo.root)
    assert main(["materialize", "2024-03-01", "2024-03-01T12:00:00Z", "--repo", root]) == 0
    assert "240 rows computed" in capsys.readouterr().out
    assert (
        main(
            [
                "materialize-incremental",
                "2024-03-02T00:00:00",
                "--repo",
                root,
                "--views",
                "driver_stats",
            ]
        )
        == 0
    )
    assert "240 rows computed" in capsys.readouterr().out
    assert main(["materialize", "yesterday", "now", "--repo", root]) == 2
    assert "not a time" in capsys.readouterr().err
    assert main(["materialize", "2024-03-01", "2024-03-02", "--repo", root, "--views", "nope"]) == 2
    assert main(["jobs", "--repo", root]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "succeeded" in out[0] and "(cli)" in out[0]
    assert history(repo).num_rows == 480


def test_online_expiry_from_ttl_when_tagged(repo: RepoConfig) -> None:
    from skewless.online.layout import ONLINE_EXPIRY_TAG

    registry = make_registry(ttl=timedelta(days=365 * 100))
    materialize(repo, registry, T0, T0 + DAY)
    client = redis.Redis.from_url(repo.redis_url)
    assert client.pttl(b"mat:driver_stats:{1}") == -1  # untagged: never expires
    registry.feature_views[0].tags[ONLINE_EXPIRY_TAG] = "true"
    materialize(repo, registry, T0, T0 + DAY)
    expire_at = client.pexpiretime(b"mat:driver_stats:{1}")
    event_ms = int((T0 + timedelta(hours=23)).timestamp() * 1000)
    assert expire_at == event_ms + int(timedelta(days=365 * 100).total_seconds() * 1000)
    client.close()


def test_history_files_prune_by_time_and_keep_pushed_rows(repo: RepoConfig) -> None:
    from skewless.offline.offline_store import (
        ORIGIN_PUSH,
        HistoryWriter,
        commit_append,
        read_files,
    )
    from skewless.registry.feature_refs import resolve_view as plan_view

    registry = make_registry()
    materialize(repo, registry, T0, T0 + 2 * DAY)
    assert len(history_files(repo, "driver_stats")) == 2  # one file per day
    day_two = history_files(repo, "driver_stats", start=T0 + DAY + timedelta(hours=1))
    assert len(day_two) == 1 and "event_date=2024-03-02" in str(day_two[0])
    assert history_files(repo, "driver_stats", end=T0) == []
    plan = plan_view(registry, "driver_stats")
    pushed = history(repo).slice(0, 3)
    writer = HistoryWriter(repo, "driver_stats", plan.history_schema, origin=ORIGIN_PUSH)
    writer.write(pushed)
    commit_append(repo, "driver_stats", writer.close())
    materialize(repo, registry, T0, T0 + 2 * DAY)  # a re-run keeps pushed rows
    assert history(repo).num_rows == 20 * 48 + 3
    origins = sorted(f.origin for f in read_files(repo, "driver_stats"))
    assert origins == ["push", "window", "window"]
    on_disk = sorted(p.name for p in (repo.offline_dir / "driver_stats").rglob("*.parquet"))
    assert len(on_disk) == 3 + 2  # the replaced files stay for time travel until vacuumed


def test_out_of_range_value_names_the_column_and_writes_nothing(repo: RepoConfig) -> None:
    registry = make_registry(
        sql="SELECT driver_id, ts, created, conv_rate, CAST(trips AS BIGINT) * 100000000 "
        "AS trips, label FROM source",
        feature_types={"conv_rate": VT.VALUE_TYPE_FLOAT64, "trips": VT.VALUE_TYPE_INT32},
    )
    with pytest.raises(DefinitionError) as info:
        materialize(repo, registry, T0, T0 + DAY)
    assert info.value.metadata == {"feature_view": "driver_stats", "column": "trips"}
    assert history_files(repo, "driver_stats") == [] and online(repo.redis_url) == {}
    assert not [p for p in repo.offline_dir.rglob("*") if p.is_file() and p.suffix == ".tmp"]


def test_commit_crash_after_renames_leaves_previous_history(repo: RepoConfig) -> None:
    """A commit that died after renaming its files but before its Delta commit: no effect."""
    import os

    from skewless.offline.offline_store import HistoryWriter
    from skewless.registry.feature_refs import resolve_view as plan_view

    registry = make_registry()
    materialize(repo, registry, T0, T0 + DAY)
    before = history(repo)
    plan = plan_view(registry, "driver_stats")
    writer = HistoryWriter(repo, "driver_stats", plan.history_schema)
    writer.write(before.slice(0, 10))
    for staged in writer.close():  # the crashed commit's renames, without its log entry
        os.replace(staged.tmp_path, repo.offline_dir / "driver_stats" / staged.file.path)
    assert history(repo).equals(before)
    materialize(repo, registry, T0, T0 + DAY)
    assert history(repo).equals(before)
    on_disk = {
        p.relative_to(repo.offline_dir / "driver_stats")
        for p in (repo.offline_dir / "driver_stats").rglob("*.parquet")
    }
    listed = {
        p.relative_to(repo.offline_dir / "driver_stats")
        for p in history_files(repo, "driver_stats")
    }
    # The replaced file (kept for time travel) and the orphan: `skewless vacuum` removes both.
    assert len(on_disk - listed) == 2


def test_push_views_are_not_materialized(repo: RepoConfig) -> None:
    registry = make_registry(push=True)
    result = materialize(repo, registry, T0, T0 + DAY)  # all views: the push view is skipped
    assert [v.view for v in result.views] == ["driver_stats"]
    with pytest.raises(FailedPreconditionError, match="push source"):
        materialize(repo, registry, T0, T0 + DAY, views=["driver_stats", "driver_live"])


def test_online_only_view_writes_the_latest_rows_and_no_history(repo: RepoConfig) -> None:
    registry = make_registry()
    registry.feature_views[0].offline = False
    result = materialize(repo, registry, T0, T0 + DAY)
    assert (result.rows_read, result.rows_written, result.views[0].online_rows_written) == (
        480,
        0,
        20,
    )
    assert history_files(repo, "driver_stats") == []
    assert {k: v[b"conv_rate"] for k, v in online(repo.redis_url).items()} == {
        f"mat:driver_stats:{{{d}}}".encode(): d * 1000 + 23.0 for d in range(20)
    }
    assert read_watermark(repo, "driver_stats") == T0 + DAY


def test_history_is_written_in_time_then_key_order(tmp_path: Path, redis_url: str) -> None:
    """Retrievals prove time-ordered history free of ties cheaply; keep it that way."""
    config = make_config(tmp_path / "repo", redis_url)
    rows = driver_rows(n_drivers=7, n_times=30)
    write_source(config, rows.take(pa.array(range(rows.num_rows - 1, -1, -1))))  # reversed
    registry = make_registry()
    materialize(config, registry, T0 + DAY, T0 + 2 * DAY)  # the later window first
    materialize(config, registry, T0, T0 + DAY)
    files = history_files(config, "driver_stats")
    stored = pa.concat_tables(pq.read_table(f) for f in files)  # path order, unsorted
    assert stored.num_rows == 7 * 30
    order = [(r["event_timestamp"], r["driver_id"]) for r in stored.to_pylist()]
    assert order == sorted(order)


def test_a_failed_job_reports_a_status_with_a_reason_over_grpc(repo: RepoConfig) -> None:
    """A job's failure is a google.rpc.Status: code, actionable message, ErrorInfo reason."""
    import grpc
    from google.protobuf import timestamp_pb2
    from google.rpc import code_pb2, error_details_pb2

    from skewless.registry.registry_store import RegistryStore
    from skewless.server.app import create_server
    from skewless.v1 import materialization_service_pb2 as pb
    from skewless.v1 import materialization_service_pb2_grpc as pbg

    RegistryStore(repo.registry_path).save(make_registry())
    (repo.root / "data" / "driver.parquet").unlink()  # the view's source is gone

    def ts(value: datetime) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(value)
        return stamp

    async def go() -> pb.MaterializationJob:
        server, port = create_server(repo)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pbg.MaterializationServiceStub(channel)
                request = pb.StartMaterializationRequest(start_time=ts(T0), end_time=ts(T0 + DAY))
                job = (await stub.StartMaterialization(request)).job
                deadline = time.monotonic() + 30
                while job.state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                    get = pb.GetMaterializationJobRequest(job_id=job.job_id)
                    job = (await stub.GetMaterializationJob(get)).job
                return job
        finally:
            await server.stop(0)

    job = asyncio.run(go())
    assert job.state == pb.JOB_STATE_FAILED
    status = job.error_status
    assert code_pb2.Code.Name(status.code) == "FAILED_PRECONDITION"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "SOURCE_UNREADABLE"
    assert "driver.parquet" in status.message and str(repo.root) not in status.message
    assert job.error == status.message  # the deprecated string still says the same
