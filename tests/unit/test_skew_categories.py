"""The skew categories: each (served, offline) pair lands in exactly one, as documented."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from skewless.offline.skew import CATEGORY_NAMES, categorize
from skewless.v1 import types_pb2

VT = types_pb2.ValueType
US = pa.timestamp("us", tz="UTC")


def run(rows, value_type=VT.VALUE_TYPE_FLOAT64, dtype=None, tolerance=0.0):
    """rows: (status, served value, served ts, offline value, offline ts) per row."""
    dtype = dtype or pa.float64()
    status, s_value, s_ts, o_value, o_ts = zip(*rows, strict=True)
    category, lag = categorize(
        served_status=pa.chunked_array([pa.array(status, pa.string())]),
        served_value=pa.chunked_array([pa.array(s_value, dtype)]),
        served_time=pa.chunked_array([pa.array(s_ts, pa.int64()).cast(US)]),
        offline_value=pa.chunked_array([pa.array(o_value, dtype)]),
        offline_time=pa.chunked_array([pa.array(o_ts, pa.int64()).cast(US)]),
        value_type=value_type,
        tolerance=tolerance,
    )
    return [CATEGORY_NAMES[c] for c in category.to_pylist()], lag.to_pylist()


def test_each_category_with_its_worked_example() -> None:
    names, lag = run(
        [
            ("PRESENT", 1.5, 100, 1.5, 100),  # same row both sides
            ("PRESENT", 2.0, 100, 1.5, 100),  # overwritten online by hand
            ("PRESENT", 1.0, 100, 1.5, 160),  # online lagged 60 µs behind the history
            ("PRESENT", 3.0, 200, 1.5, 100),  # pushed online only, newer
            ("PRESENT", 3.0, 200, None, None),  # offline has no row at all
            ("NOT_FOUND", None, None, 1.5, 100),  # the Redis key was deleted
            ("OUTSIDE_MAX_AGE", None, 10, None, None),  # too old on both sides
            ("NOT_FOUND", None, None, None, None),  # unknown entity
            ("NULL_VALUE", None, 100, None, 100),  # a null feature, both sides
            ("NULL_VALUE", None, 100, 1.5, 100),  # null served, value offline
        ]
    )
    assert names == [
        "MATCH",
        "VALUE_MISMATCH",
        "SERVED_STALE",
        "SERVED_AHEAD",
        "SERVED_AHEAD",
        "MISSING_ONLINE",
        "EXPECTED_EMPTY",
        "EXPECTED_EMPTY",
        "MATCH",
        "VALUE_MISMATCH",
    ]
    assert lag == [0, 0, 60, 0, 0, 0, 0, 0, 0, 0]


def test_floats_compare_bit_for_bit_unless_a_tolerance_is_given() -> None:
    rows = [
        ("PRESENT", math.nan, 1, math.nan, 1),
        ("PRESENT", -0.0, 1, 0.0, 1),
        ("PRESENT", 0.1 + 0.2, 1, 0.3, 1),
    ]
    assert run(rows)[0] == ["MATCH", "VALUE_MISMATCH", "VALUE_MISMATCH"]
    assert run(rows, tolerance=1e-9)[0] == ["MATCH", "MATCH", "MATCH"]
    f32 = [("PRESENT", 0.1, 1, 0.1, 1), ("PRESENT", 0.1, 1, 0.2, 1)]
    assert run(f32, VT.VALUE_TYPE_FLOAT32, pa.float32())[0] == ["MATCH", "VALUE_MISMATCH"]


@pytest.mark.parametrize(
    ("value_type", "dtype", "a", "b"),
    [
        (VT.VALUE_TYPE_INT64, pa.int64(), 7, 8),
        (VT.VALUE_TYPE_STRING, pa.string(), "a", "b"),
        (VT.VALUE_TYPE_BOOL, pa.bool_(), True, False),
        (VT.VALUE_TYPE_FLOAT64_LIST, pa.list_(pa.float64()), [1.0, math.nan], [1.0, 2.0]),
        (VT.VALUE_TYPE_STRING_LIST, pa.list_(pa.string()), ["x"], ["x", "y"]),
    ],
)
def test_other_types(value_type: int, dtype: pa.DataType, a: object, b: object) -> None:
    names, _ = run([("PRESENT", a, 5, a, 5), ("PRESENT", a, 5, b, 5)], value_type, dtype)
    assert names == ["MATCH", "VALUE_MISMATCH"]


def test_the_report_joins_each_views_current_generation() -> None:
    """The report's offline plan keeps where each view's values are stored."""
    from skewless.offline.skew import offline_plan
    from skewless.registry.feature_refs import resolve_feature_refs
    from skewless.v1 import registry_pb2

    registry = registry_pb2.Registry(project="p", version=1)
    registry.entities.add(
        name="driver",
        join_keys=[registry_pb2.JoinKey(name="driver_id", value_type=VT.VALUE_TYPE_INT64)],
    )
    registry.data_sources.add(name="src", timestamp_field="ts").file.path = "d.parquet"
    view = registry.feature_views.add(
        name="stats", entities=["driver"], source="src", online=True, offline=True, generation=2
    )
    view.features.add(name="trips", value_type=VT.VALUE_TYPE_INT64)
    plan = offline_plan(resolve_feature_refs(registry, ["stats:trips"]))
    assert [(v.name, v.storage_name) for v in plan.views] == [("stats", "stats@2")]
