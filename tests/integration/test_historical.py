"""GetHistoricalFeatures end to end: real server on a free port, real Redis, the client."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import duration_pb2, unknown_fields
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skewless.client import Client
from skewless.client import errors as client_errors
from skewless.client import historical as historical_client
from skewless.client.historical import get_historical_features, iter_historical_batches
from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, PermissionDeniedError
from skewless.offline import entity_rows as entity_sources
from skewless.offline import retrieval
from skewless.offline.migrate import adopt_files
from skewless.offline.offline_store import (
    ORIGIN_PUSH,
    HistoryWriter,
    commit_append,
    history_files,
)
from skewless.offline.point_in_time import ViewHistory, point_in_time_join
from skewless.registry.feature_refs import resolve_feature_service
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import historical_service_pb2, registry_pb2, types_pb2
from tests.integration.served import ServerThread

try:
    from .client_harness import GRPCURL
except ImportError:
    from client_harness import GRPCURL  # type: ignore[no-redef]

VT = types_pb2.ValueType
UTC_US = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def make_registry() -> registry_pb2.Registry:
    def entity(name: str, key: str, vt: int) -> registry_pb2.Entity:
        return registry_pb2.Entity(
            name=name, join_keys=[registry_pb2.JoinKey(name=key, value_type=vt)]
        )

    def feature(name: str, vt: int) -> registry_pb2.Feature:
        return registry_pb2.Feature(name=name, value_type=vt)

    return registry_pb2.Registry(
        project="hist",
        entities=[
            entity("driver", "driver_id", VT.VALUE_TYPE_INT64),
            entity("customer", "customer_id", VT.VALUE_TYPE_STRING),
        ],
        data_sources=[
            registry_pb2.DataSource(
                name="labels",
                file=registry_pb2.FileSource(
                    path="labels.parquet", format=registry_pb2.FILE_FORMAT_PARQUET
                ),
                timestamp_field="event_timestamp",
            )
        ],
        feature_views=[
            registry_pb2.FeatureView(
                name="driver_stats",
                entities=["driver"],
                ttl=duration_pb2.Duration(seconds=2 * 3600),
                features=[
                    feature("rating", VT.VALUE_TYPE_FLOAT64),
                    feature("trips", VT.VALUE_TYPE_INT64),
                ],
            ),
            registry_pb2.FeatureView(
                name="customer_stats",
                entities=["customer"],
                features=[
                    feature("spend", VT.VALUE_TYPE_FLOAT32),
                    feature("trips", VT.VALUE_TYPE_INT64),
                ],
            ),
            registry_pb2.FeatureView(
                name="never_materialized",
                entities=["driver"],
                features=[feature("x", VT.VALUE_TYPE_INT64)],
            ),
        ],
        feature_services=[
            registry_pb2.FeatureService(
                name="model",
                projections=[
                    registry_pb2.FeatureProjection(feature_view="driver_stats"),
                    registry_pb2.FeatureProjection(
                        feature_view="customer_stats", features=["spend"]
                    ),
                ],
            ),
            registry_pb2.FeatureService(
                name="broken",
                projections=[registry_pb2.FeatureProjection(feature_view="never_materialized")],
            ),
        ],
    )


def write_histories(config: RepoConfig) -> None:
    drivers = 50
    hours = 24
    rows = [
        (d, T0 + h * HOUR, float(d * 100 + h), d * 1000 + h)
        for d in range(drivers)
        for h in range(0, hours, 2)
    ]
    table = pa.table(
        {
            "driver_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] for r in rows], UTC_US),
            "created_timestamp": pa.array([None] * len(rows), UTC_US),
            "rating": pa.array([r[2] for r in rows], pa.float64()),
            "trips": pa.array([r[3] for r in rows], pa.int64()),
        }
    )
    # driver_stats is written by another tool, then adopted into its Delta table.
    folder = config.root / "written_elsewhere"
    folder.mkdir(parents=True)
    pq.write_table(table.slice(0, 300), folder / "part-0.parquet")
    pq.write_table(table.slice(300), folder / "part-1.parquet")
    adopt_files(config, "driver_stats", [folder / "part-0.parquet", folder / "part-1.parquet"])
    # customer_stats goes through the real writer: day files and a Delta commit, so the
    # server prunes files by the label time range.
    customers = pa.table(
        {
            "customer_id": ["c1", "c2", "c1", "c2", "c1"],
            "event_timestamp": pa.array(
                [T0, T0, T0 + 5 * HOUR, T0 - 10 * 24 * HOUR, T0 + 30 * 24 * HOUR], UTC_US
            ),
            "created_timestamp": pa.array([None] * 5, UTC_US),
            "spend": pa.array([1.5, 2.5, 3.5, 0.5, 99.0], pa.float32()),
            "trips": pa.array([1, 2, 3, 0, 99], pa.int64()),
        }
    )
    writer = HistoryWriter(config, "customer_stats", customers.schema, origin=ORIGIN_PUSH)
    writer.write(customers)
    commit_append(config, "customer_stats", writer.close())
    assert len(history_files(config, "customer_stats")) == 3  # one file per UTC day


def entity_rows(n: int) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array([(i * 7) % 60 for i in range(n)], pa.int64()),
            "customer_id": [["c1", "c2", "c3"][i % 3] for i in range(n)],
            "event_timestamp": pa.array(
                [T0 + dt.timedelta(minutes=(i * 37) % (30 * 60)) for i in range(n)], UTC_US
            ),
            "label": pa.array([i % 2 == 0 for i in range(n)]),
        }
    )


@dataclass
class Served:
    config: RepoConfig
    channel: grpc.Channel
    client: Client
    port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("historical")
    config = RepoConfig(
        root=root,
        project="hist",
        data_dir=root / "data",
        redis_url=redis_server.url,
        server_port=0,
        metrics_port=0,
    )
    RegistryStore(config.storage).save(make_registry())
    write_histories(config)
    server = ServerThread(config).start()
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options)
    client = Client(f"127.0.0.1:{server.port}", timeout=30.0)
    yield Served(config=config, channel=channel, client=client, port=server.port)
    client.close()
    channel.close()
    server.stop()


def expected(config: RepoConfig, rows: pa.Table, *, full: bool = False) -> pa.Table:
    """The same join run in process (itself checked against the brute-force reference)."""
    registry = RegistryStore(config.storage).load()
    assert registry is not None
    plan = resolve_feature_service(registry, "model", full_feature_names=full)
    join = point_in_time_join(
        rows,
        plan,
        [ViewHistory(v, tuple(history_files(config, v.name))) for v in plan.views],
    )
    try:
        return join.reader.read_all()
    finally:
        join.close()


def test_inline_rows_round_trip_exactly(served: Served) -> None:
    rows = entity_rows(2000)
    table = get_historical_features(
        served.channel, rows, feature_service="model", full_feature_names=True, batch_rows=300
    )
    assert table.num_rows == 2000
    assert table.schema.names == [
        "driver_id",
        "customer_id",
        "event_timestamp",
        "label",
        "driver_stats__rating",
        "driver_stats__trips",
        "customer_stats__spend",
    ]
    assert table.select(rows.schema.names).equals(rows)
    assert table.equals(expected(served.config, rows, full=True))
    first = table.slice(0, 3).to_pylist()
    # row 0: driver 0 at T0 -> the T0 row; row 1: driver 7 at T0+37m -> T0 row too.
    assert first[0]["driver_stats__rating"] == 0.0
    assert first[1]["driver_stats__trips"] == 7000
    assert first[2]["customer_stats__spend"] is None  # c3 is unknown
    unknown = table.filter(pa.compute.greater_equal(table["driver_id"], 50))
    assert unknown.num_rows > 0
    assert unknown["driver_stats__rating"].null_count == unknown.num_rows


def test_client_class_and_feature_lists(served: Served) -> None:
    rows = entity_rows(50)
    table = served.client.get_historical_features(
        rows, features=["customer_stats:spend", "driver_stats:rating"]
    )
    assert table.schema.names[-2:] == ["spend", "rating"]
    reference = expected(served.config, rows)
    assert table["spend"].equals(reference["spend"])
    assert table["rating"].equals(reference["rating"])


def test_path_sql_and_stream_sources_give_the_same_result(served: Served) -> None:
    rows = entity_rows(500)
    pq.write_table(rows, served.config.root / "labels.parquet", row_group_size=64)
    inline = get_historical_features(served.channel, rows, feature_service="model")
    by_path = get_historical_features(served.channel, "labels.parquet", feature_service="model")
    by_sql = get_historical_features(
        served.channel,
        None,
        sql="SELECT * FROM labels",
        feature_service="model",
    )
    streamed = get_historical_features(
        served.channel, rows.to_reader(max_chunksize=77), feature_service="model", progress=True
    )
    assert by_path.equals(inline)
    assert by_sql.equals(inline)
    assert streamed.equals(inline)


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none", None])
def test_batches_honour_batch_size_and_compression(served: Served, compression: str | None) -> None:
    rows = entity_rows(1000)
    with iter_historical_batches(
        served.channel,
        rows,
        feature_service="model",
        result_batch_rows=128,
        compression=compression,
    ) as stream:
        batches = list(stream)
    assert [b.num_rows for b in batches] == [128] * 7 + [104]
    assert pa.Table.from_batches(batches).equals(expected(served.config, rows))


def test_label_times_outside_every_history_file_give_nulls(served: Served) -> None:
    rows = entity_rows(5)
    early = rows.set_column(
        2, "event_timestamp", pa.array([dt.datetime(2020, 1, 1, tzinfo=dt.UTC)] * 5, UTC_US)
    )
    table = get_historical_features(served.channel, early, feature_service="model")
    assert table.num_rows == 5
    for name in ("rating", "trips", "spend"):
        assert table[name].null_count == 5
    late = rows.set_column(2, "event_timestamp", pa.array([T0 + 40 * 24 * HOUR] * 5, UTC_US))
    table = get_historical_features(served.channel, late, feature_service="model")
    assert table["spend"].to_pylist() == [99.0, 2.5, None, 99.0, 2.5]  # c1 c2 c3 c1 c2
    assert table["rating"].null_count == 5  # beyond the 2 h TTL


def test_naive_and_zoned_label_times(served: Served) -> None:
    rows = entity_rows(100)
    naive = rows.set_column(2, "event_timestamp", rows["event_timestamp"].cast(pa.timestamp("us")))
    zoned = rows.set_column(
        2, "event_timestamp", rows["event_timestamp"].cast(pa.timestamp("ns", tz="Asia/Kolkata"))
    )
    base = get_historical_features(served.channel, rows, feature_service="model")
    for variant in (naive, zoned):
        got = get_historical_features(served.channel, variant, feature_service="model")
        assert got.select(["rating", "trips", "spend"]).equals(
            base.select(["rating", "trips", "spend"])
        )
        assert got["event_timestamp"].type == variant["event_timestamp"].type


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    fields: list[str] = []
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return exc.code(), exc.details() or "", fields


@pytest.mark.parametrize(
    ("rows", "kwargs", "code", "needle", "field"),
    [
        (
            entity_rows(3).drop_columns(["driver_id"]),
            {"feature_service": "model"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "driver_id",
            "entity_rows",
        ),
        (
            entity_rows(3),
            {"feature_service": "model", "label_time_column": "label_ts"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "label_ts",
            "label_time_column",
        ),
        (
            entity_rows(3).set_column(0, "driver_id", pa.array(["a", "b", "c"])),
            {"feature_service": "model"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "driver_id",
            "entity_rows",
        ),
        (
            entity_rows(3),
            {"features": ["driver_stats:speed"]},
            grpc.StatusCode.NOT_FOUND,
            "speed",
            None,
        ),
        (entity_rows(3), {"feature_service": "nope"}, grpc.StatusCode.NOT_FOUND, "nope", None),
        (
            entity_rows(3),
            {"features": ["driver_stats:trips", "customer_stats:trips"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "full_feature_names",
            "full_feature_names",
        ),
        (
            entity_rows(3),
            {"features": ["driver_stats::x"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed",
            "features",
        ),
        (
            entity_rows(3),
            {"feature_service": "broken"},
            grpc.StatusCode.FAILED_PRECONDITION,
            "never_materialized",
            None,
        ),
        (
            "missing/*.parquet",
            {"feature_service": "model"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing",
            "query.path",
        ),
        (
            "../elsewhere/labels.parquet",
            {"feature_service": "model"},
            grpc.StatusCode.PERMISSION_DENIED,
            "entity_source_roots",
            None,
        ),
        (
            "/etc/*.parquet",
            {"feature_service": "model"},
            grpc.StatusCode.PERMISSION_DENIED,
            "outside the folders",
            None,
        ),
        (
            None,
            {"feature_service": "model", "sql": "SELECT * FROM read_csv('/etc/passwd')"},
            grpc.StatusCode.PERMISSION_DENIED,
            "entity_source_roots",
            None,
        ),
        (
            entity_rows(3),
            {"feature_service": "model", "result_batch_rows": 10_000_000},
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch_size",
            "query.batch_size",
        ),
    ],
)
def test_errors_are_clear_statuses(
    served: Served,
    rows: Any,
    kwargs: dict[str, Any],
    code: grpc.StatusCode,
    needle: str,
    field: str | None,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        get_historical_features(served.channel, rows, **kwargs)
    got_code, message, fields = _status(info.value)
    assert got_code == code, message
    assert needle in message
    if field is not None:
        assert field in fields


def test_bad_sql_and_typed_client_errors(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as info:
        get_historical_features(
            served.channel, None, sql="DROP TABLE labels", feature_service="model"
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(client_errors.InvalidArgumentError) as typed:
        served.client.get_historical_features(
            entity_rows(2).drop_columns(["customer_id"]), feature_service="model"
        )
    assert typed.value.reason == "MISSING_JOIN_KEY"
    assert typed.value.metadata["column"] == "customer_id"


def test_retrievals_are_counted_by_feature_service_and_status(served: Served) -> None:
    from prometheus_client import REGISTRY

    def count(code: str, service: str) -> float:
        labels = {"rpc": "GetHistoricalFeatures", "feature_service": service, "code": code}
        return REGISTRY.get_sample_value("skewless_requests_total", labels) or 0.0

    ok, denied = count("OK", "model"), count("PERMISSION_DENIED", "model")
    unknown = count("NOT_FOUND", "")
    get_historical_features(served.channel, entity_rows(4), feature_service="model")
    with pytest.raises(grpc.RpcError):
        get_historical_features(served.channel, "/etc/passwd", feature_service="model")
    with pytest.raises(grpc.RpcError):
        get_historical_features(served.channel, entity_rows(4), feature_service="nope")
    assert count("OK", "model") == ok + 1
    assert count("PERMISSION_DENIED", "model") == denied + 1
    assert count("NOT_FOUND", "") == unknown + 1  # an unknown name never becomes a label
    assert count("NOT_FOUND", "nope") == 0


def test_entity_sources_read_only_under_the_allowed_roots(tmp_path: Path) -> None:
    inside, extra, outside = tmp_path / "repo", tmp_path / "shared", tmp_path / "private"
    for folder in (inside, extra, outside):
        folder.mkdir()
        pq.write_table(entity_rows(3), folder / "rows.parquet")
    pq.write_table(entity_rows(3), outside / "other.parquet")
    config = RepoConfig(
        root=inside, project="p", data_dir=inside / ".skewless", entity_source_roots=(inside, extra)
    )
    read_path = entity_sources.read_path
    assert read_path(config, "rows.parquet").num_rows == 3
    assert read_path(config, str(extra / "*.parquet")).num_rows == 3
    assert read_path(config, "../shared/rows.parquet").num_rows == 3
    for refused in ("../private/rows.parquet", str(outside / "rows.parquet"), "/etc/passwd"):
        with pytest.raises(PermissionDeniedError, match="entity_source_roots") as info:
            read_path(config, refused)
        assert str(tmp_path) not in info.value.message  # no server paths in messages
    registry = registry_pb2.Registry(
        data_sources=[
            registry_pb2.DataSource(
                name="registered",
                file=registry_pb2.FileSource(
                    path=str(outside / "rows.parquet"), format=registry_pb2.FILE_FORMAT_PARQUET
                ),
            )
        ]
    )
    read_sql = entity_sources.read_sql
    # A registered source is the operator's: readable wherever it is.
    assert read_sql(config, registry, "SELECT * FROM registered").num_rows == 3
    within = f"SELECT * FROM read_parquet('{extra}/rows.parquet')"
    assert read_sql(config, registry, within).num_rows == 3
    cte = "WITH r AS (SELECT * FROM registered) SELECT r.* FROM r"
    assert read_sql(config, registry, cte).num_rows == 3
    for sql in (
        f"SELECT * FROM read_parquet('{outside}/other.parquet')",  # beside a registered file
        f"SELECT * FROM read_parquet('{inside}/../private/*.parquet')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        # server facts: settings, the catalog, the environment, SQL run from a string
        "SELECT *, current_setting('temp_directory') AS t FROM registered",
        "SELECT *, current_setting('allowed_directories') AS t FROM registered",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM duckdb_settings",
        "SELECT * FROM information_schema.tables",
        "SELECT *, getenv('HOME') AS h FROM registered",
        "SELECT * FROM query('SELECT current_setting(''temp_directory'')')",
    ):
        with pytest.raises(PermissionDeniedError) as info:
            read_sql(config, registry, sql)
        assert str(tmp_path) not in info.value.message, sql
    with pytest.raises(InvalidArgumentError) as bad:
        read_sql(config, registry, f"SELECT * FROM read_parquet('{extra}/missing.parquet')")
    assert str(tmp_path) not in bad.value.message  # DuckDB's message names no server path


@dataclass
class JoinSpy:
    """Watches the server's joins: batches pulled from each, and when each is closed."""

    closed: threading.Event
    produced: list[int]
    joins: list[Any]


