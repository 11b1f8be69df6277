"""Reproducible training sets: every result names the offline versions it read; pin them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from skewless.client import Client, FailedPreconditionError, InvalidArgumentError, NotFoundError
from skewless.client.historical import offline_versions
from skewless.core.config import RepoConfig
from skewless.materialization.pipeline import materialize
from skewless.offline.maintenance import compact, vacuum
from skewless.offline.offline_store import ORIGIN_PUSH, HistoryWriter, commit_append
from skewless.registry.feature_refs import resolve_view
from skewless.registry.registry_store import RegistryStore
from tests.integration.matfixtures import T0, driver_rows, make_config, make_registry, write_source
from tests.integration.served import ServerThread

DAY = timedelta(days=1)
FEATURES = ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:label"]


@dataclass
class Store:
    config: RepoConfig
    client: Client


@pytest.fixture
def store(tmp_path: Path, redis_url: str) -> Iterator[Store]:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    RegistryStore(config.storage).save(make_registry())
    server = ServerThread(config, run_schedules=False).start()
    client = Client(f"127.0.0.1:{server.port}", timeout=60.0)
    try:
        yield Store(config=config, client=client)
    finally:
        client.close()
        server.stop()


def labels() -> pa.Table:
    times = [T0 + timedelta(minutes=37 * i) for i in range(80)]
    return pa.table(
        {
            "driver_id": pa.array([i % 23 for i in range(80)], pa.int64()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )


def push(config: RepoConfig, drivers: list[int], at: datetime, rate: float) -> None:
    plan = resolve_view(make_registry(), "driver_stats")
    table = pa.table(
        {
            "driver_id": pa.array(drivers, pa.int64()),
            "event_timestamp": pa.array([at] * len(drivers), pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array([at] * len(drivers), pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([rate] * len(drivers)),
            "trips": pa.array([7] * len(drivers), pa.int64()),
            "label": pa.array(["pushed"] * len(drivers)),
        }
    ).cast(plan.history_schema)
    writer = HistoryWriter(config, "driver_stats", plan.history_schema, origin=ORIGIN_PUSH)
    writer.write(table)
    commit_append(config, "driver_stats", writer.close())


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_pinned_versions_and_as_of_replay_byte_identical_results(store: Store) -> None:
    config, client = store.config, store.client
    materialize(config, make_registry(), T0, T0 + 2 * DAY)
    push(config, [1, 2, 3], T0 + timedelta(hours=5, minutes=30), 0.5)
    first = client.get_historical_features(labels(), features=FEATURES)
    versions = offline_versions(first)
    assert list(versions) == ["driver_stats"] and versions["driver_stats"] >= 1
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    # The world moves on: new source values re-materialized over the window, more pushes.
    changed = driver_rows()
    changed = changed.set_column(
        changed.schema.get_field_index("conv_rate"),
        "conv_rate",
        pa.compute.multiply(changed["conv_rate"], 10.0),
    )
    write_source(config, changed)
    materialize(config, make_registry(), T0, T0 + 2 * DAY)
    push(config, list(range(22, -1, -1)), T0 + timedelta(hours=9), 99.0)
    push(config, [5, 4, 3], T0 + timedelta(hours=8), 42.0)  # two pushed files in a row
    latest = client.get_historical_features(labels(), features=FEATURES)
    assert offline_versions(latest)["driver_stats"] == versions["driver_stats"] + 3
    assert not latest.equals(first)
    replay = client.get_historical_features(labels(), features=FEATURES, offline_versions=versions)
    assert ipc_bytes(replay) == ipc_bytes(first)
    assert offline_versions(replay) == versions
    as_of = client.get_historical_features(labels(), features=FEATURES, offline_as_of=between)
    assert offline_versions(as_of) == versions
    assert ipc_bytes(as_of) == ipc_bytes(first)
    # Compaction is a new version with the same answers; the pinned one still replays.
    assert compact(config, "driver_stats", ["driver_id"]).files_removed == 2
    compacted = client.get_historical_features(labels(), features=FEATURES)
    assert offline_versions(compacted)["driver_stats"] == versions["driver_stats"] + 4
    assert ipc_bytes(compacted.replace_schema_metadata()) == ipc_bytes(
        latest.replace_schema_metadata()
    )
    again = client.get_historical_features(labels(), features=FEATURES, offline_versions=versions)
    assert ipc_bytes(again) == ipc_bytes(first)
    # Vacuum deletes what only old versions referenced: pinning one is then refused.
    assert vacuum(config, "driver_stats", timedelta(0)).files_removed >= 3
    with pytest.raises(FailedPreconditionError) as gone:
        client.get_historical_features(labels(), features=FEATURES, offline_versions=versions)
    assert gone.value.reason == "OFFLINE_VERSION_VACUUMED"
    assert "vacuum" in str(gone.value)
    current = client.get_historical_features(labels(), features=FEATURES)
    assert ipc_bytes(current.replace_schema_metadata()) == ipc_bytes(
        latest.replace_schema_metadata()
    )


def test_bad_pins_are_clear_errors(store: Store) -> None:
    config, client = store.config, store.client
    materialize(config, make_registry(), T0, T0 + DAY)
    with pytest.raises(NotFoundError) as missing:
        client.get_historical_features(
            labels(), features=FEATURES, offline_versions={"driver_stats": 999}
        )
    assert missing.value.reason == "OFFLINE_VERSION_NOT_FOUND"
    with pytest.raises(InvalidArgumentError) as other:
        client.get_historical_features(
            labels(), features=FEATURES, offline_versions={"driver_live": 0}
        )
    assert other.value.reason == "BAD_OFFLINE_VERSION"
    with pytest.raises(FailedPreconditionError) as before:  # the table did not exist yet
        client.get_historical_features(
            labels(), features=FEATURES, offline_as_of=datetime(2001, 1, 1, tzinfo=UTC)
        )
    assert before.value.reason == "NOT_MATERIALIZED"
