"""The online contract suite against a real three-node Redis Cluster.

Three `redis-server --cluster-enabled yes` processes are started and joined with
`redis-cli --cluster create`; every contract test of `test_online.py` is collected here
again with the `online_store` fixture pointing at the cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.online.layout import redis_key
from tests.integration import test_online as contract
from tests.integration.test_online import (  # noqa: F401 - re-collected against the cluster
    NOW,
    PROJECT,
    OnlineStore,
    Served,
    i64,
    seed_drivers,
    test_composite_keys,
    test_feature_service_order_and_full_names,
    test_int32_value_accepted_for_int64_key,
    test_invalid_arguments,
    test_one_pipelined_round_trip_of_hmgets,
    test_registry_reload_while_serving,
    test_statuses_values_event_times_and_order,
    test_to_arrow_types,
    test_too_many_rows,
    test_ttl_outside_max_age,
    test_unknown_names,
    test_view_not_online,
)

served = contract.served
pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")


def _low_free_port() -> int:
    """A free port Redis Cluster accepts (it refuses ports above 55535)."""
    for _ in range(200):
        port = free_port()
        if port <= 55535:
            return port
    raise RuntimeError("no free port at or below 55535")


@pytest.fixture(scope="module")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[EmbeddedRedis]]:
    """Three real cluster-enabled redis-servers joined into one cluster (no replicas)."""
    root = tmp_path_factory.mktemp("cluster")
    nodes: list[EmbeddedRedis] = []
    try:
        for i in range(3):
            nodes.append(
                EmbeddedRedis(
                    root / f"node{i}",
                    port=_low_free_port(),
                    persist=False,
                    extra_args=(
                        "--cluster-port",
                        str(free_port()),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(root / f"node{i}" / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ),
                ).start()
            )
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in nodes:
            client = redis.Redis(port=node.port)
            while client.cluster("info")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the cluster did not become ok"
                time.sleep(0.1)
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def online_store(redis_cluster: list[EmbeddedRedis]) -> Iterator[OnlineStore]:
    nodes = [redis.Redis(port=n.port) for n in redis_cluster]
    for node in nodes:
        node.flushall()
    client = RedisCluster(host="127.0.0.1", port=redis_cluster[0].port)
    url = f"redis://127.0.0.1:{redis_cluster[0].port}"
    yield OnlineStore(url=url, cluster=True, client=client, nodes=nodes)
    client.close()
    for node in nodes:
        node.close()


def test_one_entity_key_on_one_node(served: Served) -> None:
    """Every view of one entity key hashes to the same slot (hash tag on the entity key)."""
    client = served.store.client
    slots = {client.keyslot(redis_key(PROJECT, v, [42])) for v in ("driver_stats", "archive")}
    assert len(slots) == 1


def test_many_entities_span_every_node(served: Served) -> None:
    for driver in range(60):
        served.store.put("driver_stats", [driver], NOW, {"trips": i64(driver)})
    nodes_with_keys = [n for n in served.store.nodes if n.dbsize() > 0]
    assert len(nodes_with_keys) == 3
    result = served.client.get_online_features(
        {"driver_id": list(range(61))}, features=["driver_stats:trips"]
    )
    assert result.to_dict()["trips"] == [*range(60), None]
    assert result.statuses()["trips"][-1] == "NOT_FOUND"
