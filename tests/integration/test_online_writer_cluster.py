"""OnlineWriter's pre-packed Redis Cluster path against a single Redis, on real servers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import redis
from redis.cluster import RedisCluster

from skewless.online.writer import OnlineRows, OnlineWriter, prepare_rows
from skewless.registry.feature_refs import FeatureSpec
from skewless.v1 import types_pb2
from tests.helpers.redis_cluster import RedisClusterNodes

VT = types_pb2.ValueType
T0 = datetime(2024, 1, 1, tzinfo=UTC)
FEATURES = [FeatureSpec("x", VT.VALUE_TYPE_FLOAT64), FeatureSpec("s", VT.VALUE_TYPE_STRING)]


@pytest.fixture
def cluster(redis_cluster: RedisClusterNodes) -> RedisClusterNodes:
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        client.flushall()
        client.close()
    return redis_cluster


def batch(rng: random.Random, n: int) -> OnlineRows:
    """n rows over 3,000 keys, with repeated keys and ties of event and created time."""
    created = [T0 + timedelta(seconds=rng.randint(0, 2)) if rng.random() < 0.7 else None]
    table = pa.table(
        {
            "id": pa.array([rng.randint(0, 3_000) for _ in range(n)], pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(seconds=rng.randint(0, 3)) for _ in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "created_timestamp": pa.array(created * n, pa.timestamp("us", tz="UTC")),
            "x": pa.array([rng.random() for _ in range(n)], pa.float64()),
            "s": pa.array([f"v{rng.randint(0, 9)}" for _ in range(n)], pa.string()),
        }
    )
    return prepare_rows("w", "v", table, join_keys=["id"], features=FEATURES)


def stored(client: redis.Redis | RedisCluster, keys: set[bytes]) -> dict[bytes, dict]:
    return {k: client.hgetall(k) for k in sorted(keys)}


def test_cluster_fast_path_stores_what_a_single_redis_stores(
    cluster: RedisClusterNodes, redis_url: str
) -> None:
    rng = random.Random(7)
    on_cluster = OnlineWriter.from_url(cluster.url, cluster=True)
    single = OnlineWriter.from_url(redis_url)
    keys: set[bytes] = set()
    try:
        for n in (1, 5_000, 777, 5_000):
            rows = batch(rng, n)
            keys.update(rows.keys.to_pylist())
            expire = timedelta(days=365 * 100)
            fast, left = on_cluster._write_cluster_packed(rows, expire)
            assert left is None  # the fast path wrote every row (no fallback)
            assert fast == single.write(rows, expire_after=expire)
        cluster_client = RedisCluster.from_url(cluster.url)
        single_client = redis.Redis.from_url(redis_url)
        assert stored(cluster_client, keys) == stored(single_client, keys)
        assert len(keys) > 2_000
        cluster_client.close()
        single_client.close()
    finally:
        on_cluster.close()
        single.close()


def test_cluster_fast_path_falls_back_when_a_node_lost_the_script(
    cluster: RedisClusterNodes, redis_url: str
) -> None:
    rng = random.Random(11)
    on_cluster = OnlineWriter.from_url(cluster.url, cluster=True)
    single = OnlineWriter.from_url(redis_url)
    try:
        first = batch(rng, 2_000)
        assert on_cluster.write(first) == single.write(first)
        node = cluster.nodes[1]
        flushed = redis.Redis(port=node.port)
        flushed.script_flush()  # that primary answers NOSCRIPT: its rows go the general way
        flushed.close()
        second = batch(rng, 2_000)
        assert on_cluster.write(second) == single.write(second)  # each key counted once
        keys = set(first.keys.to_pylist()) | set(second.keys.to_pylist())
        cluster_client = RedisCluster.from_url(cluster.url)
        single_client = redis.Redis.from_url(redis_url)
        assert stored(cluster_client, keys) == stored(single_client, keys)
        cluster_client.close()
        single_client.close()
        third = batch(rng, 500)  # the script is loaded again everywhere: the fast path runs
        assert on_cluster._write_cluster_packed(third, None) == (single.write(third), None)
    finally:
        on_cluster.close()
        single.close()
