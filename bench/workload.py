"""The benchmarks' workloads: their data and their registries, made the same way every run.

Every generator is deterministic (fixed formulas, fixed seeds), so that figures from
different runs, machines and branches are measured on the same values:

* history tables (`historical_views`, `materialize_views`): every entity at every one of
  `n_times` event times `STEP` apart from `T0`, features computed from the entity id
  and the time index;
* entity rows for historical retrieval (`historical_entity_rows`);
* the online store's contents written into Redis (`load_online`) and the online requests
  (`online_request`);
* the registry each benchmark serves (`historical_registry`, `materialize_registry`,
  `online_registry`), built with the definitions API;
* Feast's copy of each workload: the feature repositories under `bench/feast/`
  (`copy_feast_repo`).

Only pyarrow is imported with this module; skewless and redis-py are imported by the
functions that need them, so that a baseline process that imports this module for its
data (the bare DuckDB query, the raw HSET ceiling) runs no skewless code.
"""

from __future__ import annotations

import json
import random
import shutil
import string
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from skewless.registry import Entity, Feature
    from skewless.v1 import registry_pb2

PROJECT = "bench"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(hours=6)
UTC_US = pa.timestamp("us", tz="UTC")
FEAST_REPOS = Path(__file__).resolve().parent / "feast"

# Entity counts at scale 1, and event times per entity, of the history workloads.
DRIVERS, DRIVER_TIMES = 100_000, 30
CUSTOMERS, CUSTOMER_TIMES = 50_000, 10


def _entity(name: str) -> Entity:
    """The entity `name`, keyed by one INT64 `<name>_id`."""
    from skewless.registry import Entity

    return Entity(name=name, join_keys=(f"{name}_id",), value_type="INT64")


# --- histories (historical.py, materialize.py) ---------------------------------------------


def _float_feature(ids: pa.Array, t: int, a: int, b: int) -> pa.Array:
    mixed = pc.add(pc.multiply(ids, a), t * b)
    return pc.divide(pc.cast(pc.bit_wise_and(mixed, 0xFFFF), pa.float64()), 655.36)


def _numeric_feature(ids: pa.Array, t: int, i: int) -> pa.Array:
    """Feature `f{i}`: an INT64 in [0, 4096) when i % 3 == 2, else a FLOAT64 in [0, 100)."""
    if i % 3 == 2:
        return pc.bit_wise_and(pc.add(pc.multiply(ids, i + 3), t), 4095)
    return _float_feature(ids, t, 2 * i + 13, i + 5)


def _numeric_features(n: int) -> tuple[Feature, ...]:
    from skewless.registry import Feature

    return tuple(Feature(f"f{i}", "INT64" if i % 3 == 2 else "FLOAT64") for i in range(n))


def numeric_history(
    n_entities: int,
    n_times: int,
    key: str,
    n_features: int,
    *,
    event_field: str = "event_timestamp",
    created_field: str = "created_timestamp",
) -> pa.Table:
    """Every entity at every time: key, event time, created time (= event time), `f0..`."""
    ids = pa.array(range(n_entities), pa.int64())
    chunks = []
    for t in range(n_times):
        ts = pa.array([T0 + t * STEP] * n_entities, UTC_US)
        cols: dict[str, pa.Array] = {key: ids, event_field: ts, created_field: ts}
        for i in range(n_features):
            cols[f"f{i}"] = _numeric_feature(ids, t, i)
        chunks.append(pa.table(cols))
    return pa.concat_tables(chunks)


def customer_profile_history(
    n_entities: int, n_times: int, *, event_field: str, created_field: str
) -> pa.Table:
    """Customers with a FLOAT64, an INT64, a STRING, a BOOL and a FLOAT64 feature."""
    ids = pa.array(range(n_entities), pa.int64())
    chunks = []
    for t in range(n_times):
        ts = pa.array([T0 + t * STEP] * n_entities, UTC_US)
        chunks.append(
            pa.table(
                {
                    "customer_id": ids,
                    event_field: ts,
                    created_field: ts,
                    "lifetime_value": _float_feature(ids, t, 31, 7),
                    "orders": pc.bit_wise_and(pc.add(ids, t), 255),
                    "segment": pc.cast(pc.bit_wise_and(ids, 7), pa.string()),
                    "is_active": pc.equal(pc.bit_wise_and(pc.add(ids, t), 1), 0),
                    "churn_score": _float_feature(ids, t, 17, 3),
                }
            )
        )
    return pa.concat_tables(chunks)


# --- historical.py -------------------------------------------------------------------------

