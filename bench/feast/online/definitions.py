"""bench/online.py's views and feature services, for `feast serve` (Feast 0.67).

Same names, types and TTL as `bench/workload.py`'s `online_registry()`.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64

DATA = Path(__file__).resolve().parent / "data"
driver = Entity(name="driver", join_keys=["driver_id"])
customer = Entity(name="customer", join_keys=["customer_id"])
item = Entity(name="item", join_keys=["item_id"])


def view(name, entity, fields):
    source = FileSource(
        name=name + "_src",
        path=str(DATA / (name + ".parquet")),
        timestamp_field="event_timestamp",
    )
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(days=30),
        online=True,
        schema=[Field(name=n, dtype=t) for n, t in fields],
        source=source,
    )


driver_hourly = view(
    "driver_hourly", driver, [(f"d{i}", Int64 if i % 2 else Float64) for i in range(10)]
)
customer_profile = view("customer_profile", customer, [(f"c{i}", Float64) for i in range(5)])
wide = view("wide", item, [(f"w{i}", Int64) for i in range(250)])
driver_customer = FeatureService(name="driver_customer", features=[driver_hourly, customer_profile])
wide_service = FeatureService(name="wide", features=[wide])
