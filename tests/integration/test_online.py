"""GetOnlineFeatures end to end: real redis-server, real gRPC server, the Python client.

The contract tests take the `online_store` fixture; `test_online_cluster.py` imports
them and overrides the fixture with a real three-node Redis Cluster, so the same suite
runs against both backends.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
import redis
from redis.cluster import RedisCluster

from skewless.client import (
    Client,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from skewless.core.config import RepoConfig
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.online.entity_keys import MAX_ENTITY_ROWS
from skewless.online.layout import redis_key
from skewless.online.plan import PlanCatalog
from skewless.online.response_encoding import encode_response
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import online_service_pb2, registry_pb2, types_pb2
from tests.integration.served import ServerThread

PROJECT = "proj"
VT = types_pb2.ValueType
S = types_pb2.FeatureStatus


# --- fixtures and helpers ----------------------------------------------------------------


@dataclass
class OnlineStore:
    """A Redis deployment the server reads: URL, cluster flag, a sync client to seed it."""

    url: str
    cluster: bool
    client: Any
    nodes: list[Any] = field(default_factory=list)

    def put(
        self,
        view: str,
        key: list[int | str | bytes],
        ts: dt.datetime,
        values: dict[str, types_pb2.Value | None],
    ) -> None:
        micros = int(ts.timestamp() * 1_000_000)
        mapping: dict[bytes, bytes] = {b"_ts": str(micros).encode()}
        for name, value in values.items():
            mapping[name.encode()] = b"" if value is None else value.SerializeToString()
        self.client.hset(redis_key(PROJECT, view, key), mapping=mapping)

    def each_node(self) -> list[redis.Redis]:
        return self.nodes or [self.client]


@pytest.fixture(params=["single", "cluster"])
def online_store(request: pytest.FixtureRequest) -> Iterator[OnlineStore]:
    """The online store every contract test runs against: one Redis, then a Redis Cluster.

    A test that uses `served` (or this fixture) runs on both without being listed
    anywhere; `single_redis_only` restricts one to the single Redis.
    """
    if request.param == "single":
        url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url)
        yield OnlineStore(url=url, cluster=False, client=client)
        client.close()
        return
    cluster = request.getfixturevalue("redis_cluster")
    nodes = [redis.Redis(port=n.port) for n in cluster.nodes]
    for node in nodes:
        node.flushall()
    cluster_client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    yield OnlineStore(url=cluster.url, cluster=True, client=cluster_client, nodes=nodes)
    cluster_client.close()
    for node in nodes:
        node.close()


#: Restricts a test of this module to the single Redis (the contract runs on both).
single_redis_only = pytest.mark.parametrize("online_store", ["single"], indirect=True)


def _entity(name: str, *keys: tuple[str, int]) -> registry_pb2.Entity:
    return registry_pb2.Entity(
        name=name, join_keys=[registry_pb2.JoinKey(name=k, value_type=t) for k, t in keys]
    )


def _view(
    name: str, entities: list[str], features: list[tuple[str, int]], ttl: int = 0, online=True
) -> registry_pb2.FeatureView:
    view = registry_pb2.FeatureView(
        name=name,
        entities=entities,
        source="events",
        online=online,
        offline=True,
        features=[registry_pb2.Feature(name=f, value_type=t) for f, t in features],
    )
    if ttl:
        view.ttl.FromSeconds(ttl)
    return view


def make_registry(*, extra_feature: bool = False) -> registry_pb2.Registry:
    driver_features = [
        ("conv_rate", VT.VALUE_TYPE_FLOAT64),
        ("trips", VT.VALUE_TYPE_INT64),
        ("rating", VT.VALUE_TYPE_FLOAT32),
    ]
    if extra_feature:
        driver_features.append(("acc_rate", VT.VALUE_TYPE_FLOAT64))
    return registry_pb2.Registry(
        project=PROJECT,
        entities=[
            _entity("customer", ("customer_id", VT.VALUE_TYPE_STRING)),
            _entity("driver", ("driver_id", VT.VALUE_TYPE_INT64)),
            _entity("location", ("city", VT.VALUE_TYPE_STRING), ("zone", VT.VALUE_TYPE_INT32)),
        ],
        data_sources=[
            registry_pb2.DataSource(
                name="events", push=registry_pb2.PushSource(), timestamp_field="ts"
            )
        ],
        feature_views=[
            _view("archive", ["driver"], [("x", VT.VALUE_TYPE_INT64)], online=False),
            _view(
                "customer_profile",
                ["customer"],
                [("age", VT.VALUE_TYPE_INT32), ("segments", VT.VALUE_TYPE_STRING_LIST)],
            ),
            _view("driver_stats", ["driver"], driver_features, ttl=3600),
            _view("zone_demand", ["location"], [("demand", VT.VALUE_TYPE_FLOAT64)], ttl=86400),
        ],
        feature_services=[
            registry_pb2.FeatureService(
                name="broken",
                projections=[
                    registry_pb2.FeatureProjection(feature_view="driver_stats", features=["nope"])
                ],
            ),
            registry_pb2.FeatureService(
                name="ranking",
                projections=[
                    registry_pb2.FeatureProjection(
                        feature_view="driver_stats", features=["trips", "conv_rate"]
                    ),
                    registry_pb2.FeatureProjection(feature_view="customer_profile"),
                ],
            ),
        ],
    )


@dataclass
class Served:
    client: Client
    store: OnlineStore
    config: RepoConfig
    server: ServerThread


def _config(tmp_path: Path, url: str, cluster: bool) -> RepoConfig:
    return RepoConfig(
        root=tmp_path,
        project=PROJECT,
        data_dir=tmp_path / "data",
        redis_url=url,
        redis_cluster=cluster,
        server_port=0,
        metrics_port=0,
    )


@pytest.fixture
def served(tmp_path: Path, online_store: OnlineStore) -> Iterator[Served]:
    config = _config(tmp_path, online_store.url, online_store.cluster)
    RegistryStore(config.storage).save(make_registry())
    server = ServerThread(config).start()
    client = Client(f"127.0.0.1:{server.port}", timeout=5.0)
    yield Served(client=client, store=online_store, config=config, server=server)
    client.close()
    server.stop()


NOW = dt.datetime.now(dt.UTC).replace(microsecond=123456)


def f64(x: float) -> types_pb2.Value:
    return types_pb2.Value(double_value=x)


def i64(x: int) -> types_pb2.Value:
    return types_pb2.Value(int64_value=x)


def f32(x: float) -> types_pb2.Value:
    return types_pb2.Value(float_value=x)


def seed_drivers(store: OnlineStore) -> None:
    # 1: all present; 2: rating stored null, trips field absent; 3: nothing stored.
    store.put(
        "driver_stats", [1], NOW, {"conv_rate": f64(0.5), "trips": i64(7), "rating": f32(4.5)}
    )
    store.put("driver_stats", [2], NOW, {"conv_rate": f64(0.25), "rating": None})


# --- the contract suite ------------------------------------------------------------------


def test_statuses_values_event_times_and_order(served: Served) -> None:
    seed_drivers(served.store)
    result = served.client.get_online_features(
        {"driver_id": [3, 2, 1]},
        features=["driver_stats:rating", "driver_stats:trips", "driver_stats:conv_rate"],
    )
    assert result.feature_names == ["rating", "trips", "conv_rate"]
    assert result.to_dict() == {
        "driver_id": [3, 2, 1],
        "rating": [None, None, 4.5],
        "trips": [None, None, 7],
        "conv_rate": [None, 0.25, 0.5],
    }
    assert result.statuses() == {
        "rating": ["NOT_FOUND", "NULL_VALUE", "PRESENT"],
        "trips": ["NOT_FOUND", "NULL_VALUE", "PRESENT"],
        "conv_rate": ["NOT_FOUND", "PRESENT", "PRESENT"],
    }
    assert result.event_times()["conv_rate"] == [None, NOW, NOW]
    vector = result.response.results[0]
    assert vector.statuses[0] == S.FEATURE_STATUS_NOT_FOUND
    assert vector.event_times[0].seconds == 0 and vector.event_times[0].nanos == 0
    assert vector.event_times[2].ToDatetime(tzinfo=dt.UTC) == NOW


def test_feature_service_order_and_full_names(served: Served) -> None:
    seed_drivers(served.store)
    segments = types_pb2.Value(string_list_value=types_pb2.StringList(values=["a", "b"]))
    served.store.put("customer_profile", ["c/1,x"], NOW, {"age": None, "segments": segments})
    result = served.client.get_online_features(
        [{"driver_id": 1, "customer_id": "c/1,x"}, {"driver_id": 9, "customer_id": "zz"}],
        feature_service="ranking",
        full_feature_names=True,
    )
    assert result.feature_names == [
        "driver_stats__trips",
        "driver_stats__conv_rate",
        "customer_profile__age",
        "customer_profile__segments",
    ]
    rows = list(result.rows())
    assert rows[0] == {
        "driver_id": 1,
        "customer_id": "c/1,x",
        "driver_stats__trips": 7,
        "driver_stats__conv_rate": 0.5,
        "customer_profile__age": None,
        "customer_profile__segments": ["a", "b"],
    }
    assert result.statuses()["customer_profile__age"] == ["NULL_VALUE", "NOT_FOUND"]
    short = served.client.get_online_features(
        {"driver_id": [1], "customer_id": ["c/1,x"]}, feature_service="ranking"
    )
    assert short.feature_names == ["trips", "conv_rate", "age", "segments"]


def test_to_arrow_types(served: Served) -> None:
    seed_drivers(served.store)
    table = served.client.get_online_features(
        {"driver_id": [1, 2, 3]}, features=["driver_stats"]
    ).to_arrow()
    assert table.column_names == ["driver_id", "conv_rate", "trips", "rating"]
    assert table.schema.field("trips").type == pa.int64()
    assert table.schema.field("rating").type == pa.float32()
    assert table.column("conv_rate").to_pylist() == [0.5, 0.25, None]


def test_ttl_outside_max_age(served: Served) -> None:
    store = served.store
    now = dt.datetime.now(dt.UTC)
    store.put("driver_stats", [1], now - dt.timedelta(seconds=3590), {"trips": i64(1)})
    store.put("driver_stats", [2], now - dt.timedelta(seconds=3610), {"trips": i64(2)})
    old = now - dt.timedelta(days=3650)
    store.put("customer_profile", ["a"], old, {"age": types_pb2.Value(int32_value=30)})
    result = served.client.get_online_features(
        {"driver_id": [1, 2], "customer_id": ["a", "a"]},
        features=["driver_stats:trips", "customer_profile:age"],
    )
    assert result.statuses() == {
        "trips": ["PRESENT", "OUTSIDE_MAX_AGE"],
        "age": ["PRESENT", "PRESENT"],  # ttl 0: never stale
    }
    assert result.to_dict()["trips"] == [1, None]  # withheld
    stale_time = result.event_times()["trips"][1]
    assert stale_time is not None
    assert abs(stale_time - (now - dt.timedelta(seconds=3610))) < dt.timedelta(milliseconds=1)


def test_composite_keys(served: Served) -> None:
    served.store.put("zone_demand", ["paris", 7], NOW, {"demand": f64(1.5)})
    served.store.put("zone_demand", ["paris", 8], NOW, {"demand": f64(2.5)})
    result = served.client.get_online_features(
        {"zone": [8, 7, 7], "city": ["paris", "paris", "rome"]},
        features=["zone_demand:demand"],
    )
    assert result.to_dict(include_entities=False) == {"demand": [2.5, 1.5, None]}
    assert result.statuses()["demand"] == ["PRESENT", "PRESENT", "NOT_FOUND"]


def test_int32_value_accepted_for_int64_key(served: Served) -> None:
    seed_drivers(served.store)
    result = served.client.get_online_features(
        {"driver_id": [types_pb2.Value(int32_value=1)]}, features=["driver_stats:trips"]
    )
    assert result.to_dict(include_entities=False) == {"trips": [7]}


@pytest.mark.parametrize(
    ("entities", "features", "field", "reason"),
    [
        ({"driver_id": ["1"]}, ["driver_stats:trips"], "entities[driver_id]", "WRONG_KEY_TYPE"),
        (
            {"driver_id": [types_pb2.Value()]},
            ["driver_stats:trips"],
            "entities[driver_id]",
            "WRONG_KEY_TYPE",
        ),
        (
            {"city": ["x"], "zone": [2**40]},
            ["zone_demand:demand"],
            "entities[zone]",
            "WRONG_KEY_TYPE",
        ),
        (
            {"driver_id": [1, 2], "customer_id": ["a"]},
            ["driver_stats:trips", "customer_profile:age"],
            "entities[customer_id]",
            "UNEQUAL_ENTITY_COLUMNS",
        ),
        ({"city": ["x"]}, ["zone_demand:demand"], "entities[zone]", "MISSING_JOIN_KEY"),
        ({}, ["driver_stats:trips"], "entities", "NO_ENTITIES"),
        ({"driver_id": []}, ["driver_stats:trips"], "entities", "NO_ENTITIES"),
        ({"driver_id": [1]}, [], "features", "NO_FEATURES"),
        ({"driver_id": [1]}, ["driver_stats:"], "features", "MALFORMED_FEATURE_REF"),
    ],
)
def test_invalid_arguments(
    served: Served, entities: Any, features: list[str], field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        served.client.get_online_features(entities, features=features)
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == reason, err.message
    assert [v.field for v in err.field_violations] == [field]
    assert err.message


def test_too_many_rows(served: Served) -> None:
    with pytest.raises(ResourceExhaustedError) as info:
        served.client.get_online_features(
            {"driver_id": list(range(MAX_ENTITY_ROWS + 1))}, features=["driver_stats:trips"]
        )
    assert info.value.metadata["limit"] == str(MAX_ENTITY_ROWS)
    assert str(MAX_ENTITY_ROWS) in info.value.message
    # exactly at the limit is served
    result = served.client.get_online_features(
        {"driver_id": list(range(MAX_ENTITY_ROWS))}, features=["driver_stats:trips"]
    )
    assert len(result.features[0].values) == MAX_ENTITY_ROWS


@pytest.mark.parametrize(
    ("kwargs", "reason", "name"),
    [
        ({"feature_service": "nope"}, "FEATURE_SERVICE_NOT_FOUND", "nope"),
        ({"features": ["ghost:trips"]}, "FEATURE_VIEW_NOT_FOUND", "ghost"),
        ({"features": ["driver_stats:ghost"]}, "FEATURE_NOT_FOUND", "ghost"),
        ({"feature_service": "broken"}, "FEATURE_NOT_FOUND", "nope"),
    ],
)
def test_unknown_names(served: Served, kwargs: dict[str, Any], reason: str, name: str) -> None:
    with pytest.raises(NotFoundError) as info:
        served.client.get_online_features({"driver_id": [1]}, **kwargs)
    assert info.value.reason == reason
    assert name in info.value.message
    assert name in info.value.metadata.values()


def test_view_not_online(served: Served) -> None:
    with pytest.raises(FailedPreconditionError) as info:
        served.client.get_online_features({"driver_id": [1]}, features=["archive:x"])
    assert info.value.reason == "FEATURE_VIEW_NOT_ONLINE"


def test_registry_reload_while_serving(served: Served) -> None:
    served.store.put("driver_stats", [1], NOW, {"trips": i64(3), "acc_rate": f64(0.9)})
    with pytest.raises(NotFoundError):
        served.client.get_online_features({"driver_id": [1]}, features=["driver_stats:acc_rate"])
    RegistryStore(served.config.registry_path).save(make_registry(extra_feature=True))
    deadline = time.monotonic() + 10
    while True:
        try:
            result = served.client.get_online_features(
                {"driver_id": [1]}, features=["driver_stats:acc_rate", "driver_stats:trips"]
            )
            break
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert result.to_dict(include_entities=False) == {"acc_rate": [0.9], "trips": [3]}


_HOUSEKEEPING = tuple(
    f"cmdstat_{c}" for c in ("config", "info", "ping", "cluster", "command", "client", "hello")
)


def test_one_pipelined_round_trip_of_hmgets(served: Served) -> None:
    seed_drivers(served.store)
    for node in served.store.each_node():
        node.config_resetstat()
    served.client.get_online_features(
        {"driver_id": [1, 2, 3], "customer_id": ["a", "b", "c"]}, feature_service="ranking"
    )
    calls: dict[str, int] = {}
    for node in served.store.each_node():
        for name, stats in node.info("commandstats").items():
            # ours (config, info), health checks (ping), cluster topology (cluster, command)
            if not name.startswith(_HOUSEKEEPING):
                calls[name] = calls.get(name, 0) + stats["calls"]
    assert calls == {"cmdstat_hmget": 6}  # 3 entities x 2 views, nothing else


# --- single Redis only -------------------------------------------------------------------


def test_encode_response_ttl_boundary() -> None:
    catalog = PlanCatalog(PROJECT)
    catalog.load(make_registry())
    plan = catalog.for_features(["driver_stats:trips"])
    ttl = 3600 * 1_000_000
    now = 1_700_000_000_000_000
    value = i64(5).SerializeToString()
    replies = [[str(now - ttl).encode(), value], [str(now - ttl - 1).encode(), value]]
    response = online_service_pb2.GetOnlineFeaturesResponse.FromString(
        encode_response(plan, 2, replies, now_micros=now)
    )
    vector = response.results[0]
    assert list(vector.statuses) == [S.FEATURE_STATUS_PRESENT, S.FEATURE_STATUS_OUTSIDE_MAX_AGE]
    assert vector.values[0].int64_value == 5
    assert vector.values[1].WhichOneof("kind") is None
    assert vector.event_times[1].ToMicroseconds() == now - ttl - 1


def test_redis_down_unavailable_within_deadline_then_recovers(
    tmp_path: Path, fresh_redis: EmbeddedRedis
) -> None:
    store = OnlineStore(
        url=fresh_redis.url, cluster=False, client=redis.Redis.from_url(fresh_redis.url)
    )
    config = _config(tmp_path, fresh_redis.url, False)
    RegistryStore(config.storage).save(make_registry())
    server = ServerThread(config).start()
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            seed_drivers(store)
            ask = {"driver_id": [1]}
            assert client.get_online_features(ask, features=["driver_stats:trips"]).to_dict()[
                "trips"
            ] == [7]
            fresh_redis.stop()
            started = time.monotonic()
            with pytest.raises(UnavailableError) as info:
                client.get_online_features(ask, features=["driver_stats:trips"], timeout=1.0)
            assert time.monotonic() - started < 1.0
            assert info.value.retry_delay is not None
            assert info.value.reason == "ONLINE_STORE_UNAVAILABLE"
            fresh_redis.start()
            store.client = redis.Redis.from_url(fresh_redis.url)
            seed_drivers(store)  # not persisted: write again
            deadline = time.monotonic() + 10
            while True:
                try:
                    result = client.get_online_features(ask, features=["driver_stats:trips"])
                    break
                except UnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert result.to_dict()["trips"] == [7]
    finally:
        server.stop()


def test_hung_redis_answers_unavailable_before_deadline(
    tmp_path: Path, fresh_redis: EmbeddedRedis
) -> None:
    config = _config(tmp_path, fresh_redis.url, False)
    RegistryStore(config.storage).save(make_registry())
    server = ServerThread(config).start()
    assert fresh_redis.process is not None
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            client.get_online_features({"driver_id": [1]}, features=["driver_stats:trips"])
            fresh_redis.process.send_signal(19)  # SIGSTOP: connected but silent
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                client.get_online_features(
                    {"driver_id": [1]}, features=["driver_stats:trips"], timeout=1.0
                )
            assert time.monotonic() - started < 1.0
            fresh_redis.process.send_signal(18)  # SIGCONT
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.get_online_features({"driver_id": [1]}, features=["driver_stats:trips"])
                    break
                except UnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
    finally:
        if fresh_redis.process is not None:
            fresh_redis.process.send_signal(18)
        server.stop()


@single_redis_only
def test_push_features_then_read_them_online(served: Served) -> None:
    table = pa.table(
        {
            "driver_id": pa.array([5], pa.int64()),
            "ts": pa.array([NOW], pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([0.75], pa.float64()),
            "trips": pa.array([11], pa.int64()),
            "rating": pa.array([None], pa.float32()),
        }
    )
    response = served.client.push_features(
        table,
        feature_view="driver_stats",
        destination=online_service_pb2.PUSH_DESTINATION_ONLINE,
    )
    assert response.row_count == 1
    result = served.client.get_online_features({"driver_id": [5]}, features=["driver_stats"])
    assert result.to_dict(include_entities=False) == {
        "conv_rate": [0.75],
        "trips": [11],
        "rating": [None],
    }
    assert result.statuses()["rating"] == ["NULL_VALUE"]
    assert result.event_times()["trips"] == [NOW]


@single_redis_only
def test_metrics_exposed(served: Served) -> None:
    from skewless.server.metrics import start_metrics_server

    seed_drivers(served.store)
    served.client.get_online_features(
        {"driver_id": [1], "customer_id": ["a"]}, feature_service="ranking"
    )
    with pytest.raises(NotFoundError):
        served.client.get_online_features({"driver_id": [1]}, feature_service="nope")
    port = start_metrics_server(0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert (
        'skewless_requests_total{code="OK",feature_service="ranking",rpc="GetOnlineFeatures"}'
        in body
    )
    assert 'skewless_errors_total{code="NOT_FOUND",rpc="GetOnlineFeatures"}' in body
    assert "skewless_redis_roundtrip_seconds_bucket" in body
    assert 'skewless_request_latency_seconds_count{feature_service="ranking"' in body


_WORKERS_SCRIPT = """
import json, sys
from pathlib import Path
from skewless.core.config import RepoConfig
from skewless.server.workers import serve_workers
a = json.loads(sys.argv[1])
config = RepoConfig(root=Path(a["root"]), project=a["project"], data_dir=Path(a["data"]),
                    redis_url=a["url"], server_port=a["port"], metrics_port=a["metrics"])
