"""The Spark offline engine end to end: through a real Spark Connect server (retrieval and
materialization), cancellation, failures as short statuses, and skewless without PySpark.

The join's exactness on Spark is proven by the engine-parametrized property tests
(tests/unit/test_point_in_time.py, tests/integration/test_delta_exactness.py); here the
server runs with `offline.engine: spark` and must give the DuckDB engine's table.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest

from skewless.client.historical import get_historical_features
from skewless.core.config import RepoConfig, SparkSettings
from skewless.core.errors import FailedPreconditionError
from skewless.materialization.jobs import (
    JobState,
    JobStore,
    Trigger,
    run_job,
    start_job,
)
from skewless.materialization.pipeline import materialize
from skewless.offline.history_index import ViewHistory
from skewless.offline.offline_store import history_files
from skewless.offline.point_in_time import JoinCancelled
from skewless.offline.spark_join import spark_point_in_time_join
from skewless.registry.feature_refs import resolve_feature_service
from skewless.registry.registry_store import RegistryStore
from tests.helpers.spark_connect import SparkConnectServer, free_port, running_connect_server
from tests.integration.matfixtures import T0, driver_rows, make_config, write_source
from tests.integration.matfixtures import make_registry as make_view_registry
from tests.integration.served import ServerThread
from tests.integration.test_historical import (
    entity_rows,
    expected,
    make_registry,
    write_histories,
)
from tests.integration.test_materialize import history, online
from tests.integration.test_spark_materialize_cancel import SLOW_SQL, start_in_thread

_LEAKS = ("org.apache", "Traceback", "Exception", "JVM", "py4j", "/tmp", "/work")


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkConnectServer]:
    with running_connect_server(tmp_path_factory.mktemp("spark-connect")) as server:
        yield server


def _repo(root: Path, redis_url: str, spark: SparkSettings) -> RepoConfig:
    config = RepoConfig(
        root=root,
        project="hist",
        data_dir=root / "data",
        redis_url=redis_url,
        server_port=0,
        metrics_port=0,
        offline_engine="spark",
        spark=spark,
    )
    RegistryStore(config.registry_path).save(make_registry())
    write_histories(config)
    return config


def test_historical_retrieval_through_spark_connect_gives_the_duckdb_table(
    tmp_path: Path, redis_server: Any, connect_server: SparkConnectServer
) -> None:
    config = _repo(tmp_path, redis_server.url, SparkSettings(remote=connect_server.url))
    server = ServerThread(config).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            rows = entity_rows(3000)
            table = get_historical_features(
                channel, rows, feature_service="model", full_feature_names=True, timeout=240
            )
            features_only = get_historical_features(
                channel, rows.slice(0, 10), features=["customer_stats:spend"], timeout=120
            )
    finally:
        server.stop()
    reference = expected(config, rows, full=True)
    assert table.equals(reference)  # same rows, order, types and nulls
    assert table.column("driver_stats__rating").null_count < rows.num_rows  # not all empty
    assert features_only.column("spend").equals(expected(config, rows.slice(0, 10))["spend"])


#: Key-grouped (a window partitioned by the key): runs as `applyInArrow` on the cluster.
_KEY_GROUPED_SQL = (
    "SELECT driver_id, ts, created, label, trips, "
    "conv_rate - coalesce(lag(conv_rate) OVER (PARTITION BY driver_id ORDER BY ts), 0) "
    "AS conv_rate FROM source"
)


def test_materialization_through_spark_connect_gives_the_duckdb_rows(
    tmp_path: Path, redis_url: str, connect_server: SparkConnectServer
) -> None:
    registry = make_view_registry(sql=_KEY_GROUPED_SQL)
    rows = driver_rows(n_drivers=6, n_times=12)
    duck = make_config(tmp_path / "duck", redis_url, project="on_duckdb")
    write_source(duck, rows)
    config = make_config(tmp_path / "connect", redis_url, project="on_connect", engine="spark")
    config = dataclasses.replace(config, spark=SparkSettings(remote=connect_server.url))
    write_source(config, rows)
    start, end = T0 + timedelta(hours=3), T0 + timedelta(hours=12)
    materialize(duck, registry, start, end)
    started = start_job(
        config,
        registry,
        ["driver_stats"],
        window_start=start,
        window_end=end,
        incremental=False,
        trigger=Trigger.API,
    )
    store = JobStore(config)
    record = run_job(config, registry, store, started.record, locks=started.locks)
    assert record.state == JobState.SUCCEEDED, record.error
    assert record.rows_written == history(duck).num_rows > 0
    assert history(config).equals(history(duck))
    assert online(redis_url, "on_connect") == {
        k.replace(b"on_duckdb:", b"on_connect:"): v
        for k, v in online(redis_url, "on_duckdb").items()
    }
    assert record.spark_application_id.startswith("local-")  # the Connect server's app
    assert store.get(record.job_id).spark_application_id == record.spark_application_id


def test_cancelling_a_job_on_spark_connect_interrupts_it_and_writes_nothing(
    tmp_path: Path, redis_url: str, connect_server: SparkConnectServer
) -> None:
    config = make_config(tmp_path, redis_url, project="connect_cancel", engine="spark")
    config = dataclasses.replace(config, spark=SparkSettings(remote=connect_server.url))
    write_source(config, driver_rows())
    # half a minute of executor work or more
    job = start_in_thread(config, make_view_registry(sql=SLOW_SQL))
    assert job.thread is not None
    deadline = time.monotonic() + 120
    while not job.store.get(job.started.record.job_id).spark_application_id:  # on Spark now
        assert job.thread.is_alive(), job.final
        assert time.monotonic() < deadline, "the job never reached Spark"
        time.sleep(0.05)
    time.sleep(3.0)  # its operation is running on the Connect server
    assert job.thread.is_alive(), job.final
    record = job.cancel_and_wait()
    assert record.state == JobState.CANCELLED, record.error
    assert history(config).num_rows == 0 and online(redis_url, "connect_cancel") == {}
    assert not [p for p in config.data_dir.rglob("*") if p.name.endswith(".tmp")]


def test_an_unreachable_spark_cluster_is_unavailable_with_a_short_message(
    tmp_path: Path, redis_server: Any
) -> None:
    config = _repo(
        tmp_path, redis_server.url, SparkSettings(remote=f"sc://127.0.0.1:{free_port()}")
    )
    server = ServerThread(config).start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            get_historical_features(channel, entity_rows(5), feature_service="model")
    finally:
        server.stop()
    exc = info.value
    assert exc.code() == grpc.StatusCode.UNAVAILABLE
    message = exc.details() or ""
    assert "Spark" in message and "cannot be reached" in message
    assert len(message) < 300 and not any(leak in message for leak in _LEAKS)


def _plan_and_histories(config: RepoConfig) -> tuple[Any, list[ViewHistory]]:
    registry = RegistryStore(config.registry_path).load()
    assert registry is not None
    plan = resolve_feature_service(registry, "model")
    histories = [ViewHistory(v, tuple(history_files(config, v.name))) for v in plan.views]
    return plan, histories


def test_cancelling_a_join_cancels_its_spark_job(
    tmp_path: Path, redis_server: Any, spark: Any
) -> None:
    config = _repo(tmp_path, redis_server.url, SparkSettings(master="local[2]"))
    plan, histories = _plan_and_histories(config)
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup(None))
    stage = tmp_path / "stage"
    join = spark_point_in_time_join(
        spark,
        entity_rows(20_000),
        plan,
        histories[:1] + histories[1:],
        target="local[2]",
        stage_dir=stage,
    )
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            join.reader.read_all()
            outcome.append(None)
        except BaseException as exc:  # the test inspects it
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 120
    while not tracker.getActiveJobsIds() and reader.is_alive():
        assert time.monotonic() < deadline, "no Spark job started"
        time.sleep(0.01)
    join.cancel()
    reader.join(60)
    assert not reader.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], JoinCancelled)
    jobs = set(tracker.getJobIdsForGroup(None)) - before
    assert jobs  # the join ran Spark jobs ...
    statuses = {str(tracker.getJobInfo(j).status) for j in jobs if tracker.getJobInfo(j)}
    assert "FAILED" in statuses  # ... and the running one was cancelled, not finished
    deadline = time.monotonic() + 30  # Spark ends cancelled jobs asynchronously
    while tracker.getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not tracker.getActiveJobsIds()
    join.close()
    assert stage.is_dir() and not any(stage.iterdir())  # the staged entity rows are gone


def test_spark_failures_are_our_statuses_without_traces(
    tmp_path: Path, redis_server: Any, spark: Any
) -> None:
    config = _repo(tmp_path, redis_server.url, SparkSettings(master="local[2]"))
    plan, histories = _plan_and_histories(config)
    gone = ViewHistory(histories[0].view, (tmp_path / "vacuumed" / "part-0.parquet",))
    join = spark_point_in_time_join(
        spark, entity_rows(10), plan, [gone, histories[1]], target="local[2]"
    )
    with pytest.raises(FailedPreconditionError) as info:
        join.reader.read_all()
    join.close()
    assert info.value.reason == "SPARK_CANNOT_READ_HISTORY"
    assert info.value.metadata["feature_view"] == "driver_stats"
    assert "offline store's files" in info.value.message
    assert not any(leak in info.value.message for leak in _LEAKS)


def test_skewless_runs_without_pyspark_and_the_spark_engine_says_how_to_install_it(
    tmp_path: Path,
) -> None:
    script = """
