"""A small feature repository for materialization and push tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import duration_pb2

from skewless.core.config import RepoConfig
from skewless.v1 import registry_pb2, types_pb2
from tests.helpers.engines import SPARK_TEST_SETTINGS

VT = types_pb2.ValueType
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def make_config(
    root: Path, redis_url: str, project: str = "mat", engine: str = "duckdb"
) -> RepoConfig:
    """A repository; `engine: spark` runs views on the test run's local Spark session."""
    root.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        root=root,
        project=project,
        data_dir=root / ".skewless",
        redis_url=redis_url,
        server_port=0,
        offline_engine=engine,
        spark=SPARK_TEST_SETTINGS if engine == "spark" else None,
    )


def driver_rows(n_drivers: int = 20, n_times: int = 48, step: timedelta = timedelta(hours=1)):
    """Rows for `driver_stats`: every driver at every time step from T0."""
    ids, ts, created, rate, trips, name = [], [], [], [], [], []
    for t in range(n_times):
        for d in range(n_drivers):
            ids.append(d)
            ts.append(T0 + t * step)
            created.append(T0 + t * step + timedelta(seconds=1))
            rate.append(float(d * 1000 + t))
            trips.append(d + t)
            name.append(f"driver-{d}-{t}")
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array(ts, pa.timestamp("us")),  # naive: UTC
            "created": pa.array(created, pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array(rate, pa.float64()),
            "trips": pa.array(trips, pa.int32()),
            "label": pa.array(name, pa.string()),
        }
    )


def write_source(config: RepoConfig, table: pa.Table, name: str = "driver.parquet") -> Path:
    path = config.root / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def make_registry(
    *,
    sql: str = "",
    feature_types: dict[str, int] | None = None,
    schedule: timedelta | None = None,
    ttl: timedelta | None = None,
    push: bool = False,
) -> registry_pb2.Registry:
    types = feature_types or {
        "conv_rate": VT.VALUE_TYPE_FLOAT64,
        "trips": VT.VALUE_TYPE_INT64,
        "label": VT.VALUE_TYPE_STRING,
    }
    reg = registry_pb2.Registry(project="mat", version=1)
    reg.entities.add(
        name="driver",
        join_keys=[registry_pb2.JoinKey(name="driver_id", value_type=VT.VALUE_TYPE_INT64)],
    )
    src = reg.data_sources.add(
        name="driver_src", timestamp_field="ts", created_timestamp_field="created"
    )
    src.file.path = "data/driver.parquet"
    psrc = reg.data_sources.add(
        name="driver_push", timestamp_field="ts", created_timestamp_field="created"
    )
    psrc.push.SetInParent()
    view = reg.feature_views.add(
        name="driver_stats",
        entities=["driver"],
        source="driver_src",
        sql=sql,
        online=True,
        offline=True,
    )
    for fname, vt in types.items():
        view.features.add(name=fname, value_type=vt)
    if schedule is not None:
        view.schedule.CopyFrom(duration_pb2.Duration(seconds=int(schedule.total_seconds())))
    if ttl is not None:
        view.ttl.CopyFrom(duration_pb2.Duration(seconds=int(ttl.total_seconds())))
    if push:
        pview = reg.feature_views.add(
            name="driver_live", entities=["driver"], source="driver_push", online=True, offline=True
        )
        for fname, vt in types.items():
            pview.features.add(name=fname, value_type=vt)
    return reg
