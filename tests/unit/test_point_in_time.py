"""The point-in-time join checked against a brute-force reference written in plain loops."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.core.errors import InvalidArgumentError, NotFoundError
from skewless.offline.point_in_time import ViewHistory
from skewless.registry.feature_refs import (
    FeaturePlan,
    parse_feature_ref,
    resolve_feature_refs,
    resolve_feature_service,
)
from skewless.v1 import registry_pb2, types_pb2
from tests.helpers.engines import Engine

DUCKDB = Engine("duckdb")

VT = types_pb2.ValueType
UTC_US = pa.timestamp("us", tz="UTC")
BASE = 1_700_000_000_000_000  # micros since the epoch
SEC = 1_000_000


def build_registry(driver_ttl_s: int, trip_ttl_s: int) -> registry_pb2.Registry:
    """driver (key driver_id INT64) and trip (composite key customer STRING, zone INT32)."""
    return registry_pb2.Registry(
        project="p",
        entities=[
            registry_pb2.Entity(
                name="driver",
                join_keys=[registry_pb2.JoinKey(name="driver_id", value_type=VT.VALUE_TYPE_INT64)],
            ),
            registry_pb2.Entity(
                name="trip",
                join_keys=[
                    registry_pb2.JoinKey(name="customer", value_type=VT.VALUE_TYPE_STRING),
                    registry_pb2.JoinKey(name="zone", value_type=VT.VALUE_TYPE_INT32),
                ],
            ),
        ],
        feature_views=[
            registry_pb2.FeatureView(
                name="driver_stats",
                entities=["driver"],
                ttl=duration_pb2.Duration(seconds=driver_ttl_s),
                features=[
                    registry_pb2.Feature(name="rating", value_type=VT.VALUE_TYPE_FLOAT64),
                    registry_pb2.Feature(name="trips", value_type=VT.VALUE_TYPE_INT64),
                ],
            ),
            registry_pb2.FeatureView(
                name="trip_stats",
                entities=["trip"],
                ttl=duration_pb2.Duration(seconds=trip_ttl_s),
                features=[
                    registry_pb2.Feature(name="trips", value_type=VT.VALUE_TYPE_INT64),
                    registry_pb2.Feature(name="label", value_type=VT.VALUE_TYPE_STRING),
                ],
            ),
        ],
        feature_services=[
            registry_pb2.FeatureService(
                name="model",
                projections=[
                    registry_pb2.FeatureProjection(feature_view="driver_stats"),
                    registry_pb2.FeatureProjection(feature_view="trip_stats", features=["label"]),
                ],
            )
        ],
    )


# --------------------------------------------------------------------------- reference


@dataclass
class HistoryFile:
    path: str
    rows: list[dict[str, Any]]  # event_timestamp / created_timestamp as int micros or None


def reference_join(
    entity_rows: list[dict[str, Any]],
    label_micros: list[int],
    plan: FeaturePlan,
    histories: dict[str, list[HistoryFile]],
) -> list[dict[str, Any]]:
    """One output row per entity row, computed by scanning every history row."""
    out = []
    for row, t in zip(entity_rows, label_micros, strict=True):
        result = dict(row)
        for view in plan.views:
            best = None
            best_rank: tuple[Any, ...] | None = None
            for file in histories[view.name]:
                for position, hist in enumerate(file.rows):
                    if any(row[k] is None or hist[k] != row[k] for k in view.join_key_names):
                        continue
                    ts = hist["event_timestamp"]
                    if ts > t:
                        continue
                    if view.ttl_micros > 0 and ts < t - view.ttl_micros:
                        continue
                    created = hist["created_timestamp"]
                    rank = (
                        ts,
                        created is not None,
                        created if created is not None else 0,
                        file.path,
                        position,
                    )
                    if best_rank is None or rank > best_rank:
                        best, best_rank = hist, rank
            for feature in view.features:
                result[feature.output_name] = None if best is None else best[feature.name]
        out.append(result)
    return out


# --------------------------------------------------------------------------- strategies

DRIVERS = [1, 2, 3]
CUSTOMERS = [("a", 1), ("a", 2), ("b", 1)]

times = st.integers(min_value=0, max_value=12)
created = st.one_of(st.none(), st.integers(min_value=0, max_value=2))


@st.composite
def driver_rows(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "driver_id": draw(st.sampled_from(DRIVERS)),
        "event_timestamp": BASE + draw(times) * SEC,
        "created_timestamp": (lambda c: None if c is None else BASE + c * SEC)(draw(created)),
        "rating": draw(st.one_of(st.none(), st.floats(0, 5, allow_nan=False))),
        "trips": draw(st.one_of(st.none(), st.integers(0, 100))),
    }


@st.composite
def trip_rows(draw: st.DrawFn) -> dict[str, Any]:
    customer, zone = draw(st.sampled_from(CUSTOMERS))
    return {
        "customer": customer,
        "zone": zone,
        "event_timestamp": BASE + draw(times) * SEC,
        "created_timestamp": (lambda c: None if c is None else BASE + c * SEC)(draw(created)),
        "trips": draw(st.one_of(st.none(), st.integers(0, 100))),
        "label": draw(st.one_of(st.none(), st.text("xyz", max_size=3))),
    }


FILE_NAMES = ["part-0.parquet", "part-1.parquet", "w=1/x.parquet", "w=2/a.parquet"]


def files_of(rows_strategy: Any) -> Any:
    return st.lists(
        st.tuples(st.sampled_from(FILE_NAMES), st.lists(rows_strategy, max_size=7)),
        min_size=1,
        max_size=3,
        unique_by=lambda f: f[0],
    )


@st.composite
def entity_row(draw: st.DrawFn) -> dict[str, Any]:
    customer, zone = draw(st.sampled_from([*CUSTOMERS, ("zz", 9), (None, 1)]))
    return {
        "driver_id": draw(st.sampled_from([*DRIVERS, 99, None])),
        "customer": customer,
        "zone": zone,
        "t": BASE + draw(st.integers(min_value=-2, max_value=16)) * SEC,
        "sub_micro_ns": draw(st.integers(0, 999)),
        "payload": draw(st.integers(-(2**63), 2**63 - 1)),
    }


DRIVER_SCHEMA = pa.schema(
    [
        ("driver_id", pa.int64()),
        ("event_timestamp", UTC_US),
        ("created_timestamp", UTC_US),
        ("rating", pa.float64()),
        ("trips", pa.int64()),
    ]
)
TRIP_SCHEMA = pa.schema(
    [
        ("customer", pa.string()),
        ("zone", pa.int32()),
        ("event_timestamp", UTC_US),
        ("created_timestamp", UTC_US),
        ("trips", pa.int64()),
        ("label", pa.string()),
    ]
)


def write_history(root: Path, view: str, files: list[tuple[str, list[dict[str, Any]]]], schema):
    written = []
    for name, rows in files:
        path = root / view / name
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = {f.name: [r[f.name] for r in rows] for f in schema}
        arrays = [
            pa.array(columns[f.name], pa.int64()).cast(f.type)
            if f.type == UTC_US
            else pa.array(columns[f.name], f.type)
            for f in schema
        ]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path, row_group_size=3)
        written.append(HistoryFile(str(path), rows))
    return sorted(written, key=lambda f: f.path)


LABEL_TYPES = {
    "utc": pa.timestamp("us", tz="UTC"),
    "naive": pa.timestamp("us"),
    "new_york": pa.timestamp("us", tz="America/New_York"),
    "tokyo_ms": pa.timestamp("ms", tz="Asia/Tokyo"),
    "naive_ns": pa.timestamp("ns"),
}


def label_column(rows: list[dict[str, Any]], kind: str) -> tuple[pa.Array, list[int]]:
    if kind == "naive_ns":
        values = [r["t"] * 1000 + r["sub_micro_ns"] for r in rows]
        return pa.array(values, pa.int64()).cast(LABEL_TYPES[kind]), [v // 1000 for v in values]
    if kind == "tokyo_ms":
        values = [r["t"] // 1000 for r in rows]
        return pa.array(values, pa.int64()).cast(LABEL_TYPES[kind]), [v * 1000 for v in values]
    values = [r["t"] for r in rows]
    return pa.array(values, pa.int64()).cast(LABEL_TYPES[kind]), values


def plain(table: pa.Table) -> pa.Table:
    """Label times as int64 (nanosecond timestamps have no exact Python form)."""
    return table.set_column(
        table.schema.get_field_index("label_time"),
        "label_time",
        table.column("label_time").cast(pa.int64()),
    )


def run_join(
    entity: pa.Table,
    plan: FeaturePlan,
    histories: dict[str, list[HistoryFile]],
    engine: Engine = DUCKDB,
    **kw,
):
    join = engine.join(
        entity,
        plan,
        [ViewHistory(v, tuple(Path(f.path) for f in histories[v.name])) for v in plan.views],
        **kw,
    )
    try:
        batches = list(join.reader)
    finally:
        join.close()
    return pa.Table.from_batches(batches, schema=join.schema), batches


# --------------------------------------------------------------------------- properties


JOIN_PROPERTY = given(
    driver_files=files_of(driver_rows()),
    trip_files=files_of(trip_rows()),
    entities=st.lists(entity_row(), max_size=12),
    driver_ttl=st.sampled_from([0, 1, 3, 5]),
    trip_ttl=st.sampled_from([0, 2, 4]),
    label_kind=st.sampled_from(sorted(LABEL_TYPES)),
    full_names=st.booleans(),
    batch_rows=st.sampled_from([1, 3, 1000]),
    strategy=st.sampled_from([None, None, "dedupe"]),
    chunk_rows=st.sampled_from([2_000_000, 2_000_000, 1, 5]),
    history_memory=st.sampled_from([None, None, 0, 100]),
)


def test_join_matches_reference(engine: Engine) -> None:
    settings(
        max_examples=engine.examples(120),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(JOIN_PROPERTY(check_join_matches_reference))(engine=engine)


def check_join_matches_reference(
    engine,
    driver_files,
    trip_files,
    entities,
    driver_ttl,
    trip_ttl,
    label_kind,
    full_names,
    batch_rows,
    strategy,
    chunk_rows,
    history_memory,
):
    registry = build_registry(driver_ttl, trip_ttl)
    plan = (
        resolve_feature_refs(
            registry,
            ["trip_stats:label", "driver_stats", "trip_stats:trips"],
            full_feature_names=full_names,
        )
        if full_names
        else resolve_feature_refs(
            registry, ["trip_stats:label", "driver_stats:rating", "driver_stats:trips"]
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        histories = {
            "driver_stats": write_history(root, "driver_stats", driver_files, DRIVER_SCHEMA),
            "trip_stats": write_history(root, "trip_stats", trip_files, TRIP_SCHEMA),
        }
        labels, label_micros = label_column(entities, label_kind)
        entity = pa.table(
            {
                "payload": pa.array([r["payload"] for r in entities], pa.int64()),
                "driver_id": pa.array([r["driver_id"] for r in entities], pa.int64()),
                "customer": pa.array([r["customer"] for r in entities], pa.string()),
                "zone": pa.array([r["zone"] for r in entities], pa.int32()),
                "label_time": labels,
            }
        )
        result, batches = run_join(
            entity,
            plan,
            histories,
            engine,
            label_time_column="label_time",
            batch_rows=batch_rows,
            strategy=strategy,  # None: "plain" when no ties, else "dedupe"
            chunk_rows=chunk_rows,  # small: several queries, each with its own pruning
            history_memory_limit=history_memory,  # small: features memory-mapped from a file
            temp_directory=root / "spill",
        )
        spilled = [p for p in (root / "spill").rglob("*") if p.is_file()]
        assert spilled == []  # a spill file never outlives its name
    expected = reference_join(plain(entity).to_pylist(), label_micros, plan, histories)
    assert result.num_rows == len(entities)
    assert result.schema.names == [*entity.schema.names, *plan.output_names]
    assert result.select(entity.schema.names).equals(entity)  # input columns untouched
    assert plain(result).to_pylist() == expected
    assert all(b.num_rows <= batch_rows for b in batches)


# --------------------------------------------------------------------------- examples


def _history(root: Path, rows: list[dict[str, Any]], name: str = "part-0.parquet"):
    return write_history(root, "driver_stats", [(name, rows)], DRIVER_SCHEMA)


def _row(driver: int, t_s: int, *, created_s: int | None = None, rating: float | None = 1.0):
    return {
        "driver_id": driver,
        "event_timestamp": BASE + t_s * SEC,
        "created_timestamp": None if created_s is None else BASE + created_s * SEC,
        "rating": rating,
        "trips": t_s,
    }


def _entities(pairs: list[tuple[int | None, int]]) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array([p[0] for p in pairs], pa.int64()),
            "event_timestamp": pa.array([BASE + p[1] * SEC for p in pairs]).cast(UTC_US),
        }
    )


@pytest.mark.parametrize("strategy", [None, "dedupe"])
def test_ttl_boundary_is_inclusive_and_ties_follow_the_documented_rule(
    tmp_path: Path, strategy: str | None, engine: Engine
) -> None:
    registry = build_registry(driver_ttl_s=10, trip_ttl_s=0)
    plan = resolve_feature_refs(registry, ["driver_stats:rating"])
    first = _history(
        tmp_path,
        [_row(1, 0, rating=0.5), _row(2, 5, created_s=1, rating=2.0), _row(2, 5, rating=9.0)],
        "a.parquet",
    )
    second = _history(
        tmp_path, [_row(2, 5, created_s=1, rating=3.0), _row(3, 7, rating=7.0)], "b.parquet"
    )
    entity = _entities([(1, 10), (1, 11), (2, 5), (2, 4), (3, 7), (7, 7), (None, 7)])
    result, _ = run_join(entity, plan, {"driver_stats": first + second}, engine, strategy=strategy)
    assert result.column("rating").to_pylist() == [
        0.5,  # t - ttl == event time: inclusive
        None,  # one microsecond... one second past the TTL
        3.0,  # same event and created time: the greatest file path wins
        None,  # label before the first row
        7.0,  # label == event time: inclusive
        None,  # unknown key
        None,  # null key
    ]


def test_result_streams_in_batches_of_the_requested_size(tmp_path: Path, engine: Engine) -> None:
    registry = build_registry(driver_ttl_s=0, trip_ttl_s=0)
    plan = resolve_feature_refs(registry, ["driver_stats"])
    files = _history(tmp_path, [_row(d, t) for d in range(5) for t in range(0, 40, 3)])
    entity = _entities([(i % 7, (i * 13) % 50) for i in range(500)][::-1])
    result, batches = run_join(entity, plan, {"driver_stats": files}, engine, batch_rows=64)
    assert [b.num_rows for b in batches] == [64] * 7 + [52]
    expected = reference_join(
        entity.to_pylist(),
        [
            r["event_timestamp"]
            for r in entity.cast(
                pa.schema([("driver_id", pa.int64()), ("event_timestamp", pa.int64())])
            ).to_pylist()
        ],
        plan,
        {"driver_stats": files},
    )
    assert result.to_pylist() == expected


def test_a_view_without_files_in_range_gives_nulls(tmp_path: Path, engine: Engine) -> None:
    registry = build_registry(driver_ttl_s=0, trip_ttl_s=0)
    plan = resolve_feature_refs(registry, ["trip_stats:label", "driver_stats:trips"])
    files = _history(tmp_path, [_row(1, 0)])
    entity = (
        _entities([(1, 5), (2, 5)])
        .append_column("customer", pa.array(["a", "b"]))
        .append_column("zone", pa.array([1, 1], pa.int32()))
    )
    result, _ = run_join(entity, plan, {"driver_stats": files, "trip_stats": []}, engine)
    assert result.column("label").to_pylist() == [None, None]
    assert result.column("label").type == pa.string()
    assert result.column("trips").to_pylist() == [0, None]


def test_naive_and_zoned_label_times_mean_the_same_instant(tmp_path: Path, engine: Engine) -> None:
    registry = build_registry(driver_ttl_s=0, trip_ttl_s=0)
    plan = resolve_feature_refs(registry, ["driver_stats:trips"])
    files = _history(tmp_path, [_row(1, 0), _row(1, 3600)])
    instant = dt.datetime.fromtimestamp((BASE + 3600 * SEC) / SEC, dt.UTC)
    rows = {
        "driver_id": pa.array([1, 1], pa.int64()),
        "event_timestamp": pa.array(
            [instant.replace(tzinfo=None), instant.replace(tzinfo=None) - dt.timedelta(seconds=1)],
            pa.timestamp("us"),
        ),
    }
    naive, _ = run_join(pa.table(rows), plan, {"driver_stats": files}, engine)
    rows["event_timestamp"] = (
        rows["event_timestamp"]
        .cast(pa.timestamp("us", tz="UTC"))
        .cast(pa.timestamp("us", tz="Europe/Paris"))
    )
    zoned, _ = run_join(pa.table(rows), plan, {"driver_stats": files}, engine)
    assert naive.column("trips").to_pylist() == zoned.column("trips").to_pylist() == [3600, 0]


@pytest.mark.parametrize(
    ("columns", "label", "match"),
    [
        ({"event_timestamp": pa.array([BASE]).cast(UTC_US)}, "event_timestamp", "driver_id"),
        ({"driver_id": pa.array([1])}, "event_timestamp", "event_timestamp"),
        ({"driver_id": pa.array([1]), "ts": pa.array(["2024-01-01"])}, "ts", "timestamp"),
        ({"driver_id": pa.array(["1"]), "ts": pa.array([BASE]).cast(UTC_US)}, "ts", "INT64"),
        ({"driver_id": pa.array([1]), "ts": pa.array([None], UTC_US)}, "ts", "null"),
        (
            {"driver_id": pa.array([1]), "ts": pa.array([BASE]).cast(UTC_US), "rating": [1]},
            "ts",
            "full_feature_names",
        ),
    ],
)
def test_bad_entity_rows_are_rejected_before_any_work(
    tmp_path: Path, columns: dict[str, Any], label: str, match: str, engine: Engine
) -> None:
    plan = resolve_feature_refs(build_registry(0, 0), ["driver_stats:rating"])
    files = _history(tmp_path, [_row(1, 0)])
    with pytest.raises(InvalidArgumentError, match=match):
        run_join(pa.table(columns), plan, {"driver_stats": files}, engine, label_time_column=label)


# --------------------------------------------------------------------------- feature refs


def test_feature_service_resolves_in_order_with_all_features_of_bare_projections() -> None:
    plan = resolve_feature_service(build_registry(60, 0), "model", full_feature_names=True)
    assert plan.output_names == (
        "driver_stats__rating",
        "driver_stats__trips",
        "trip_stats__label",
    )
    assert [v.name for v in plan.views] == ["driver_stats", "trip_stats"]
    assert plan.views[0].ttl_micros == 60 * SEC
    assert [k.name for k in plan.join_keys] == ["driver_id", "customer", "zone"]


def test_feature_refs_errors_name_the_problem() -> None:
    registry = build_registry(0, 0)
    with pytest.raises(NotFoundError, match="'nope'"):
        resolve_feature_refs(registry, ["nope:rating"])
    with pytest.raises(NotFoundError, match="'speed'"):
        resolve_feature_refs(registry, ["driver_stats:speed"])
    with pytest.raises(NotFoundError, match="'missing'"):
        resolve_feature_service(registry, "missing")
    for bad in ["", "a:b:c", ":x", "v:", " v:x"]:
        with pytest.raises(ValueError, match="use 'view:feature'"):
            parse_feature_ref(bad)
        with pytest.raises(InvalidArgumentError, match="use 'view:feature'"):
            resolve_feature_refs(registry, [bad])
    with pytest.raises(InvalidArgumentError, match="full_feature_names") as info:
        resolve_feature_refs(registry, ["driver_stats:trips", "trip_stats:trips"])
    assert info.value.field == "full_feature_names"
    plan = resolve_feature_refs(
        registry, ["driver_stats:trips", "trip_stats:trips"], full_feature_names=True
    )
    assert plan.output_names == ("driver_stats__trips", "trip_stats__trips")
    with pytest.raises(InvalidArgumentError, match="repeated"):
        resolve_feature_refs(registry, ["driver_stats:trips", "driver_stats:trips"])


# --------------------------------------------------------------------------- tie check


@pytest.mark.parametrize(
    ("times", "keys", "ties"),
    [
        ([1, 1, 2, 2], [1, 2, 1, 2], False),  # time order: proven by comparisons alone
        ([1, 2, 1, 2], [1, 1, 2, 2], False),  # any other order: counted by DuckDB
        ([1, 1, 2], [3, 3, 1], True),  # in order but not strictly: a tie
        ([2, 1, 2], [3, 1, 3], True),  # out of order, tie apart
        ([1, 1], [None, None], True),  # NULL keys: no proof; counted (harmless)
        ([5], [1], False),
    ],
)
def test_tie_check_finds_exactly_the_shared_key_and_time(
    times: list[int], keys: list[int | None], ties: bool
) -> None:
    import duckdb

    from skewless.offline.history_index import INDEX_POSITION, INDEX_TIME, LoadedHistory, has_ties

    plan = resolve_feature_refs(build_registry(0, 0), ["driver_stats:rating"])
    index = pa.table(
        {
            "driver_id": pa.array(keys, pa.int64()),
            INDEX_TIME: pa.array([BASE + t * SEC for t in times]).cast(UTC_US),
            INDEX_POSITION: pa.array(range(len(times)), pa.int64()),
        }
    )
    con = duckdb.connect()
    con.register("__h0", index)
    loaded = LoadedHistory(table="__h0", features=pa.table({}), index=index, held_bytes=0)
    assert has_ties(con, loaded, plan.views[0]) is ties