@pytest.fixture
def join_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[JoinSpy]:
    spy = JoinSpy(closed=threading.Event(), produced=[], joins=[])
    real = retrieval.point_in_time_join

    def watched(*args: Any, **kwargs: Any) -> Any:
        join = real(*args, **kwargs)
        close = join.close
        source = join.reader

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in source:
                spy.produced.append(batch.num_rows)
                yield batch

        join.reader = pa.RecordBatchReader.from_batches(join.schema, counted())

        def close_and_tell() -> None:
            close()
            spy.closed.set()

        join.close = close_and_tell
        spy.joins.append(join)
        return join

    monkeypatch.setattr(retrieval, "point_in_time_join", watched)
    yield spy
    spy.joins.clear()  # DuckDB objects alive at interpreter exit make nanobind complain


def _assert_released(spy: JoinSpy) -> None:
    assert spy.closed.wait(10), "the server kept the join open after the client cancelled"
    assert len(spy.joins) == 1
    try:
        spy.joins[0]._con.execute("SELECT 1")
    except duckdb.ConnectionException:
        pass  # closed: DuckDB released the query's memory
    else:
        raise AssertionError("the join's DuckDB connection is still open")


def test_cancel_mid_stream_stops_the_query_and_frees_it(served: Served, join_spy: JoinSpy) -> None:
    rows = entity_rows(100_000)
    stream = iter_historical_batches(
        served.channel, rows, feature_service="model", result_batch_rows=1000
    )
    first = next(stream)
    assert first.num_rows == 1000
    stream.close()
    _assert_released(join_spy)
    # Flow control: the server pulled only a few batches ahead of the client, then stopped.
    assert len(join_spy.produced) < 50, len(join_spy.produced)
    # The server is still healthy and serves the next call.
    again = get_historical_features(served.channel, entity_rows(10), feature_service="model")
    assert again.num_rows == 10


