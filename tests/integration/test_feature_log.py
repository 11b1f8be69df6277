"""Feature logging end to end: real redis-server, the real server, files read back plainly."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from prometheus_client import REGISTRY

from skewless.client import Client
from skewless.core.config import RepoConfig
from skewless.offline.feature_log import log_dir, log_files
from skewless.registry import FeatureLogging, FeatureService, RepoDefinitions
from skewless.server.feature_logger import REQUEST_ID_KEY
from skewless.v1 import online_service_pb2, online_service_pb2_grpc, types_pb2
from tests.helpers.repos import live_definitions, repo_config, save_registry
from tests.integration.served import ServerThread, serve, write_repo

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def logged_definitions(rate: float = 1.0) -> RepoDefinitions:
    base = live_definitions()
    return dataclasses.replace(
        base,
        feature_services=(
            FeatureService(
                name="live", features=("driver_live",), logging=FeatureLogging(sample_rate=rate)
            ),
            FeatureService(name="unlogged", features=("driver_recent",)),
        ),
    )


def push_rows(client: Client, ids: list[int], when: datetime) -> None:
    n = len(ids)
    client.push_features(
        pa.table(
            {
                "driver_id": pa.array(ids, pa.int64()),
                "ts": pa.array([when] * n, pa.timestamp("us", tz="UTC")),
                "created": pa.array([when] * n, pa.timestamp("us", tz="UTC")),
                "conv_rate": pa.array([i / 3 for i in ids], pa.float64()),
                "trips": pa.array(ids, pa.int64()),
                "note": pa.array([None if i % 2 else f"n{i}" for i in ids], pa.string()),
            }
        ),
        push_source="driver_push",
    )


def call(target: str, ids: list[int], service: str = "live", request_id: str | None = None):
    """One GetOnlineFeatures through the generated stub; returns (response, request id)."""
    with grpc.insecure_channel(target) as channel:
        stub = online_service_pb2_grpc.OnlineServiceStub(channel)
        request = online_service_pb2.GetOnlineFeaturesRequest(feature_service=service)
        request.entities["driver_id"].values.extend(types_pb2.Value(int64_value=i) for i in ids)
        metadata = ((REQUEST_ID_KEY, request_id),) if request_id else ()
        response, rpc = stub.GetOnlineFeatures.with_call(request, timeout=10, metadata=metadata)
        echoed = dict(rpc.trailing_metadata() or ()).get(REQUEST_ID_KEY)
        return response, echoed


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> RepoConfig:
    config = repo_config(tmp_path / "repo", "logs", redis_url, feature_log_flush_seconds=0.2)
    save_registry(config, logged_definitions())
    return config


def test_logged_rows_are_typed_columns_read_by_duckdb_and_pyarrow(config: RepoConfig) -> None:
    server = ServerThread(config, run_schedules=False).start()
    target = f"127.0.0.1:{server.port}"
    try:
        with Client(target) as client:
            push_rows(client, [1, 2], T0)
        response, request_id = call(target, [1, 2, 3], request_id="caller-id-7")
        _, other_id = call(target, [2])
        _, unlogged = call(target, [1], service="unlogged")
    finally:
        server.stop()  # flushes
    assert request_id == "caller-id-7"  # the caller's own id is kept and echoed
    assert other_id and other_id != request_id
    assert unlogged is None  # logging off: nothing logged, nothing echoed
    assert not log_dir(config, "unlogged").exists()
    files = log_files(config, "live")
    assert files and all(Path(f).parent.name.startswith("date=") for f in files)
    table = ds.dataset(log_dir(config, "live"), format="parquet", partitioning="hive").to_table()
    table = table.sort_by([("request_time", "ascending"), ("driver_id", "ascending")])
    assert table.num_rows == 4
    schema = table.schema
    assert schema.field("request_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("driver_id").type == pa.int64()
    assert schema.field("driver_live__conv_rate").type == pa.float64()
    assert schema.field("driver_live__trips").type == pa.int64()
    assert schema.field("driver_live__note__status").type == pa.string()
    first = table.filter(pa.compute.equal(table["request_id"], "caller-id-7")).to_pylist()
    assert [r["driver_id"] for r in first] == [1, 2, 3]
    assert [r["driver_live__conv_rate"] for r in first] == [1 / 3, 2 / 3, None]
    assert [r["driver_live__note__status"] for r in first] == [
        "NULL_VALUE",
        "PRESENT",
        "NOT_FOUND",
    ]
    assert [r["driver_live__note"] for r in first] == [None, "n2", None]
    assert first[0]["driver_live__trips__event_time"] == T0
    assert first[2]["driver_live__trips__event_time"] is None
    served = {v.name: v for v in response.results}
    assert served["conv_rate"].values[1].double_value == 2 / 3
    con = duckdb.connect()
    glob = str(log_dir(config, "live") / "*" / "*.parquet")
    count = con.execute(
        f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet('{glob}')"
    ).fetchone()
    con.close()
    assert count == (4, 2)


def test_sample_rate_samples(tmp_path: Path, redis_url: str) -> None:
    config = repo_config(tmp_path / "repo", "logs", redis_url, feature_log_flush_seconds=0.2)
    save_registry(config, logged_definitions(rate=0.25))
    server = ServerThread(config, run_schedules=False).start()
    target = f"127.0.0.1:{server.port}"
    try:
        echoed = [call(target, [1])[1] for _ in range(200)]
    finally:
        server.stop()
    logged = [e for e in echoed if e]
    assert 20 <= len(logged) <= 90  # 50 expected
    rows = ds.dataset(log_files(config, "live")).to_table()
    assert sorted(rows["request_id"].to_pylist()) == sorted(logged)


def test_full_queue_drops_and_counts_and_serving_never_errs(tmp_path: Path, redis_url: str) -> None:
    config = repo_config(
        tmp_path / "repo",
        "logs",
        redis_url,
        feature_log_flush_seconds=3600.0,
        feature_log_queue_calls=3,
    )
    save_registry(config, logged_definitions())
    before = (
        REGISTRY.get_sample_value("skewless_feature_log_dropped_total", {"feature_service": "live"})
        or 0.0
    )
    server = ServerThread(config, run_schedules=False).start()
    target = f"127.0.0.1:{server.port}"
    try:
        results = [call(target, [1, 2]) for _ in range(10)]
    finally:
        server.stop()
    assert all(len(r.results) == 3 for r, _ in results)  # every call answered
    dropped = REGISTRY.get_sample_value(
        "skewless_feature_log_dropped_total", {"feature_service": "live"}
    )
    assert dropped - before == 7 * 2  # rows of the 7 calls past the queue's 3
    table = ds.dataset(log_files(config, "live")).to_table()
    assert table.num_rows == 3 * 2


def _traffic(target: str, stop: threading.Event, ids: list[str], errors: list[str]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = online_service_pb2_grpc.OnlineServiceStub(channel)
        request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="live")
        request.entities["driver_id"].values.extend(types_pb2.Value(int64_value=i) for i in (1, 2))
        while not stop.is_set():
            try:
                _, rpc = stub.GetOnlineFeatures.with_call(request, timeout=5)
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
                return  # the server went away
            ids.append(dict(rpc.trailing_metadata())[REQUEST_ID_KEY])


def test_sigterm_mid_traffic_loses_no_logged_row(tmp_path: Path, redis_url: str) -> None:
    repo = write_repo(tmp_path / "repo", project="logs", redis_url=redis_url)
    (repo / "skewless.yaml").write_text(
        (repo / "skewless.yaml").read_text()
        + "server: {feature_log: {flush_interval: 30, queue_calls: 1000000}}\n"
    )
    from skewless.core.config import load_repo_config

    config = load_repo_config(repo)
    assert config.feature_log_flush_seconds == 30.0
    save_registry(config, logged_definitions())
    with serve(repo, "--workers", "2") as served:
        ids: list[str] = []
        errors: list[str] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_traffic, args=(served.target, stop, ids, errors))
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(ids) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        served.proc.send_signal(signal.SIGTERM)  # mid-traffic; nothing was flushed yet
        served.proc.wait(30)
        stop.set()
        for t in threads:
            t.join(10)
    assert len(ids) >= 400
    table = ds.dataset(log_files(config, "live")).to_table()
    logged = table["request_id"].to_pylist()
    assert set(ids) <= set(logged)  # every call answered with an id was written
    assert table.num_rows == 2 * len(set(logged))
    pids = {Path(f).name.split("-")[1] for f in log_files(config, "live")}
    assert 1 <= len(pids) <= 2  # each worker writes files named with its own pid
    assert (
        timedelta(0) <= datetime.now(UTC) - table["request_time"][0].as_py() < timedelta(minutes=5)
    )


def test_training_set_from_the_calls_that_were_served(config: RepoConfig) -> None:
    from skewless.client import FailedPreconditionError, FeatureLog

    server = ServerThread(config, run_schedules=False).start()
    target = f"127.0.0.1:{server.port}"
    try:
        with Client(target) as client:
            push_rows(client, [1, 2], T0)
            before = datetime.now(UTC)
            _, first = call(target, [1, 2, 3])
            middle = datetime.now(UTC)
            push_rows(client, [1], T0 + timedelta(hours=1))  # newer row, after the first call
            _, second = call(target, [1])
            time.sleep(0.6)  # the log is flushed every 0.2 s
            table = client.get_historical_features(
                FeatureLog("live", include_served_values=True), feature_service="live"
            )
            only_first = client.get_historical_features(
                FeatureLog("live", start_time=before, end_time=middle), feature_service="live"
            )
            with pytest.raises(FailedPreconditionError) as info:
                client.get_historical_features(FeatureLog("unlogged"), feature_service="unlogged")
    finally:
        server.stop()
    assert info.value.reason == "FEATURE_LOGGING_DISABLED"
    assert only_first.num_rows == 3 and set(only_first["request_id"].to_pylist()) == {first}
    assert table.column_names[:4] == ["request_id", "request_time", "registry_version", "driver_id"]
    rows = table.to_pylist()
    assert [(r["request_id"], r["driver_id"]) for r in rows] == [
        (first, 1),
        (first, 2),
        (first, 3),
        (second, 1),
    ]
    # Trained on what the point-in-time join gives at request time: what was served.
    assert [r["conv_rate"] for r in rows] == [1 / 3, 2 / 3, None, 1 / 3]
    assert [r["served__driver_live__conv_rate"] for r in rows] == [1 / 3, 2 / 3, None, 1 / 3]
    assert [r["served__driver_live__trips__status"] for r in rows] == [
        "PRESENT",
        "PRESENT",
        "NOT_FOUND",
        "PRESENT",
    ]


def _writers(config: RepoConfig) -> set[int]:
    return {int(Path(f).name.split("-")[1]) for f in log_files(config, "live")}


def test_a_writer_process_writes_and_one_killed_loses_no_row(config: RepoConfig) -> None:
    server = ServerThread(config, run_schedules=False).start()
    target = f"127.0.0.1:{server.port}"
    ids: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not _writers(config) - {os.getpid()} and time.monotonic() < deadline:
            ids.append(call(target, [1, 2])[1])  # the first flushes are written in process
            time.sleep(0.1)
        writers = _writers(config) - {os.getpid()}
        assert len(writers) == 1  # then the writer process of this server writes them
        (writer,) = writers
        os.kill(writer, signal.SIGKILL)
        ids += [call(target, [1, 2])[1] for _ in range(5)]
        time.sleep(1.0)  # flushed every 0.2 s: the one after the kill is written here
    finally:
        server.stop()
    logged = ds.dataset(log_files(config, "live")).to_table()["request_id"].to_pylist()
    assert sorted(logged) == sorted(i for i in ids for _ in (1, 2))  # none lost, none twice
