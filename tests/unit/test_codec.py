"""The vectorised codec produces exactly the bytes protobuf and the layout produce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skewless.core.types import arrow_type
from skewless.online import resp
from skewless.online.codec import (
    decode_value,
    encode_column,
    encode_redis_keys,
    encode_timestamps,
    to_micros,
)
from skewless.online.layout import redis_key
from skewless.online.resp import bulk
from skewless.registry.feature_refs import FeatureSpec
from skewless.v1 import types_pb2

VT = types_pb2.ValueType

_INT64 = [0, 1, -1, 127, 128, 300, 2**31, -(2**31), 2**63 - 1, -(2**63), None]
_CASES: list[tuple[int, str, list[object]]] = [
    (VT.VALUE_TYPE_INT64, "int64_value", _INT64),
    (VT.VALUE_TYPE_INT32, "int32_value", [0, 1, -1, 2**31 - 1, -(2**31), 16384, None]),
    (VT.VALUE_TYPE_FLOAT64, "double_value", [0.0, -0.0, 1.5, -3.25e300, float("inf"), None]),
    (VT.VALUE_TYPE_FLOAT32, "float_value", [0.0, 1.5, -2.0, 3.0e38, None]),
    (VT.VALUE_TYPE_BOOL, "bool_value", [True, False, None]),
    (VT.VALUE_TYPE_STRING, "string_value", ["", "a", "héllo", "x" * 200, "y" * 20000, None]),
    (VT.VALUE_TYPE_BYTES, "bytes_value", [b"", b"\x00\xff", b"z" * 130, None]),
]


def _expected(field: str, value: object) -> bytes:
    if value is None:
        return b""
    return types_pb2.Value(**{field: value}).SerializeToString()


@pytest.mark.parametrize(("value_type", "field", "values"), _CASES)
def test_scalars_match_protobuf(value_type: int, field: str, values: list[object]) -> None:
    column = pa.array(values, arrow_type(value_type))
    encoded = encode_column(column, value_type).to_pylist()
    assert encoded == [_expected(field, v) for v in values]


def test_sliced_column_uses_its_offset() -> None:
    column = pa.array([1.0, 2.0, 3.0, None, 5.0], pa.float64()).slice(2)
    assert encode_column(column, VT.VALUE_TYPE_FLOAT64).to_pylist() == [
        _expected("double_value", 3.0),
        b"",
        _expected("double_value", 5.0),
    ]


def test_timestamps_match_protobuf() -> None:
    base = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    values = [
        base,
        base + timedelta(microseconds=7),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        None,
    ]
    column = pa.array(values, pa.timestamp("us", tz="UTC"))
    encoded = encode_column(column, VT.VALUE_TYPE_TIMESTAMP).to_pylist()
    for value, data in zip(values, encoded, strict=True):
        if value is None:
            assert data == b""
            continue
        message = types_pb2.Value()
        message.timestamp_value.FromDatetime(value)
        assert data == message.SerializeToString()
        assert decode_value(data) == value


def test_lists_fall_back_to_protobuf() -> None:
    column = pa.array([[1, 2], [], None], pa.list_(pa.int64()))
    encoded = encode_column(column, VT.VALUE_TYPE_INT64_LIST).to_pylist()
    assert [decode_value(b) for b in encoded] == [[1, 2], [], None]


def test_round_trip_through_decode() -> None:
    column = pa.array([1.25, None], pa.float64())
    assert [decode_value(b) for b in encode_column(column, VT.VALUE_TYPE_FLOAT64).to_pylist()] == [
        1.25,
        None,
    ]


def test_redis_keys_match_layout() -> None:
    ints = pa.array([1, -5, 123456789012], pa.int64())
    strs = pa.array(["plain", "a,b{c}:d", "ü"], pa.string())
    keys = encode_redis_keys("proj", "view", [ints, strs]).to_pylist()
    assert keys == [
        redis_key("proj", "view", [i, s])
        for i, s in zip(ints.to_pylist(), strs.to_pylist(), strict=True)
    ]
    raw = pa.array([b"\x00\x01"], pa.binary())
    assert encode_redis_keys("p", "v", [raw]).to_pylist() == [redis_key("p", "v", [b"\x00\x01"])]


def test_timestamps_ascii_micros() -> None:
    column = pa.array([datetime(2024, 1, 1, tzinfo=UTC), None], pa.timestamp("us", tz="UTC"))
    micros = to_micros(column)
    assert encode_timestamps(micros).to_pylist() == [b"1704067200000000", b""]


@pytest.mark.parametrize("with_created", [True, False])
def test_packed_commands_equal_what_redis_py_packs(with_created: bool) -> None:
    import redis

    from skewless.online import writer

    n = 450  # more than two calls
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "event_timestamp": pa.array(
                [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "created_timestamp": pa.array(
                [
                    datetime(2024, 1, 2, tzinfo=UTC) if with_created and i % 3 else None
                    for i in range(n)
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "x": pa.array([float(i) if i % 7 else None for i in range(n)], pa.float64()),
            "s": pa.array([f"v{i}\r\n" for i in range(n)], pa.string()),
        }
    ).slice(5)
    rows = writer.prepare_rows(
        "p",
        "v",
        table,
        join_keys=["id"],
        features=[FeatureSpec("x", VT.VALUE_TYPE_FLOAT64), FeatureSpec("s", VT.VALUE_TYPE_STRING)],
    )
    expire = timedelta(hours=1)
    conn = redis.Connection()
    expected = [
        b"".join(conn.pack_command("EVALSHA", "f" * 40, len(keys), *keys, *argv))
        for keys, argv in writer._calls(rows, expire, cluster=False)
    ]
    assert list(writer._packed_calls(rows, expire, "f" * 40)) == expected
    assert len(expected) == 3


@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=12)), max_size=40),
    st.integers(0, 4),
    st.booleans(),
)
def test_bulk_strings_are_bulk_of_each_value(
    values: list[bytes | None], width: int, one_width: bool
) -> None:
    if one_width:  # every value of one length: the header is one scalar
        values = [None if v is None else (v * width)[:width].ljust(width, b"x") for v in values]
    column = pa.array(values, pa.binary())
    expected = [bulk(v or b"") for v in values]
    assert resp.bulk_strings(column).to_pylist() == expected
    for start in (0, min(3, len(values))):  # a slice: the array's offset is honoured
        assert resp.bulk_strings(column.slice(start)).to_pylist() == expected[start:]