DRIVER_TTL = timedelta(days=2)
CUSTOMER_TTL = timedelta(days=7)
#: The retrieved columns (`full_feature_names`), in order.
HISTORICAL_FEATURES = [f"driver_stats__f{i}" for i in range(10)] + [
    f"customer_stats__f{i}" for i in range(5)
]


def historical_views(scale: float) -> dict[str, pa.Table]:
    """The offline store's history per view (its column names: event/created_timestamp)."""
    return {
        "driver_stats": numeric_history(int(DRIVERS * scale), DRIVER_TIMES, "driver_id", 10),
        "customer_stats": numeric_history(int(CUSTOMERS * scale), CUSTOMER_TIMES, "customer_id", 5),
    }


def historical_entity_rows(scale: float, rows: int) -> pa.Table:
    """Entity rows with both keys (10% unknown), a label time and a label.

    The label times span the driver history plus a day on each side.
    """
    drivers, customers = int(DRIVERS * scale), int(CUSTOMERS * scale)

    def uniform(seed: int, high: int) -> pa.Array:
        return pc.cast(pc.floor(pc.multiply(pc.random(rows, initializer=seed), high)), pa.int64())

    ids = uniform(1, drivers + drivers // 10)
    customer_ids = uniform(2, customers + customers // 10)
    span = DRIVER_TIMES * STEP + timedelta(days=2)
    offsets = uniform(3, int(span.total_seconds() * 1e6))
    start = int(T0.timestamp() * 1e6) - 86_400_000_000
    return pa.table(
        {
            "driver_id": ids,
            "customer_id": customer_ids,
            "event_timestamp": pc.add(offsets, start).cast(UTC_US),
            "label": pc.bit_wise_and(ids, 1),
        }
    )


def historical_registry() -> registry_pb2.Registry:
    """Two offline-only views whose history the benchmark writes into the offline store.

    Their source is a push source: the history is there before the server starts, as
    if pushed; retrieval reads the offline store only.
    """
    from skewless.registry import FeatureService, FeatureView, PushSource, RepoDefinitions

    history = PushSource(name="history")
    views = (
        FeatureView(
            name="driver_stats",
            entities=(_entity("driver"),),
            source=history,
            features=_numeric_features(10),
            ttl=DRIVER_TTL,
            online=False,
        ),
        FeatureView(
            name="customer_stats",
            entities=(_entity("customer"),),
            source=history,
            features=_numeric_features(5),
            ttl=CUSTOMER_TTL,
            online=False,
        ),
    )
    service = FeatureService(name="training", features=("driver_stats", "customer_stats"))
    return RepoDefinitions(feature_views=views, feature_services=(service,)).to_registry(PROJECT)


# --- materialize.py ------------------------------------------------------------------------

#: The materialization range: every event time of both views.
MATERIALIZE_START, MATERIALIZE_END = T0, T0 + (DRIVER_TIMES + 1) * STEP


def materialize_views(scale: float) -> dict[str, pa.Table]:
    """The source files' contents per view (their time columns: event_ts, created_ts)."""
    times = {"event_field": "event_ts", "created_field": "created_ts"}
    return {
        "driver_stats": numeric_history(
            int(DRIVERS * scale), DRIVER_TIMES, "driver_id", 10, **times
        ),
        "customer_profile": customer_profile_history(
            int(CUSTOMERS * scale), CUSTOMER_TIMES, **times
        ),
    }


def materialize_registry(data: Path, *, offline: bool = True) -> registry_pb2.Registry:
    """Both views over the Parquet files `data/<view>.parquet`, online (and offline)."""
    from skewless.registry import Feature, FeatureView, FileSource, RepoDefinitions

    def source(view: str) -> FileSource:
        return FileSource(
            name=f"{view}_src",
            path=str(data / f"{view}.parquet"),
            timestamp_field="event_ts",
            created_timestamp_field="created_ts",
        )

    profile = (
        Feature("lifetime_value", "FLOAT64"),
        Feature("orders", "INT64"),
        Feature("segment", "STRING"),
        Feature("is_active", "BOOL"),
        Feature("churn_score", "FLOAT64"),
    )
    views = (
        FeatureView(
            name="driver_stats",
            entities=(_entity("driver"),),
            source=source("driver_stats"),
            features=_numeric_features(10),
            offline=offline,
        ),
        FeatureView(
            name="customer_profile",
            entities=(_entity("customer"),),
            source=source("customer_profile"),
            features=profile,
            offline=offline,
        ),
    )
    return RepoDefinitions(feature_views=views).to_registry(PROJECT)


# --- online.py -----------------------------------------------------------------------------

DRIVER_FEATURES = [f"d{i}" for i in range(10)]
CUSTOMER_FEATURES = [f"c{i}" for i in range(5)]
WIDE_FEATURES = [f"w{i}" for i in range(250)]

#: (view, join key, features) per feature service, in request order; the views' entity is
#: named after the join key, and their features are FLOAT64 except those in `INT64`.
SERVICES: dict[str, list[tuple[str, str, list[str]]]] = {
    "driver_customer": [
        ("driver_hourly", "driver_id", DRIVER_FEATURES),
        ("customer_profile", "customer_id", CUSTOMER_FEATURES),
    ],
    "wide": [("wide", "item_id", WIDE_FEATURES)],
}
INT64 = frozenset(DRIVER_FEATURES[1::2] + WIDE_FEATURES)


def online_registry() -> registry_pb2.Registry:
    """Three online views fed by pushes, TTL 30 days, and the two services of `SERVICES`."""
    from skewless.registry import (
        Feature,
        FeatureService,
        FeatureView,
        PushSource,
        RepoDefinitions,
    )

    events = PushSource(name="events", timestamp_field="ts")
    views, services = [], []
    for service, spec in SERVICES.items():
        for view, key, features in spec:
            views.append(
                FeatureView(
                    name=view,
                    entities=(_entity(key.removesuffix("_id")),),
                    source=events,
                    features=tuple(
                        Feature(f, "INT64" if f in INT64 else "FLOAT64") for f in features
                    ),
                    ttl="30d",
                )
            )
        services.append(FeatureService(name=service, features=tuple(v for v, _, _ in spec)))
    return RepoDefinitions(
        feature_views=tuple(views), feature_services=tuple(services)
    ).to_registry(PROJECT)


def load_online(
    url: str, entities: int, wide_entities: int, collect: dict[str, dict] | None = None
) -> int:
    """Writes the views into skewless's Redis layout; returns their event time (us).

    Drivers and customers `0..entities-1`, wide items `0..wide_entities-1`, every value
    drawn from one seeded generator. With `collect`, also keeps every value (view ->
    column -> list), for Feast's copy.
    """
    import redis

    from skewless.online.layout import EVENT_TIME_FIELD, redis_key
    from skewless.v1 import types_pb2

    client = redis.Redis.from_url(url)
    ts_us = int(time.time() * 1_000_000)
    ts = str(ts_us).encode()
    rng = random.Random(7)

    def value(feature: str) -> int | float:
        if feature in INT64:
            return rng.randrange(1 << 40)
        return rng.random()

    def encode(v: int | float) -> bytes:
        if isinstance(v, int):
            return types_pb2.Value(int64_value=v).SerializeToString()
        return types_pb2.Value(double_value=v).SerializeToString()

    for view, features, count in (
        ("driver_hourly", DRIVER_FEATURES, entities),
        ("customer_profile", CUSTOMER_FEATURES, entities),
        ("wide", WIDE_FEATURES, wide_entities),
    ):
        columns = None
        if collect is not None:
            columns = collect.setdefault(view, {"id": [], **{f: [] for f in features}})
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            row = {f: value(f) for f in features}
            mapping = {EVENT_TIME_FIELD: ts, **{f.encode(): encode(v) for f, v in row.items()}}
            pipe.hset(redis_key(PROJECT, view, (i,)), mapping=mapping)
            if columns is not None:
                columns["id"].append(i)
                for f, v in row.items():
                    columns[f].append(v)
            if i % 200 == 199:
                pipe.execute()
        pipe.execute()
    client.close()
    return ts_us


def online_request(service: str, rows: int, entities: int, wide_entities: int) -> str:
    """A `GetOnlineFeaturesRequest` as JSON: `rows` random known keys per join key."""
    rng = random.Random(rows)
    cols: dict[str, dict[str, list[dict[str, str]]]] = {}
    for _view, key, _features in SERVICES[service]:
        limit = wide_entities if service == "wide" else entities
        cols[key] = {"values": [{"int64_value": str(rng.randrange(limit))} for _ in range(rows)]}
    return json.dumps({"feature_service": service, "entities": cols})


# --- Feast's copy of the workloads ---------------------------------------------------------


def copy_feast_repo(name: str, dest: Path, **settings: str) -> Path:
    """Copies the Feast feature repository `bench/feast/<name>` to `dest`, filled in.

    `settings` replace the `${...}` placeholders of its `feature_store.yaml` (every one
    must be given); the benchmark then puts the data its definitions read into
    `dest/data/`.
    """
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(FEAST_REPOS / name, dest, ignore=shutil.ignore_patterns("__pycache__"))
    config = dest / "feature_store.yaml"
    config.write_text(string.Template(config.read_text()).substitute(settings))
    (dest / "data").mkdir(exist_ok=True)
    return dest
