"""A data dir on object storage (`s3://bucket/prefix`), on a real S3 server (SeaweedFS).

The registry, the offline Delta tables, job records, watermarks and feature logs live in
the bucket; each server keeps only spill files locally. What a local data dir does, an
s3:// one must do identically: the same history and the same training sets, a SIGKILLed
window that a re-run repairs, two servers (separate local folders, one bucket, one
Redis) that both serve a registry applied once, and a schedule run once per period.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from skewless.client import Client
from skewless.client.errors import SkewlessClientError
from skewless.core.config import RepoConfig, load_repo_config
from skewless.core.errors import FailedPreconditionError, StoreUnavailableError
from skewless.core.storage import ObjectStoreSettings
from skewless.materialization.jobs import JobState, JobStore
from skewless.materialization.pipeline import materialize
from skewless.materialization.view_state import read_watermark
from skewless.offline.maintenance import vacuum
from skewless.offline.offline_store import read_snapshot, snapshot_files
from skewless.offline.point_in_time import point_in_time_join
from skewless.offline.retrieval import view_histories
from skewless.registry.feature_refs import resolve_feature_refs
from skewless.registry.registry_store import RegistryStore
from tests.helpers.s3 import S3Server
from tests.integration.matfixtures import T0, driver_rows, make_config, make_registry, write_source
from tests.integration.served import serve

DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]


def s3_config(s3: S3Server, root: Path, redis_url: str, prefix: str | None = None) -> RepoConfig:
    """A repository whose data dir is a fresh prefix of the test bucket."""
    local = make_config(root, redis_url)
    return dataclasses.replace(
        local,
        data_url=s3.uri("datadirs", prefix or uuid.uuid4().hex[:10]),
        object_store=ObjectStoreSettings(
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
        ),
    )


def history(config: RepoConfig, view: str = "driver_stats") -> pa.Table:
    snapshot = read_snapshot(config, view)
    fs = config.storage.filesystem
    files = snapshot_files(snapshot)
    if not files:
        return pa.table({"driver_id": pa.array([], pa.int64())})
    table = pa.concat_tables(pq.read_table(f, filesystem=fs) for f in files)
    return table.sort_by([("event_timestamp", "ascending"), ("driver_id", "ascending")])


def training_set(config: RepoConfig, labels: pa.Table, strategy: str | None = None) -> pa.Table:
    registry = RegistryStore(config.storage).require()
    plan = resolve_feature_refs(
        registry, ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:label"]
    )
    histories = view_histories(config, plan, labels.column("event_timestamp"))
    join = point_in_time_join(labels, plan, histories, strategy=strategy)
    try:
        return join.reader.read_all()
    finally:
        join.close()


def labels() -> pa.Table:
    times = [T0 + timedelta(minutes=37 * i) for i in range(90)]
    return pa.table(
        {
            "driver_id": pa.array([i % 23 for i in range(90)], pa.int64()),  # 20-22: unknown
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "target": pa.array([i % 2 for i in range(90)], pa.int64()),
        }
    )


@pytest.fixture
def pair(tmp_path: Path, redis_url: str, s3_server: S3Server) -> tuple[RepoConfig, RepoConfig]:
    """The same repository twice: a local data dir and an s3:// one."""
    local = make_config(tmp_path / "local", redis_url)
    remote = s3_config(s3_server, tmp_path / "remote", redis_url)
    for config in (local, remote):
        write_source(config, driver_rows())
        RegistryStore(config.storage).save(make_registry())
    return local, remote