import sys
sys.modules["pyspark"] = None  # as if PySpark were not installed
import skewless.server.app, skewless.offline.retrieval
from skewless.core.config import SparkSettings
from skewless.core.errors import FailedPreconditionError
from skewless.offline.spark_session import spark_session
try:
    spark_session(SparkSettings(master="local[1]"))
except FailedPreconditionError as exc:
    print(exc.reason, exc.message)
assert not any(m == "pyspark" or m.startswith("pyspark.") for m in sys.modules
               if sys.modules[m] is not None)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SPARK_NOT_INSTALLED")
    assert "pip install 'skewless[spark]'" in done.stdout


def test_results_keep_every_type_and_null(tmp_path: Path, spark: Any) -> None:
    """Feature types the Spark side carries through Arrow: lists, timestamps, bytes, bools."""
    from google.protobuf import duration_pb2

    from skewless.offline.offline_store import HistoryWriter, commit_append
    from skewless.registry.feature_refs import resolve_feature_refs
    from skewless.v1 import registry_pb2, types_pb2

    vt = types_pb2.ValueType
    kinds = {
        "i32": vt.VALUE_TYPE_INT32,
        "f32": vt.VALUE_TYPE_FLOAT32,
        "b": vt.VALUE_TYPE_BOOL,
        "raw": vt.VALUE_TYPE_BYTES,
        "when": vt.VALUE_TYPE_TIMESTAMP,
        "tags": vt.VALUE_TYPE_STRING_LIST,
        "xs": vt.VALUE_TYPE_FLOAT64_LIST,
    }
    registry = registry_pb2.Registry(
        project="t",
        entities=[
            registry_pb2.Entity(
                name="u",
                join_keys=[registry_pb2.JoinKey(name="uid", value_type=vt.VALUE_TYPE_BYTES)],
            )
        ],
        feature_views=[
            registry_pb2.FeatureView(
                name="v",
                entities=["u"],
                ttl=duration_pb2.Duration(seconds=0),
                features=[registry_pb2.Feature(name=n, value_type=t) for n, t in kinds.items()],
            )
        ],
    )
    plan = resolve_feature_refs(registry, [f"v:{n}" for n in kinds])
    utc = pa.timestamp("us", tz="UTC")
    t0 = 1_700_000_000_000_000
    history = pa.table(
        {
            "uid": pa.array([b"a", b"b", b"a"], pa.binary()),
            "event_timestamp": pa.array([t0, t0, t0 + 10], pa.int64()).cast(utc),
            "created_timestamp": pa.array([None, None, None], utc),
            "i32": pa.array([1, None, -(2**31)], pa.int32()),
            "f32": pa.array([1.5, -0.0, None], pa.float32()),
            "b": pa.array([True, None, False]),
            "raw": pa.array([b"\x00\xff", None, b""], pa.binary()),
            "when": pa.array([t0, None, -1], pa.int64()).cast(utc),
            "tags": pa.array([["x", None], None, []], pa.list_(pa.string())),
            "xs": pa.array([[1.0], [2.0, None], None], pa.list_(pa.float64())),
        }
    )
    config = RepoConfig(root=tmp_path, project="t", data_dir=tmp_path / "d", server_port=0)
    writer = HistoryWriter(config, "v", history.schema)
    writer.write(history)
    commit_append(config, "v", writer.close())
    entity = pa.table(
        {
            "uid": pa.array([b"a", b"b", b"a", b"zz", None], pa.binary()),
            "event_timestamp": pa.array([t0 + 5, t0, t0 + 10, t0, t0], pa.int64()).cast(utc),
        }
    )
    views = [ViewHistory(plan.views[0], tuple(history_files(config, "v")))]
    from tests.helpers.engines import Engine

    results = []
    for engine in (Engine("duckdb"), Engine("spark", spark)):
        join = engine.join(entity, plan, views)
        try:
            results.append(join.reader.read_all())
        finally:
            join.close()
    duck, on_spark = results
    assert on_spark.schema == duck.schema
    assert on_spark.equals(duck)
    assert on_spark.column("i32").to_pylist() == [1, None, -(2**31), None, None]
