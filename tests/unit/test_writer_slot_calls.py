"""The Redis Cluster fast path builds exactly the script calls of the general path."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from skewless.online import writer
from skewless.registry.feature_refs import FeatureSpec
from skewless.v1 import types_pb2

VT = types_pb2.ValueType
T0 = datetime(2024, 1, 1, tzinfo=UTC)

_row = st.tuples(
    st.one_of(st.integers(-5, 3000), st.integers(-(2**63), 2**63 - 1)),  # key
    st.integers(0, 3),  # event second
    st.one_of(st.none(), st.integers(0, 2)),  # created second
    st.one_of(st.none(), st.floats(allow_nan=False)),
    st.one_of(st.none(), st.text(max_size=5)),
)


def _rows(rows: list[tuple[int, int, int | None, float | None, str | None]], created: bool):
    table = pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(seconds=r[1]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
            "created_timestamp": pa.array(
                [
                    T0 + timedelta(seconds=r[2]) if created and r[2] is not None else None
                    for r in rows
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "x": pa.array([r[3] for r in rows], pa.float64()),
            "s": pa.array([r[4] for r in rows], pa.string()),
        }
    )
    return writer.prepare_rows(
        "p",
        "v",
        table,
        join_keys=["id"],
        features=[FeatureSpec("x", VT.VALUE_TYPE_FLOAT64), FeatureSpec("s", VT.VALUE_TYPE_STRING)],
    )


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(_row, max_size=700),
    created=st.booleans(),
    expire=st.sampled_from([None, timedelta(hours=2)]),
)
def test_slot_calls_are_the_general_paths_calls(
    rows: list[tuple[int, int, int | None, float | None, str | None]],
    created: bool,
    expire: timedelta | None,
) -> None:
    encoded = _rows(rows, created)
    conn = redis.Connection()
    expected: dict[int, list[bytes]] = defaultdict(list)
    for keys, argv in writer._calls(encoded, expire, cluster=True):
        slots = {key_slot(k) for k in keys}
        assert len(slots) == 1 and len(keys) <= writer._KEYS_PER_CALL
        expected[slots.pop()].append(
            b"".join(conn.pack_command("EVALSHA", "f" * 40, len(keys), *keys, *argv))
        )
    got: dict[int, list[bytes]] = defaultdict(list)
    last = -1
    for slot, command in writer._packed_slot_calls(encoded, expire, "f" * 40):
        assert slot >= last  # in slot order
        last = slot
        got[slot].append(command)
    assert got == expected  # per slot, the same calls in the same order