def test_an_s3_data_dir_answers_exactly_as_a_local_one(
    pair: tuple[RepoConfig, RepoConfig], s3_server: S3Server
) -> None:
    local, remote = pair
    registry = make_registry()
    changed = driver_rows().set_column(3, "conv_rate", pc.add(driver_rows()["conv_rate"], 0.25))
    for config in (local, remote):
        materialize(config, registry, T0, T0 + 2 * DAY)
        write_source(config, changed)
        # A re-run of a window straddling day files (a -kept rewrite on each side).
        materialize(config, registry, T0 + timedelta(hours=7), T0 + timedelta(hours=31))
    assert history(remote).equals(history(local))
    assert history(remote).num_rows == 20 * 48
    for strategy in (None, "dedupe"):
        assert training_set(remote, labels(), strategy).equals(
            training_set(local, labels(), strategy)
        )

    # Everything is in the bucket, nothing in the remote repository's local folder.
    fs = s3_server.filesystem()
    prefix = remote.storage.fs_path("")
    keys = {
        info.path.removeprefix(prefix + "/")
        for info in fs.get_file_info(pa.fs.FileSelector(prefix, recursive=True))
    }
    assert "registry/000000000001.pb" in keys
    assert "offline/_layout.json" in keys
    assert "materialization/driver_stats/watermark.json" in keys
    assert any(k.startswith("offline/driver_stats/_delta_log/") for k in keys)
    assert not (remote.data_dir / "offline").exists()
    assert read_watermark(remote, "driver_stats") == read_watermark(local, "driver_stats")
    # Plain deltalake reads the same rows from the bucket.
    table = DeltaTable(
        remote.storage.uri("offline/driver_stats"), storage_options=s3_server.storage_options
    )
    plain = table.to_pyarrow_table().drop_columns(["event_date"])
    order = [("event_timestamp", "ascending"), ("driver_id", "ascending")]
    assert plain.sort_by(order).select(history(local).column_names).equals(history(local))


def test_the_registry_takes_one_version_per_apply_even_when_applies_race(
    pair: tuple[RepoConfig, RepoConfig],
) -> None:
    _, remote = pair
    first, second = RegistryStore(remote.storage), RegistryStore(remote.storage)
    assert first.load() is not None and first.load().version == 1  # type: ignore[union-attr]
    # Two stores that both read version 1, then both write: one takes 2, the other 3.
    a = first.save(make_registry(ttl=timedelta(hours=1)))
    b = second.save(make_registry(ttl=timedelta(hours=2)))
    assert (a.registry.version, b.registry.version) == (2, 3)
    assert second.save(make_registry(ttl=timedelta(hours=2))).changed is False
    stored = [f.key for f in remote.storage.list_files("registry")]
    assert stored == [f"registry/{v:012d}.pb" for v in (1, 2, 3)]


_KILLED_JOB = textwrap.dedent(
    """
    import dataclasses, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.integration.matfixtures import T0, make_config, make_registry
    from skewless.core.storage import ObjectStoreSettings
    from skewless.materialization import pipeline as m
    from skewless.materialization.jobs import JobStore, JobState, run_job, start_job, Trigger
    from datetime import timedelta
    config = dataclasses.replace(
        make_config(Path({repo!r}), {url!r}),
        data_url={data_url!r},
        object_store=ObjectStoreSettings(
            endpoint_url={endpoint!r}, access_key_id={key!r}, secret_access_key={secret!r}
        ),
    )
    marker = Path({marker!r})
    registry = make_registry()
    started = start_job(config, registry, ["driver_stats"], window_start=T0,
                        window_end=T0 + timedelta(days=2), incremental=False, trigger=Trigger.CLI)
    m._ONLINE_BATCH_ROWS = 5
    def progress(p):
        if p.phase == {phase!r} and p.rows_done > 0:
            marker.write_text(started.record.job_id)
            time.sleep(60)
    run_job(config, registry, JobStore(config), started.record, locks=started.locks,
            progress=progress)
    """
)


