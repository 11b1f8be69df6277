"""Logged values of an earlier generation of a view are never read back as the new type."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from skewless.core.config import RepoConfig
from skewless.offline.feature_log import log_schema, read_log, write_log_file
from skewless.registry.feature_refs import resolve_feature_service
from skewless.v1 import registry_pb2, types_pb2

VT = types_pb2.ValueType
T = datetime(2026, 1, 5, 12, tzinfo=UTC)


def _registry(trips_type: int, generation: int) -> registry_pb2.Registry:
    registry = registry_pb2.Registry(project="p", version=1 + generation)
    registry.entities.add(
        name="driver",
        join_keys=[registry_pb2.JoinKey(name="driver_id", value_type=VT.VALUE_TYPE_INT64)],
    )
    registry.data_sources.add(name="src", timestamp_field="ts").file.path = "d.parquet"
    for name, gen in (("stats", generation), ("other", 0)):
        view = registry.feature_views.add(
            name=name, entities=["driver"], source="src", online=True, offline=True
        )
        view.generation = gen
        view.features.add(
            name="trips" if name == "stats" else "rate",
            value_type=trips_type if name == "stats" else VT.VALUE_TYPE_FLOAT64,
        )
    service = registry.feature_services.add(name="model")
    service.projections.add(feature_view="stats")
    service.projections.add(feature_view="other")
    return registry


def _rows(registry: registry_pb2.Registry, trips: list[object], request_id: str) -> pa.Table:
    schema = log_schema(resolve_feature_service(registry, "model"))
    n = len(trips)
    values = {
        "request_id": [request_id] * n,
        "request_time": [T] * n,
        "registry_version": [registry.version] * n,
        "driver_id": list(range(n)),
        "stats__trips": trips,
        "stats__trips__status": ["PRESENT"] * n,
        "stats__trips__event_time": [T] * n,
        "other__rate": [0.5] * n,
        "other__rate__status": ["PRESENT"] * n,
        "other__rate__event_time": [T] * n,
    }
    return pa.table(values, schema=schema)


def test_served_columns_of_an_earlier_generation_read_as_null(tmp_path: Path) -> None:
    config = RepoConfig(root=tmp_path, project="p", data_dir=tmp_path / ".skewless")
    before, after = _registry(VT.VALUE_TYPE_INT64, 0), _registry(VT.VALUE_TYPE_STRING, 1)
    write_log_file(config, "model", _rows(before, [7, 8], "old"))
    write_log_file(config, "model", _rows(after, ["x", "y"], "new"))

    read = read_log(config, "model", resolve_feature_service(after, "model"))
    rows = sorted(read.to_pylist(), key=lambda r: (r["request_id"], r["driver_id"]))
    assert [(r["request_id"], r["stats__trips"], r["stats__trips__status"]) for r in rows] == [
        ("new", "x", "PRESENT"),
        ("new", "y", "PRESENT"),
        ("old", None, None),  # int64 bytes of generation 0, never read as strings
        ("old", None, None),
    ]
    assert [r["other__rate"] for r in rows] == [0.5] * 4  # the unchanged view reads as before
    assert read.schema.field("stats__trips").type == pa.string()

    # Read with the plan they were written under, the old rows keep their values.
    old = read_log(config, "model", resolve_feature_service(before, "model"))
    assert sorted(v for v in old.column("stats__trips").to_pylist() if v is not None) == [7, 8]
