"""What only a Redis Cluster shows: one entity's views on one node, many entities on all.

The contract suite itself (`test_online.py`) runs on the cluster too: its `online_store`
fixture is parametrized over a single Redis and this cluster.
"""

from __future__ import annotations

import pytest

from skewless.online.layout import redis_key
from tests.integration.test_online import NOW, PROJECT, Served, i64, online_store, served

__all__ = ["online_store", "served"]  # the contract's fixtures, used here on the cluster

pytestmark = pytest.mark.parametrize("online_store", ["cluster"], indirect=True)


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