@pytest.mark.parametrize("phase", ["compute", "online"])
def test_sigkill_mid_window_on_s3_then_rerun_converges(
    pair: tuple[RepoConfig, RepoConfig], tmp_path: Path, s3_server: S3Server, phase: str
) -> None:
    """Killed while uploading its day files (compute) or after (online, files complete)."""
    local, remote = pair
    registry = make_registry()
    materialize(remote, registry, T0, T0 + 2 * DAY)
    before = history(remote)
    changed = driver_rows().set_column(3, "conv_rate", pc.add(driver_rows()["conv_rate"], 0.5))
    write_source(remote, changed)
    marker = tmp_path / "marker"
    script = _KILLED_JOB.format(
        root=str(ROOT),
        repo=str(remote.root),
        url=remote.redis_url,
        data_url=remote.data_url,
        endpoint=s3_server.endpoint_url,
        key=s3_server.access_key,
        secret=s3_server.secret_key,
        marker=str(marker),
        phase=phase,
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert proc.poll() is None, "the job ended before reaching the kill point"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    job_id = marker.read_text()
    assert history(remote).equals(before)  # the previous version, untouched
    if phase == "online":  # its complete day files are in the bucket, referenced by nothing
        snapshot = read_snapshot(remote, "driver_stats")
        assert snapshot is not None
        committed = {f"offline/driver_stats/{f.path}" for f in snapshot.files}
        uploaded = {
            f.key
            for f in remote.storage.list_files("offline/driver_stats", recursive=True)
            if f.key.endswith(".parquet")
        }
        assert uploaded - committed
    record = JobStore(remote).get(job_id)
    assert record.state == JobState.FAILED and record.error is not None
    assert record.error.reason == "JOB_PROCESS_EXITED"
    # The killed holder's lease is taken over at once (its process is gone on this host).
    materialize(remote, registry, T0, T0 + 2 * DAY)
    write_source(local, changed)
    materialize(local, registry, T0, T0 + 2 * DAY)
    assert history(remote).equals(history(local))
    assert training_set(remote, labels()).equals(training_set(local, labels()))
    # Vacuum deletes what the killed job left (and what older versions held).
    vacuum(remote, "driver_stats", timedelta(0))
    snapshot = read_snapshot(remote, "driver_stats")
    assert snapshot is not None
    left = {
        f.key
        for f in remote.storage.list_files("offline/driver_stats", recursive=True)
        if f.key.endswith(".parquet")
    }
    assert left == {f"offline/driver_stats/{f.path}" for f in snapshot.files}
    assert history(remote).equals(history(local))


def _write_repo(root: Path, s3: S3Server, data_url: str, redis_url: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "skewless.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: mat
            data_dir: {data_url}
            object_store:
              endpoint_url: {s3.endpoint_url}
              region: {s3.region}
            online_store:
              redis_url: {redis_url}
            """
        )
    )
    return root


def _version(target: str) -> int:
    try:
        with Client(target) as client:
            return int(client.get_registry_info(timeout=2).version)
    except Exception:
        return 0


def test_two_servers_share_one_bucket_and_one_redis(
    tmp_path: Path, redis_url: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        if name.startswith("AWS_ACCESS") or name.startswith("AWS_SECRET"):
            monkeypatch.setenv(name, value)  # credentials from the standard variables
    data_url = s3_server.uri("datadirs", uuid.uuid4().hex[:10])
    repos = [_write_repo(tmp_path / f"server{i}", s3_server, data_url, redis_url) for i in (0, 1)]
    config = load_repo_config(repos[0])
    assert config.data_url == data_url and config.data_dir == (repos[0] / ".skewless").resolve()
    # A source with rows every second from 30 s ago to 2 min ahead; the view runs every 2 s.
    now = datetime.now(UTC).replace(microsecond=0)
    rows = driver_rows(n_drivers=5, n_times=150, step=timedelta(seconds=1))
    shift = now - timedelta(seconds=30) - T0
    rows = rows.set_column(1, "ts", pc.add(rows["ts"], pa.scalar(shift, pa.duration("us"))))
    for repo in repos:
        write_source(load_repo_config(repo), rows)
    RegistryStore(config.storage).save(make_registry())
    with serve(repos[0]) as one, serve(repos[1]) as two:
        deadline = time.monotonic() + 20
        while {_version(one.target), _version(two.target)} != {1}:
            assert time.monotonic() < deadline, one.output() + two.output()
            time.sleep(0.1)
        # One apply of a new version: both servers serve it within a second.
        applied = time.monotonic()
        RegistryStore(config.storage).save(make_registry(schedule=timedelta(seconds=2), push=True))
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - applied < 10:
            for served in (one, two):
                if served.target not in seen and _version(served.target) == 2:
                    seen[served.target] = time.monotonic() - applied
            time.sleep(0.05)
        assert len(seen) == 2 and max(seen.values()) < 1.0, seen
        # Let both schedulers run for several periods.
        deadline = time.monotonic() + 40
        while True:
            jobs = [
                j
                for j in JobStore(config).list("driver_stats")
                if j.trigger == "schedule" and j.state == JobState.SUCCEEDED
            ]
            if len(jobs) >= 3:
                break
            assert time.monotonic() < deadline, one.output() + two.output()
            time.sleep(0.5)
        # Both serve the same training set from the bucket, through the client.
        wanted = ["driver_stats:conv_rate", "driver_stats:label"]
        entity = pa.table(
            {
                "driver_id": pa.array([0, 3, 4, 9], pa.int64()),
                "event_timestamp": pa.array([now] * 4, pa.timestamp("us", tz="UTC")),
            }
        )
        answers = []
        for served in (one, two):
            with Client(served.target) as client:
                answers.append(client.get_historical_features(entity, features=wanted))
        assert answers[0].equals(answers[1])
        assert answers[0]["conv_rate"].null_count == 1  # driver 9 has no rows
        # A push through one server is history the other joins (one Delta append).
        pushed = pa.table(
            {
                "driver_id": pa.array([77], pa.int64()),
                "ts": pa.array([now - timedelta(seconds=5)], pa.timestamp("us", tz="UTC")),
                "created": pa.array([now], pa.timestamp("us", tz="UTC")),
                "conv_rate": pa.array([0.77]),
                "trips": pa.array([7], pa.int64()),
                "label": pa.array(["pushed"]),
            }
        )
        with Client(one.target) as client:
            client.push_features(pushed, push_source="driver_push")
        probe = pa.table(
            {
                "driver_id": pa.array([77], pa.int64()),
                "event_timestamp": pa.array([now], pa.timestamp("us", tz="UTC")),
            }
        )
        with Client(two.target) as client:
            got = client.get_historical_features(probe, features=["driver_live:conv_rate"])
        assert got["conv_rate"].to_pylist() == [0.77]
    # Every period was materialized once: the scheduled windows never overlap, they
    # follow each other, and each is one window commit of the Delta table.
    windows = sorted((j.window_start, j.window_end) for j in jobs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows)), windows
    everything = [j for j in JobStore(config).list("driver_stats") if j.state == JobState.SUCCEEDED]
    spans = sorted((j.window_start, j.window_end) for j in everything)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), spans
    table = DeltaTable(
        config.storage.uri("offline/driver_stats"), storage_options=s3_server.storage_options
    )
    commits = [h for h in table.history() if h.get("skewless.operation") == "window"]
    assert len(commits) == len(everything)
    stored = history(config)
    end = max(j.window_end for j in everything)
    assert (
        stored.num_rows == pc.sum(pc.less(rows["ts"], pa.scalar(end.replace(tzinfo=None)))).as_py()
    )
    keys = set(
        zip(stored["driver_id"].to_pylist(), stored["event_timestamp"].to_pylist(), strict=True)
    )
    assert len(keys) == stored.num_rows  # each row once
    assert {j.host for j in everything} and all(j.trigger == "schedule" for j in everything)


@pytest.mark.parametrize("problem", ["endpoint", "credentials", "bucket"])
def test_a_bad_endpoint_secret_or_bucket_is_a_short_clear_status(
    tmp_path: Path, redis_url: str, s3_server: S3Server, problem: str
) -> None:
    secret = (
        "wrong-secret-" + uuid.uuid4().hex if problem == "credentials" else s3_server.secret_key
    )
    settings = ObjectStoreSettings(
        endpoint_url="http://127.0.0.1:9" if problem == "endpoint" else s3_server.endpoint_url,
        access_key_id=s3_server.access_key,
        secret_access_key=secret,
    )
    url = (
        f"s3://missing-{uuid.uuid4().hex[:8]}/data"
        if problem == "bucket"
        else s3_server.uri("datadirs", uuid.uuid4().hex[:10])
    )
    config = dataclasses.replace(
        make_config(tmp_path / "repo", redis_url), data_url=url, object_store=settings
    )
    expected = {
        "endpoint": (StoreUnavailableError, "OBJECT_STORE_UNAVAILABLE"),
        "credentials": (FailedPreconditionError, "OBJECT_STORE_ACCESS_DENIED"),
        "bucket": (FailedPreconditionError, "OBJECT_STORE_BUCKET_NOT_FOUND"),
    }[problem]
    with pytest.raises(expected[0]) as caught:
        RegistryStore(config.storage).save(make_registry())
    assert caught.value.reason == expected[1]
    assert secret not in caught.value.message and len(caught.value.message) < 200

    # Through a server: its calls answer with that status, and its log holds no secret.
    repo = tmp_path / "served"
    repo.mkdir()
    (repo / "skewless.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: mat
            data_dir: {url}
            object_store:
              endpoint_url: {settings.endpoint_url}
              access_key_id: {settings.access_key_id}
              secret_access_key: {secret}
            online_store:
              redis_url: {redis_url}
            """
        )
    )
    code = "UNAVAILABLE" if problem == "endpoint" else "FAILED_PRECONDITION"
    with serve(repo) as served, Client(served.target) as client:
        with pytest.raises(SkewlessClientError) as call:
            client.get_registry_info(timeout=10)
        assert call.value.code is not None and call.value.code.name == code
        assert call.value.reason == expected[1], call.value.message
        output = served.output()
    assert secret not in output and secret not in call.value.message
    assert "Traceback" not in output