sys.exit(serve_workers(config, 2))
"""


def _two_free_ports() -> int:
    """Returns a port p such that p and p + 1 are both free (worker i uses metrics + i)."""
    import socket

    for _ in range(50):
        base = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two consecutive free ports")


@single_redis_only
def test_two_workers_share_one_port(tmp_path: Path, online_store: OnlineStore) -> None:
    config = _config(tmp_path, online_store.url, False)
    RegistryStore(config.storage).save(make_registry())
    port, metrics = free_port(), _two_free_ports()
    args = {
        "root": str(tmp_path),
        "project": PROJECT,
        "data": str(config.data_dir),
        "url": online_store.url,
        "port": port,
        "metrics": metrics,
    }
    proc = subprocess.Popen([sys.executable, "-c", _WORKERS_SCRIPT, json.dumps(args)])

    def served_by(i: int) -> float:
        try:
            url = f"http://127.0.0.1:{metrics + i}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
        except OSError:
            return 0.0
        lines = [
            ln
            for ln in body.splitlines()
            if ln.startswith("skewless_requests_total{") and 'code="OK"' in ln
        ]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

    try:
        seed_drivers(online_store)
        deadline = time.monotonic() + 30
        answered = 0
        while not (served_by(0) > 0 and served_by(1) > 0):
            assert time.monotonic() < deadline, (served_by(0), served_by(1))
            # a new connection each time, so the kernel spreads them over the workers
            with Client(f"127.0.0.1:{port}", timeout=5.0) as client:
                try:
                    result = client.get_online_features(
                        {"driver_id": [1]}, features=["driver_stats:trips"]
                    )
                except (UnavailableError, DeadlineExceededError):  # starting, or a busy machine
                    time.sleep(0.2)
                    continue
                assert result.to_dict()["trips"] == [7]
                answered += 1
        # a call the client gave up on may still have been served
        assert served_by(0) + served_by(1) >= answered > 0
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


@single_redis_only
def test_client_registry_helpers(served: Served) -> None:
    client = served.client
    assert client.get_registry_info().project == PROJECT
    assert [v.name for v in client.list_feature_views(page_size=2)] == [
        "archive",
        "customer_profile",
        "driver_stats",
        "zone_demand",
    ]
    assert client.get_feature_view("driver_stats").ttl.seconds == 3600
    assert [s.name for s in client.list_feature_services()] == ["broken", "ranking"]
    assert client.get_feature_service("ranking").projections[0].feature_view == "driver_stats"
    assert {e.name for e in client.list_entities()} == {"customer", "driver", "location"}
    assert client.get_entity("driver").join_keys[0].name == "driver_id"
    assert [d.name for d in client.list_data_sources()] == ["events"]
    assert client.get_data_source("events").timestamp_field == "ts"
    assert any(m.reference == "driver_stats:conv_rate" for m in client.search_features("conv"))
    with pytest.raises(NotFoundError) as info:
        client.get_feature_view("ghost")
    assert info.value.metadata


@single_redis_only
def test_client_metadata_and_channel_reuse(served: Served) -> None:
    seed_drivers(served.store)
    with Client(
        f"127.0.0.1:{served.server.port}", metadata=[("x-team", "fraud")], timeout=2.0
    ) as client:
        for _ in range(3):
            client.get_online_features({"driver_id": [1]}, features=["driver_stats:trips"])
        channel = client.channel
        client.get_registry_info()
        assert client.channel is channel
