"""`skewless search` and `RegistryService.SearchFeatures` answer alike: one search."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from skewless.cli import main
from skewless.client import Client
from skewless.core.config import load_repo_config
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import registry_pb2, types_pb2

from .served import ServerThread, write_repo


def _registry() -> registry_pb2.Registry:
    reg = registry_pb2.Registry(project="search")
    reg.entities.add(
        name="driver",
        join_keys=[registry_pb2.JoinKey(name="driver_id", value_type=types_pb2.VALUE_TYPE_INT64)],
    )
    view = reg.feature_views.add(
        name="driver_stats",
        entities=["driver"],
        source="events",
        description="Hourly driver statistics",
        owner="ml-platform",
        tags={"team": "growth"},
    )
    view.features.add(
        name="conv_rate", value_type=types_pb2.VALUE_TYPE_FLOAT32, tags={"team": "pricing"}
    )
    view.features.add(
        name="trips", value_type=types_pb2.VALUE_TYPE_INT64, description="completed trips"
    )
    return reg


@pytest.mark.parametrize(
    "words",
    [
        ["growth"],  # a view tag whose key (`team`) a feature tag also uses
        ["pricing"],
        ["team", "growth"],
        ["TRIPS"],
        ["hourly", "conv"],
        ["nothing-matches"],
    ],
)
def test_cli_and_rpc_find_the_same_features(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str], words: list[str]
) -> None:
    repo = write_repo(tmp_path / "repo", project="search", redis_url=redis_url)
    config = load_repo_config(repo)
    RegistryStore(config.storage).save(_registry())
    server = ServerThread(dataclasses.replace(config, server_port=0)).start()
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            over_rpc = [m.reference for m in client.search_features(" ".join(words))]
    finally:
        server.stop()
    code = main(["search", *words, "--repo", str(repo)])
    on_cli = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert on_cli == over_rpc
    assert code == (0 if over_rpc else 1)
    if words == ["growth"]:
        assert over_rpc == ["driver_stats:conv_rate", "driver_stats:trips"]


def test_search_pages_and_follows_a_new_registry_version(tmp_path: Path, redis_url: str) -> None:
    repo = write_repo(tmp_path / "repo", project="search", redis_url=redis_url)
    config = load_repo_config(repo)
    store = RegistryStore(config.registry_path)
    store.save(_registry())
    server = ServerThread(dataclasses.replace(config, server_port=0)).start()
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            # One match a page: every page is built from the same ordered matches.
            paged = [m.reference for m in client.search_features("driver", page_size=1)]
            assert paged == ["driver_stats:conv_rate", "driver_stats:trips"]
            assert [m.owner for m in client.search_features("trips")] == ["ml-platform"]
            newer = _registry()
            newer.feature_views[0].features.add(
                name="acceptance", value_type=types_pb2.VALUE_TYPE_FLOAT64
            )
            assert store.save(newer).changed
            deadline = time.monotonic() + 15
            found: list[str] = []
            while time.monotonic() < deadline:
                found = [m.reference for m in client.search_features("driver", page_size=1)]
                if len(found) == 3:
                    break
                time.sleep(0.2)
            assert found == [
                "driver_stats:acceptance",
                "driver_stats:conv_rate",
                "driver_stats:trips",
            ]
    finally:
        server.stop()
