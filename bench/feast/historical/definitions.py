"""bench/historical.py's offline views, for `get_historical_features` (Feast 0.67).

Same names, types and TTLs as `bench/workload.py`'s `historical_registry()`.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64

DATA = Path(__file__).resolve().parent / "data"


def view(name, key, n, ttl):
    entity = Entity(name=key.split("_")[0], join_keys=[key])
    source = FileSource(
        name=name + "_src",
        path=str(DATA / (name + ".parquet")),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    )
    return entity, FeatureView(
        name=name,
        entities=[entity],
        ttl=ttl,
        source=source,
        online=False,
        schema=[Field(name=f"f{i}", dtype=Int64 if i % 3 == 2 else Float64) for i in range(n)],
    )


driver, driver_stats = view("driver_stats", "driver_id", 10, timedelta(days=2))
customer, customer_stats = view("customer_stats", "customer_id", 5, timedelta(days=7))
