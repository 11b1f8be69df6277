"""bench/materialize.py's views, for `FeatureStore.materialize` (Feast 0.67).

Same names and types as `bench/workload.py`'s `materialize_registry()`; skewless's views
have no TTL; Feast's have ten years, far longer than the history.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Bool, Float64, Int64, String

DATA = Path(__file__).resolve().parent / "data"


def view(name, key, fields):
    entity = Entity(name=key.split("_")[0], join_keys=[key])
    source = FileSource(
        name=name + "_src",
        path=str(DATA / (name + ".parquet")),
        timestamp_field="event_ts",
        created_timestamp_column="created_ts",
    )
    return entity, FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(days=3650),
        schema=[Field(name=n, dtype=t) for n, t in fields],
        source=source,
        online=True,
    )


driver, driver_stats = view(
    "driver_stats", "driver_id", [(f"f{i}", Int64 if i % 3 == 2 else Float64) for i in range(10)]
)
customer, customer_profile = view(
    "customer_profile",
    "customer_id",
    [
        ("lifetime_value", Float64),
        ("orders", Int64),
        ("segment", String),
        ("is_active", Bool),
        ("churn_score", Float64),
    ],
)
