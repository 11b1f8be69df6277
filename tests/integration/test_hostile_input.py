"""Hostile input and a restarting Redis, against the real server and a real redis-server.

Every bad call ends with a deliberate status (never UNKNOWN or INTERNAL), with a short
message and details; a refused call changes no store; a restarting Redis is UNAVAILABLE
with `RetryInfo` until it has loaded its data.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
import redis
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.client import Client, InvalidArgumentError, UnavailableError
from skewless.core.config import RepoConfig
from skewless.offline.offline_store import history_dir, history_files
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.v1 import (
    historical_service_pb2,
    materialization_service_pb2,
    online_service_pb2,
    registry_service_pb2,
)
from tests.helpers.processes import stop_process
from tests.helpers.repos import live_definitions, repo_config, save_registry
from tests.integration.served import ServerThread

UTC_US = pa.timestamp("us", tz="UTC")
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

SERVICES = {
    "skewless.v1.OnlineService": online_service_pb2,
    "skewless.v1.HistoricalService": historical_service_pb2,
    "skewless.v1.RegistryService": registry_service_pb2,
    "skewless.v1.MaterializationService": materialization_service_pb2,
}


@dataclass
class Served:
    config: RepoConfig
    server: ServerThread
    redis: redis.Redis

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def _serve(config: RepoConfig) -> ServerThread:
    save_registry(config, live_definitions())
    return ServerThread(config).start()


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[Served]:
    config = repo_config(tmp_path / "repo", "hostile", redis_url)
    server = _serve(config)
    client = redis.Redis.from_url(redis_url)
    try:
        yield Served(config, server, client)
    finally:
        client.close()
        server.stop()


def rows(
    ids: list[int], times: list[datetime] | pa.Array, created: pa.Array | None = None
) -> pa.Table:
    n = len(ids)
    event = times if isinstance(times, pa.Array) else pa.array(times, UTC_US)
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": event,
            "created": created if created is not None else pa.nulls(n, UTC_US),
            "conv_rate": pa.array([0.5 + i for i in range(n)], pa.float64()),
            "trips": pa.array(list(range(n)), pa.int64()),
            "note": pa.array([f"n{i}" for i in range(n)], pa.string()),
        }
    )


def online_state(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in sorted(client.scan_iter(match=b"hostile:*"))}


def offline_state(config: RepoConfig) -> dict[str, str]:
    """Every file under the offline store (committed, staged or not), by content hash."""
    out = {}
    if config.offline_dir.is_dir():
        for path in sorted(config.offline_dir.rglob("*")):
            if path.is_file() and not path.name.endswith(".lock"):
                out[str(path.relative_to(config.offline_dir))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return out


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason, metadata = "", {}
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
    return error.code(), reason, metadata


# --- 1. a refused push writes nothing; valid extremes land in both stores -----------------


@pytest.mark.parametrize(
    "event",
    [
        pa.array([-(2**63) + 1], pa.int64()).cast(UTC_US),  # int64 min microseconds
        pa.array([2**63 - 1], pa.int64()).cast(UTC_US),  # int64 max microseconds
        pa.array([253_402_300_800_000_000], pa.int64()).cast(UTC_US),  # year 10000
    ],
    ids=["int64-min", "int64-max", "year-10000"],
)
def test_a_refused_push_writes_neither_store(served: Served, event: pa.Array) -> None:
    with Client(served.target) as client:
        client.push_features(rows([1], [T0]), push_source="driver_push")  # something stored
        before = online_state(served.redis), offline_state(served.config)
        table = rows([1, 2], pa.concat_arrays([pa.array([T0], UTC_US), event]))
        with pytest.raises(InvalidArgumentError) as info:
            client.push_features(table, push_source="driver_push")
        assert info.value.reason == "INVALID_PUSH_ROWS"
        assert info.value.metadata["row"] == "1" and info.value.metadata["column"] == "ts"
        created = pa.concat_arrays([pa.nulls(1, UTC_US), event])
        with pytest.raises(InvalidArgumentError) as info:
            client.push_features(rows([1, 2], [T0, T0], created), feature_view="driver_live")
        assert info.value.metadata["column"] == "created"
    assert (online_state(served.redis), offline_state(served.config)) == before


def test_the_extreme_valid_instants_reach_both_stores(served: Served) -> None:
    first = datetime(1, 1, 1, tzinfo=UTC)
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    with Client(served.target) as client:
        client.push_features(rows([1, 2], [first, last]), feature_view="driver_live")
        online = client.get_online_features({"driver_id": [1, 2]}, feature_service="live")
        assert online.event_times()["trips"] == [first, last]
        assert online.statuses()["trips"] == ["PRESENT", "PRESENT"]
        labels = pa.table({"driver_id": [1, 2], "event_timestamp": pa.array([first, last], UTC_US)})
        training = client.get_historical_features(labels, feature_service="live")
    assert training.column("trips").to_pylist() == [0, 1]
    assert {p.parent.name for p in history_files(served.config, "driver_live")} == {
        "event_date=0001-01-01",
        "event_date=9999-12-31",
    }


def test_a_push_while_redis_is_down_writes_nothing(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    config = repo_config(tmp_path / "repo", "hostile", redis_server.url)
    server = _serve(config)
    try:
        redis_server.stop()
        with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(UnavailableError) as info:
            client.push_features(rows([1], [T0]), push_source="driver_push")
        assert info.value.retry_delay is not None
        assert history_files(config, "driver_live") == []
        staged = (
            [p for p in config.offline_dir.rglob("*") if p.is_file()]
            if config.offline_dir.exists()
            else []
        )
        assert [p for p in staged if p.name != "_layout.json"] == []  # the layout mark only
    finally:
        server.stop()
        redis_server.stop()


# --- 2. a Redis that restarts and loads its dataset is UNAVAILABLE, then serves -----------


def test_redis_loading_its_dataset_is_unavailable_with_retry_info(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "redis"
    first = EmbeddedRedis(
        data, port=port, persist=False, extra_args=("--enable-debug-command", "yes")
    ).start()
    config = repo_config(tmp_path / "repo", "hostile", first.url)
    server = _serve(config)
    slow_load = ("--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024")
    second: EmbeddedRedis | None = None
    health = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            client.push_features(rows([1, 2], [T0, T0]), push_source="driver_push")
            expected = client.get_online_features({"driver_id": [1, 2]}, feature_service="live")
            filler = redis.Redis.from_url(first.url)
            filler.execute_command("DEBUG", "POPULATE", 40_000, "filler", 64)
            filler.save()  # the dataset the next start loads: ~4 s at 100 µs a key
            filler.close()
            first.stop()
            second = _start_loading(data, port, slow_load)
            codes: list[str] = []
            saw_not_serving = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                check = health_pb2_grpc.HealthStub(health).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                saw_not_serving |= check.status == health_pb2.HealthCheckResponse.NOT_SERVING
                try:
                    got = client.get_online_features(
                        {"driver_id": [1, 2]}, feature_service="live", timeout=2
                    )
                except UnavailableError as exc:
                    assert exc.reason == "ONLINE_STORE_UNAVAILABLE" and exc.retry_delay
                    assert "LOADING" not in exc.message  # a short cause, not Redis's text
                    codes.append("UNAVAILABLE")
                    time.sleep(0.05)
                    continue
                codes.append("OK")
                assert got.response == expected.response
                break
            assert codes[-1] == "OK" and "UNAVAILABLE" in codes, codes
            assert saw_not_serving
    finally:
        health.close()
        server.stop()
        if second is not None:
            second.stop()


def _start_loading(data: Path, port: int, extra: tuple[str, ...]) -> EmbeddedRedis:
    """Starts redis-server on the saved dataset and returns while it is still loading."""
    server = EmbeddedRedis(data, port=port, persist=False, extra_args=extra)
    from skewless.online.embedded_redis import find_redis_server

    args = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", ""]
    args += ["--appendonly", "no", "--daemonize", "no", *extra]
    server.process = subprocess.Popen(
        [find_redis_server(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port, socket_timeout=0.5)
    try:
        for _ in range(200):
            try:
                probe.ping()
            except redis.exceptions.BusyLoadingError:
                return server  # answering, and loading
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
                continue
            raise AssertionError("redis-server finished loading before the test could see it")
    finally:
        probe.close()
    raise AssertionError("redis-server did not start")


# --- 3. bytes that do not parse, on every RPC ----------------------------------------------


def _methods() -> list[tuple[str, bool]]:
    out = []
    for service, module in SERVICES.items():
        for method in module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods:
            out.append((f"/{service}/{method.name}", method.client_streaming))
    out += [
        ("/grpc.health.v1.Health/Check", False),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", True),
    ]
    return out


def _call(channel: grpc.Channel, path: str, streaming: bool, payload: bytes) -> grpc.StatusCode:
    try:
        if streaming:
            responses = channel.stream_stream(path)(iter([payload]), timeout=5)
            for _ in responses:
                pass
        else:
            channel.unary_unary(path)(payload, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# Bytes that are not a valid message: an unknown wire type, a length past the end, a
# group closed by another field's end, a varint longer than ten bytes.
_NOT_MESSAGES = [b"\x07", b"\x0a\xff\x01", b"\x0b\x14", b"\x08" + b"\xff" * 11]


@pytest.mark.parametrize(("path", "streaming"), _methods(), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_bytes_that_do_not_parse_are_invalid_argument(
    served: Served, path: str, streaming: bool
) -> None:
    with grpc.insecure_channel(served.target) as channel:
        for payload in _NOT_MESSAGES:
            assert _call(channel, path, streaming, payload) == grpc.StatusCode.INVALID_ARGUMENT


_CORPUS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@_CORPUS
@given(st.sampled_from(_methods()), st.binary(max_size=300), st.data())
def test_random_and_truncated_bytes_never_end_unknown_or_internal(
    served_target: str, method: tuple[str, bool], noise: bytes, data: st.DataObject
) -> None:
    path, streaming = method
    valid = _valid_request(path)
    cut = valid[: data.draw(st.integers(0, max(len(valid) - 1, 0)))]
    with grpc.insecure_channel(served_target) as channel:
        for payload in (noise, cut, valid + noise):
            code = _call(channel, path, streaming, payload)
            assert code not in BAD_CODES, (path, payload[:40], code)


def _valid_request(path: str) -> bytes:
    name = path.rsplit("/", 1)[1]
    if name == "GetOnlineFeatures":
        request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="live")
        request.entities["driver_id"].values.add(int64_value=1)
        return request.SerializeToString()
    if name == "GetHistoricalFeatures":
        return historical_service_pb2.GetHistoricalFeaturesRequest(
            query=historical_service_pb2.HistoricalQuery(feature_service="live", sql="SELECT 1")
        ).SerializeToString()
    if name == "StartMaterialization":
        return materialization_service_pb2.StartMaterializationRequest(
            start_time=timestamp_pb2.Timestamp(seconds=0),
            end_time=timestamp_pb2.Timestamp(seconds=60),
        ).SerializeToString()
    if name == "GetFeatureView":
        return registry_service_pb2.GetFeatureViewRequest(name="driver_live").SerializeToString()
    if name == "SearchFeatures":
        return registry_service_pb2.SearchFeaturesRequest(query="trips").SerializeToString()
    if name == "PlanRepository":
        text = "entities:\n  - {name: rider, join_keys: [rider_id], value_type: INT64}\n"
        return registry_service_pb2.PlanRepositoryRequest(
            files=[registry_service_pb2.DefinitionFile(path="features/a.yaml", content=text)]
        ).SerializeToString()
    return b""


@pytest.fixture(scope="module")
def served_target(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[str]:
    """One server for the hypothesis corpus (its examples must not restart it)."""
    config = repo_config(tmp_path_factory.mktemp("corpus"), "corpus", redis_server.url)
    server = _serve(config)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


# --- 4. statuses stay small, whatever the caller sent --------------------------------------


def test_a_1_mib_name_gives_a_small_status_a_default_client_can_read(served: Served) -> None:
    huge = "x" * 2**20
    with grpc.insecure_channel(served.target) as channel:  # default limits: 4 MiB, 16 KiB metadata
        stub = channel.unary_unary("/skewless.v1.OnlineService/GetOnlineFeatures")
        request = online_service_pb2.GetOnlineFeaturesRequest(feature_service=huge)
        request.entities["driver_id"].values.add(int64_value=1)
        with pytest.raises(grpc.RpcError) as info:
            stub(request.SerializeToString(), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        status = rpc_status.from_call(info.value)
        assert status is not None and len(status.SerializeToString()) < 4096
        assert len(status.message) < 1200 and "1,048,576 characters" in status.message
        _, reason, metadata = status_of(info.value)
        assert reason == "FEATURE_SERVICE_NOT_FOUND"
        assert all(len(v) <= 160 for v in metadata.values())
        registry = channel.unary_unary("/skewless.v1.RegistryService/GetFeatureView")
        with pytest.raises(grpc.RpcError) as info:
            registry(
                registry_service_pb2.GetFeatureViewRequest(name=huge).SerializeToString(), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(info.value.details()) < 1200


# --- 5. jobs: IDs and times are checked before they reach a file or a window --------------


def test_job_ids_and_window_times_are_checked(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        get = channel.unary_unary(
            "/skewless.v1.MaterializationService/GetMaterializationJob",
            request_serializer=materialization_service_pb2.GetMaterializationJobRequest.SerializeToString,
        )
        for job_id in (
            "a\x00b",
            "9" * 300,
            "../../registry",
            "",
            "20240101T000000000000-00000000\x00",
        ):
            with pytest.raises(grpc.RpcError) as info:
                get(
                    materialization_service_pb2.GetMaterializationJobRequest(job_id=job_id),
                    timeout=5,
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, job_id
            assert status_of(info.value)[1] == "INVALID_JOB_ID"
        with pytest.raises(grpc.RpcError) as info:
            get(
                materialization_service_pb2.GetMaterializationJobRequest(
                    job_id="20240101T000000000000-00000000"
                ),
                timeout=5,
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        start = channel.unary_unary(
            "/skewless.v1.MaterializationService/StartMaterialization",
            request_serializer=materialization_service_pb2.StartMaterializationRequest.SerializeToString,
        )
        for seconds, nanos in ((2**62, 0), (-(2**62), 0), (0, -1), (0, 1_000_000_000)):
            request = materialization_service_pb2.StartMaterializationRequest(
                incremental=True, end_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
            )
            with pytest.raises(grpc.RpcError) as info:
                start(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert status_of(info.value)[1] == "INVALID_TIMESTAMP"
    assert not (served.config.jobs_dir).exists() or list(served.config.jobs_dir.iterdir()) == []


# --- 6. historical uploads: garbage, truncated, another schema, corrupt buffers -----------


def _corrupt_offsets(batch: pa.RecordBatch) -> bytes:
    """An IPC record batch message whose string offsets point past the data."""
    data = batch.serialize().to_pybytes()
    offsets = pa.array([0, 1, 2, 3], pa.int32()).buffers()[1].to_pybytes()
    assert offsets in data
    return data.replace(offsets, offsets[:12] + (2**30).to_bytes(4, "little"))


def test_bad_historical_uploads_are_invalid_argument(served: Served) -> None:
    with Client(served.target) as client:
        client.push_features(rows([1, 2, 3], [T0, T0, T0]), push_source="driver_push")
    good = pa.record_batch(
        {
            "driver_id": pa.array([1, 2, 3], pa.int64()),
            "event_timestamp": pa.array([T0] * 3, UTC_US),
            "tag": pa.array(["a", "b", "c"]),
        }
    )
    other = pa.record_batch({"x": pa.array([1.0, 2.0])})
    schema = good.schema.serialize().to_pybytes()
    body = good.serialize().to_pybytes()
    uploads = {
        "garbage schema": (b"\xff" * 40, body),
        "truncated schema": (schema[: len(schema) // 2], body),
        "garbage batch": (schema, b"\x01\x02\x03" * 30),
        "truncated batch": (schema, body[: len(body) // 2]),
        "another schema's batch": (schema, other.serialize().to_pybytes()),
        "corrupt offsets": (schema, _corrupt_offsets(good)),
    }
    pb = historical_service_pb2
    query = pb.HistoricalQuery(feature_service="live", inline=pb.InlineEntityRows())
    with grpc.insecure_channel(served.target) as channel:
        call = channel.stream_stream("/skewless.v1.HistoricalService/GetHistoricalFeatures")
        for what, (schema_bytes, batch_bytes) in uploads.items():
            requests = [
                pb.GetHistoricalFeaturesRequest(query=query),
                pb.GetHistoricalFeaturesRequest(
                    arrow_schema=pb.ArrowSchema(serialized_schema=schema_bytes),
                    entity_batch=pb.ArrowRecordBatch(
                        serialized_record_batch=batch_bytes, row_count=3
                    ),
                ),
            ]
            with pytest.raises(grpc.RpcError) as info:
                list(call(iter(r.SerializeToString() for r in requests), timeout=10))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
            assert len(info.value.details()) < 1200, what


@pytest.mark.parametrize(
    "labels",
    [
        pa.array([-(2**63) + 1], pa.int64()).cast(UTC_US),
        pa.array([2**63 - 1], pa.int64()).cast(UTC_US),
        pa.array([2**62], pa.int64()).cast(pa.timestamp("s")),  # overflows as microseconds
    ],
    ids=["int64-min", "int64-max", "seconds-overflow"],
)
def test_label_times_outside_the_stored_range_are_invalid_argument(
    served: Served, labels: pa.Array
) -> None:
    with Client(served.target) as client:
        client.push_features(rows([1], [T0]), push_source="driver_push")
        with pytest.raises(InvalidArgumentError) as info:
            client.get_historical_features(
                pa.table({"driver_id": [1], "event_timestamp": labels}), feature_service="live"
            )
        assert info.value.reason == "LABEL_TIME_OUT_OF_RANGE"
        first = pa.table(
            {"driver_id": [1], "event_timestamp": pa.array([datetime(1, 1, 1, tzinfo=UTC)], UTC_US)}
        )
        before_everything = client.get_historical_features(first, features=["driver_recent"])
        assert before_everything.column("trips").to_pylist() == [None]  # TTL reaches before year 1


def test_a_push_with_a_corrupt_buffer_writes_nothing(served: Served) -> None:
    table = pa.table(
        {"driver_id": [1, 2, 3], "ts": pa.array([T0] * 3, UTC_US), "note": ["a", "b", "c"]}
    )
    batch = table.to_batches()[0]
    stream = pa.BufferOutputStream()
    with pa.ipc.new_stream(stream, batch.schema) as writer:
        writer.write_batch(batch)
    data = stream.getvalue().to_pybytes()
    offsets = pa.array([0, 1, 2, 3], pa.int32()).buffers()[1].to_pybytes()
    corrupt = data.replace(offsets, offsets[:12] + (2**30).to_bytes(4, "little"))
    before = online_state(served.redis), offline_state(served.config)
    with grpc.insecure_channel(served.target) as channel:
        push = channel.unary_unary("/skewless.v1.OnlineService/PushFeatures")
        request = online_service_pb2.PushFeaturesRequest(
            push_source="driver_push", arrow_ipc_stream=corrupt
        )
        with pytest.raises(grpc.RpcError) as info:
            push(request.SerializeToString(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(info.value)[1] == "BAD_ARROW_DATA"
    assert (online_state(served.redis), offline_state(served.config)) == before


# --- 7. entity SQL cannot read server facts ------------------------------------------------


def test_entity_sql_cannot_read_server_settings(served: Served) -> None:
    home = str(Path.home())
    with Client(served.target) as client:
        client.push_features(rows([1], [T0]), push_source="driver_push")
        for sql in (
            "SELECT 1::BIGINT AS driver_id, now() AS event_timestamp, "
            "current_setting('temp_directory') AS t",
            "SELECT 1::BIGINT AS driver_id, now() AS event_timestamp, value AS t "
            "FROM duckdb_settings()",
            "SELECT * FROM query('SELECT current_setting(''allowed_directories'')')",
        ):
            with pytest.raises(Exception) as info:
                client.get_historical_features(None, feature_service="live", sql=sql)
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED, sql  # type: ignore[attr-defined]
            assert (
                home not in info.value.message and str(served.config.root) not in info.value.message
            )  # type: ignore[attr-defined]
        with pytest.raises(InvalidArgumentError) as bad:
            missing = served.config.root / "missing.parquet"
            client.get_historical_features(
                None, feature_service="live", sql=f"SELECT * FROM read_parquet('{missing}')"
            )
        assert str(served.config.root) not in bad.value.message


# --- 8. killed and superseded runs leave no files behind ----------------------------------


def test_the_next_commit_removes_what_dead_writers_left(served: Served) -> None:
    with Client(served.target) as client:
        client.push_features(rows([1], [T0]), push_source="driver_push")
    folder = history_dir(served.config, "driver_live") / "event_date=2024-05-01"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = folder / f"20240501T000000000000-deadbeef.parquet.{gone.pid}.tmp"
    left.write_bytes(b"a staged file of a killed writer")
    orphan = folder / "20240501T000000000001-0ddba11.parquet"
    orphan.write_bytes(b"renamed by a commit that crashed before its Delta commit")
    live = folder / f"20240501T000000000002-a11ve000.parquet.{os.getpid()}.tmp"
    live.write_bytes(b"staged by a writer that is still running")
    with Client(served.target) as client:
        client.push_features(rows([2], [T0 + timedelta(hours=1)]), push_source="driver_push")
    assert not left.exists()
    assert live.exists()  # its writer (this process) may still commit it
    live.unlink()
    committed = {str(p) for p in history_files(served.config, "driver_live")}
    on_disk = {str(p) for p in history_dir(served.config, "driver_live").rglob("*.parquet")}
    # Another writer may be between its rename and its commit: only vacuum (past its
    # retention) removes files that no version references.
    assert on_disk == committed | {str(orphan)}


def test_a_killed_materialization_leaves_nothing_after_the_rerun(
    tmp_path: Path, redis_url: str
) -> None:
    """SIGKILL mid-window, then re-run: only what the table references stays on disk."""
    from skewless.materialization.pipeline import materialize
    from skewless.offline.offline_store import read_files
    from skewless.registry.registry_store import RegistryStore
    from tests.integration.matfixtures import T0 as M0
    from tests.integration.matfixtures import driver_rows, make_config, make_registry, write_source

    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows(n_drivers=50, n_times=24 * 20))
    RegistryStore(config.storage).save(make_registry())
    script = (
        "import sys, time; from skewless.materialization import pipeline as p\n"
        "from skewless.offline import offline_store as o\n"
        "real = o.HistoryWriter.close\n"
        "def slow(self):\n"
        "    out = real(self); print('staged', flush=True); time.sleep(60); return out\n"
        "o.HistoryWriter.close = slow\n"
        "from tests.integration.matfixtures import make_config, make_registry, T0\n"
        "from datetime import timedelta\n"
        f"c = make_config(__import__('pathlib').Path({str(config.root)!r}), {redis_url!r})\n"
        "p.materialize(c, make_registry(), T0, T0 + timedelta(days=20))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
    finally:
        stop_process(proc, sig=signal.SIGKILL)
    root = history_dir(config, "driver_stats")
    assert any(p.name.endswith(".tmp") for p in root.rglob("*"))  # what the kill left
    materialize(config, make_registry(), M0, M0 + timedelta(days=20))
    listed = {e.path for e in read_files(config, "driver_stats")}
    on_disk = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".parquet", ".tmp")
    }
    assert on_disk == listed