def test_cancel_while_the_query_runs(served: Served, join_spy: JoinSpy) -> None:
    stream = iter_historical_batches(served.channel, entity_rows(200_000), feature_service="model")
    assert "rating" in stream.schema.names  # the server now runs the query
    stream.close()
    _assert_released(join_spy)
    assert len(join_spy.produced) <= 1


# --- the wire format of the pre-serialized responses ------------------------------------

_METHOD = "/skewless.v1.HistoricalService/GetHistoricalFeatures"


def _raw_responses(
    channel: grpc.Channel, rows: pa.Table, **query: Any
) -> tuple[list[bytes], pa.Schema]:
    """Calls GetHistoricalFeatures without the skewless client: the responses' raw bytes."""
    requests = [
        historical_service_pb2.GetHistoricalFeaturesRequest(
            query=historical_service_pb2.HistoricalQuery(
                feature_service="model", inline=historical_service_pb2.InlineEntityRows(), **query
            )
        ),
        historical_service_pb2.GetHistoricalFeaturesRequest(
            arrow_schema=historical_service_pb2.ArrowSchema(
                serialized_schema=rows.schema.serialize().to_pybytes()
            ),
            entity_batch=historical_service_pb2.ArrowRecordBatch(
                serialized_record_batch=rows.combine_chunks()
                .to_batches()[0]
                .serialize()
                .to_pybytes(),
                row_count=rows.num_rows,
            ),
        ),
    ]
    call = channel.stream_stream(
        _METHOD,
        request_serializer=historical_service_pb2.GetHistoricalFeaturesRequest.SerializeToString,
        response_deserializer=None,
    )
    raw = list(call(iter(requests), timeout=30))
    first = historical_service_pb2.GetHistoricalFeaturesResponse.FromString(raw[0])
    assert first.HasField("arrow_schema")
    assert not first.HasField("arrow_record_batch")
    return raw[1:], pa.ipc.read_schema(pa.py_buffer(first.arrow_schema.serialized_schema))


