"""The Delta store against a model: random windows, pushes and compactions, then joins.

The model keeps every live row with its write sequence (a window replaces the
materialized rows inside it, a push appends, a compaction changes nothing); the
brute-force reference join ranks candidates by (event time, created time, write
sequence, position in the write). The store's retrieval must match it exactly.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.core.config import RepoConfig
from skewless.offline.history_index import ViewHistory
from skewless.offline.maintenance import compact
from skewless.offline.offline_store import (
    ORIGIN_PUSH,
    HistoryWriter,
    commit_append,
    commit_window,
    history_files,
)
from skewless.registry.feature_refs import resolve_feature_refs, resolve_view
from tests.helpers.engines import Engine
from tests.integration.matfixtures import T0, make_registry

HOUR_US = 3_600_000_000
T0_US = int(T0.timestamp()) * 1_000_000
UTC_US = pa.timestamp("us", tz="UTC")


@dataclass
class Live:
    seq: int
    pos: int
    origin: str
    row: dict[str, Any]


hours = st.integers(min_value=0, max_value=71)  # three UTC days


@st.composite
def rows(draw: st.DrawFn, lo: int = 0, hi: int = 72) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        out.append(
            {
                "driver_id": draw(st.integers(min_value=1, max_value=3)),
                "event_timestamp": T0_US
                + draw(st.integers(min_value=lo, max_value=hi - 1)) * HOUR_US,
                "created_timestamp": draw(st.one_of(st.none(), st.integers(0, 2))),
                "conv_rate": float(draw(st.integers(0, 99))),
                "trips": draw(st.integers(0, 9)),
                "label": draw(st.sampled_from(["a", "b", None])),
            }
        )
    return out


@st.composite
def operation(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["push", "push", "window", "window", "compact"]))
    if kind == "push":
        return ("push", draw(rows()))
    if kind == "compact":
        return ("compact",)
    start = draw(st.integers(min_value=0, max_value=70))
    end = draw(st.integers(min_value=start + 1, max_value=72))
    return ("window", start, end, draw(rows(start, end)))


def _table(items: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    def micros(v: int | None) -> int | None:  # created times: seconds after T0
        return None if v is None else T0_US + v * 1_000_000

    data = {
        "driver_id": [r["driver_id"] for r in items],
        "event_timestamp": pa.array([r["event_timestamp"] for r in items], pa.int64()).cast(UTC_US),
        "created_timestamp": pa.array(
            [micros(r["created_timestamp"]) for r in items], pa.int64()
        ).cast(UTC_US),
        "conv_rate": [r["conv_rate"] for r in items],
        "trips": [r["trips"] for r in items],
        "label": pa.array([r["label"] for r in items], pa.string()),
    }
    return pa.table(data).cast(schema)


def _reference(model: list[Live], key: int, t: int) -> dict[str, Any] | None:
    best, rank = None, None
    for live in model:
        r = live.row
        if r["driver_id"] != key or r["event_timestamp"] > t:
            continue
        created = r["created_timestamp"]
        candidate = (r["event_timestamp"], created is not None, created or 0, live.seq, live.pos)
        if rank is None or candidate > rank:
            best, rank = r, candidate
    return best


def test_the_store_answers_like_the_model(engine: Engine) -> None:
    settings(
        max_examples=engine.examples(40),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )(
        given(
            ops=st.lists(operation(), min_size=1, max_size=6), probes=st.lists(hours, min_size=1)
        )(check_the_store_answers_like_the_model)
    )(engine=engine)


def check_the_store_answers_like_the_model(
    engine: Engine, ops: list[tuple[Any, ...]], probes: list[int]
) -> None:
    registry = make_registry()
    plan = resolve_view(registry, "driver_stats")
    schema = plan.history_schema
    model: list[Live] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = RepoConfig(root=Path(tmp), project="mat", data_dir=Path(tmp) / "d", server_port=0)
        for seq, op in enumerate(ops):
            if op[0] == "compact":
                compact(config, "driver_stats", ["driver_id"])
                continue
            if op[0] == "push":
                items, origin = op[1], ORIGIN_PUSH
                writer = HistoryWriter(config, "driver_stats", schema, origin=origin)
                writer.write(_table(items, schema))
                commit_append(config, "driver_stats", writer.close())
            else:
                _, start, end, items = op
                origin = "window"
                lo, hi = T0_US + start * HOUR_US, T0_US + end * HOUR_US
                model = [
                    m
                    for m in model
                    if m.origin != "window" or not lo <= m.row["event_timestamp"] < hi
                ]
                writer = HistoryWriter(config, "driver_stats", schema)
                writer.write(_table(items, schema))
                staged = writer.close()
                commit_window(
                    config,
                    "driver_stats",
                    T0 + timedelta(hours=start),
                    T0 + timedelta(hours=end),
                    staged,
                    schema=schema,
                )
            model += [Live(seq, pos, origin, r) for pos, r in enumerate(items)]
        files = history_files(config, "driver_stats")
        stored = sorted(
            (r["driver_id"], r["event_timestamp"], r["conv_rate"], r["trips"], str(r["label"]))
            for f in files
            for r in pq.read_table(f)
            .select(["driver_id", "event_timestamp", "conv_rate", "trips", "label"])
            .cast(
                pa.schema(
                    [
                        ("driver_id", pa.int64()),
                        ("event_timestamp", pa.int64()),
                        ("conv_rate", pa.float64()),
                        ("trips", pa.int64()),
                        ("label", pa.string()),
                    ]
                )
            )
            .to_pylist()
        )
        expected_rows = sorted(
            (
                m.row["driver_id"],
                m.row["event_timestamp"],
                m.row["conv_rate"],
                m.row["trips"],
                str(m.row["label"]),
            )
            for m in model
        )
        assert stored == expected_rows
        if not files:
            return
        features = resolve_feature_refs(registry, ["driver_stats"])
        keys = [1 + i % 3 for i in range(len(probes))]
        label_us = [T0_US + h * HOUR_US + (i % 2) for i, h in enumerate(probes)]
        entity = pa.table(
            {
                "driver_id": pa.array(keys, pa.int64()),
                "event_timestamp": pa.array(label_us, pa.int64()).cast(UTC_US),
            }
        )
        join = engine.join(entity, features, [ViewHistory(features.views[0], tuple(files))])
        try:
            result = join.reader.read_all().to_pylist()
        finally:
            join.close()
    for out, key, t in zip(result, keys, label_us, strict=True):
        best = _reference(model, key, t)
        got = (out["conv_rate"], out["trips"], out["label"])
        want = (
            (None, None, None)
            if best is None
            else (best["conv_rate"], best["trips"], best["label"])
        )
        assert got == want