def test_features_only_leaves_the_entity_columns_to_the_client(served: Served) -> None:
    rows = entity_rows(300)
    raw, schema = _raw_responses(served.channel, rows, features_only=True, batch_size=64)
    assert schema.names == ["rating", "trips", "spend"]
    got = pa.Table.from_batches(
        [historical_client._read_batch(data, schema) for data in raw], schema=schema
    )
    whole = expected(served.config, rows)
    assert got.equals(whole.select(schema.names))
    # The client asks for features only when it holds the rows, and attaches them back.
    assert get_historical_features(served.channel, rows, feature_service="model").equals(whole)
    batch = rows.combine_chunks().to_batches()[0]
    assert get_historical_features(served.channel, batch, feature_service="model").equals(whole)


@pytest.mark.parametrize(
    ("compression", "batch_size"),
    [
        (historical_service_pb2.ARROW_COMPRESSION_UNSPECIFIED, 0),
        (historical_service_pb2.ARROW_COMPRESSION_NONE, 700),
        (historical_service_pb2.ARROW_COMPRESSION_LZ4_FRAME, 0),
        (historical_service_pb2.ARROW_COMPRESSION_ZSTD, 1000),
    ],
)
def test_generated_message_class_parses_the_pre_serialized_responses(
    served: Served, compression: int, batch_size: int
) -> None:
    rows = entity_rows(3000)
    raw, schema = _raw_responses(
        served.channel, rows, compression=compression, batch_size=batch_size
    )
    batches = []
    for data in raw:
        message = historical_service_pb2.GetHistoricalFeaturesResponse.FromString(data)
        assert message.HasField("arrow_record_batch")
        assert not message.HasField("arrow_schema")
        assert message.ListFields()[0][0].name == "arrow_record_batch"
        assert len(message.ListFields()) == 1
        assert len(unknown_fields.UnknownFieldSet(message.arrow_record_batch)) == 0
        batch = pa.ipc.read_record_batch(
            pa.py_buffer(message.arrow_record_batch.serialized_record_batch), schema
        )
        assert batch.num_rows == message.arrow_record_batch.row_count
        # Re-serialized by the generated code, the message reads back the same.
        again = historical_service_pb2.GetHistoricalFeaturesResponse.FromString(
            message.SerializeToString()
        )
        assert again == message
        batches.append(batch)
    if batch_size:
        assert [b.num_rows for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    table = pa.Table.from_batches(batches, schema=schema)
    assert table.equals(expected(served.config, rows))
    client = get_historical_features(
        served.channel, rows, feature_service="model", result_batch_rows=batch_size
    )
    assert client.equals(table)


def test_record_batch_responses_keep_the_ipc_message_8_byte_aligned(served: Served) -> None:
    raw, schema = _raw_responses(served.channel, entity_rows(2000), batch_size=500)
    assert len(raw) == 4
    for data in raw:
        message = historical_service_pb2.GetHistoricalFeaturesResponse.FromString(data)
        ipc = message.arrow_record_batch.serialized_record_batch
        # The IPC message sits in the response after a 16-byte header, so a client can
        # read its columns in place at their natural alignment.
        assert data.index(ipc) == 16
        assert len(data) == 16 + len(ipc)
        in_place = historical_client._read_batch(data, schema)
        assert in_place.equals(pa.ipc.read_record_batch(pa.py_buffer(ipc), schema))
        received = pa.py_buffer(data)
        if received.address % 8 == 0:  # then the client reads the columns without a copy
            values = in_place.column("rating").buffers()[1]
            assert received.address < values.address < received.address + len(data)


def test_client_reads_canonical_and_merged_encodings() -> None:
    """Any valid encoding of a response reads the same (e.g. from another server)."""
    batch = entity_rows(100).to_batches()[0]
    ipc = batch.serialize().to_pybytes()
    canonical = historical_service_pb2.GetHistoricalFeaturesResponse(
        arrow_record_batch=historical_service_pb2.ArrowRecordBatch(
            serialized_record_batch=ipc, row_count=100
        )
    ).SerializeToString()
    # The same message in pieces: row_count first in its own occurrence of field 2,
    # an unknown field 9, then the bytes (embedded messages merge across occurrences).
    rows_first = historical_service_pb2.GetHistoricalFeaturesResponse(
        arrow_record_batch=historical_service_pb2.ArrowRecordBatch(row_count=100)
    ).SerializeToString()
    unknown = b"\x48\x07"  # field 9, varint 7
    bytes_only = historical_service_pb2.GetHistoricalFeaturesResponse(
        arrow_record_batch=historical_service_pb2.ArrowRecordBatch(serialized_record_batch=ipc)
    ).SerializeToString()
    merged = rows_first + unknown + bytes_only
    for data in (canonical, merged):
        assert historical_client._read_batch(data, batch.schema).equals(batch)
    with pytest.raises(RuntimeError, match="row_count=7"):
        historical_client._read_batch(canonical + b"\x12\x02\x10\x07", batch.schema)
    with pytest.raises(DecodeError):  # truncated: the generated parser reports it
        historical_client._read_batch(canonical[:-50], batch.schema)


@pytest.mark.skipif(not GRPCURL.exists(), reason=f"grpcurl is not installed at {GRPCURL}")
def test_grpcurl_parses_the_pre_serialized_responses(served: Served) -> None:
    """Go's protobuf (in grpcurl, through reflection) reads the responses as sent."""
    rows = entity_rows(400)
    pq.write_table(rows, served.config.root / "labels.parquet")
    body = json.dumps(
        {"query": {"featureService": "model", "path": "labels.parquet", "batchSize": 100}}
    )
    result = subprocess.run(
        [
            *(str(GRPCURL), "-plaintext", "-max-time", "20", "-d", body),
            *(f"127.0.0.1:{served.port}", _METHOD.lstrip("/")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    messages, pos, text = [], 0, result.stdout.strip()
    while pos < len(text):
        message, pos = decoder.raw_decode(text, pos)
        messages.append(message)
        pos = len(text) - len(text[pos:].lstrip())
    assert len(messages) == 5  # the schema, then 4 batches of 100 rows
    schema = pa.ipc.read_schema(
        pa.py_buffer(base64.b64decode(messages[0]["arrow_schema"]["serialized_schema"]))
    )
    batches = []
    for message in messages[1:]:
        part = message["arrow_record_batch"]  # grpcurl prints the proto field names
        batch = pa.ipc.read_record_batch(
            pa.py_buffer(base64.b64decode(part["serialized_record_batch"])), schema
        )
        assert int(part["row_count"]) == batch.num_rows
        batches.append(batch)
    assert pa.Table.from_batches(batches, schema=schema).equals(expected(served.config, rows))


def test_generated_message_class_parses_the_client_requests() -> None:
    rows = entity_rows(1000)
    query = historical_service_pb2.HistoricalQuery(feature_service="model")
    requests = [
        historical_service_pb2.GetHistoricalFeaturesRequest.FromString(data)
        for data in historical_client._requests(query, rows.to_reader(), 300, threading.Event())
    ]
    assert requests[0] == historical_service_pb2.GetHistoricalFeaturesRequest(query=query)
    assert [r.HasField("arrow_schema") for r in requests[1:]] == [True, False, False, False]
    schema = pa.ipc.read_schema(pa.py_buffer(requests[1].arrow_schema.serialized_schema))
    assert schema.equals(rows.schema)
    batches = []
    for request in requests[1:]:
        assert not request.HasField("query")
        message = request.entity_batch
        batch = pa.ipc.read_record_batch(pa.py_buffer(message.serialized_record_batch), schema)
        assert batch.num_rows == message.row_count
        batches.append(batch)
    assert [b.num_rows for b in batches] == [300, 300, 300, 100]
    assert pa.Table.from_batches(batches).equals(rows)
    # No entity rows at all: the schema still goes out, alone.
    empty = list(
        historical_client._requests(query, rows.slice(0, 0).to_reader(), 300, threading.Event())
    )
    assert len(empty) == 2
    only = historical_service_pb2.GetHistoricalFeaturesRequest.FromString(empty[1])
    assert only.HasField("arrow_schema") and not only.HasField("entity_batch")
