"""Arrow columns to online-store bytes: serialized `skewless.v1.Value`s and Redis keys.

The encoders work a column at a time with Arrow compute kernels (no Python loop per
value for scalar types): a `float64` column becomes the bytes `0x29` + 8 little-endian
bytes per row, an `int64` column a varint per row, and so on, exactly as protobuf
serializes a `Value` whose oneof holds that field. A null becomes the empty bytes, as
the layout in `skewless.online.layout` requires. List types fall back to protobuf.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from skewless.client._wire import field_tag
from skewless.online.layout import view_key_prefix
from skewless.v1 import types_pb2

__all__ = [
    "decode_value",
    "encode_column",
    "encode_redis_keys",
    "encode_timestamps",
    "to_micros",
]

_EMPTY = pa.scalar(b"", pa.binary())
_LITTLE_ENDIAN = sys.byteorder == "little"
_SAFE_KEY_RE = r"^[A-Za-z0-9_.~-]*$"


def _tag(message: type[Message], field: str) -> int:
    """The one-byte key of a `Value` (or `Timestamp`) field, from the descriptors."""
    (tag,) = field_tag(message, field)
    return tag


_TAG_INT32 = _tag(types_pb2.Value, "int32_value")
_TAG_INT64 = _tag(types_pb2.Value, "int64_value")
_TAG_FLOAT = _tag(types_pb2.Value, "float_value")
_TAG_DOUBLE = _tag(types_pb2.Value, "double_value")
_TAG_STRING = _tag(types_pb2.Value, "string_value")
_TAG_BYTES = _tag(types_pb2.Value, "bytes_value")
_TAG_BOOL = _tag(types_pb2.Value, "bool_value")
_TAG_TIMESTAMP = _tag(types_pb2.Value, "timestamp_value")
_TAG_SECONDS = _tag(timestamp_pb2.Timestamp, "seconds")
_TAG_NANOS = _tag(timestamp_pb2.Timestamp, "nanos")


def _byte(value: int) -> pa.Scalar:
    return pa.scalar(bytes([value]), pa.binary())


def _join(*parts: pa.Array | pa.Scalar) -> pa.Array:
    return pc.binary_join_element_wise(*parts, _EMPTY)


def _reinterpret(arr: pa.Array, width: int) -> pa.Array:
    """Views the data buffer of a fixed-width array as `binary` values of `width` bytes."""
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(arr), [None, arr.buffers()[1]], offset=arr.offset
    )
    return fixed.cast(pa.binary())


def _varint(values: pa.Array) -> pa.Array:
    """Encodes int64/uint64 values as protobuf varints (negatives as 10 bytes)."""
    u = pc.cast(values, pa.uint64(), safe=False) if values.type != pa.uint64() else values
    u = pc.fill_null(u, 0)
    parts: list[pa.Array] = []
    zero = pa.scalar(0, pa.uint64())
    for i in range(10):
        shifted = pc.shift_right(u, pa.scalar(7 * i, pa.uint64()))
        group = pc.bit_wise_and(shifted, pa.scalar(0x7F, pa.uint64()))
        rest = pc.shift_right(u, pa.scalar(7 * (i + 1), pa.uint64())) if i < 9 else None
        more = pc.not_equal(rest, zero) if rest is not None else None
        if more is not None:
            group = pc.bit_wise_or(group, pc.if_else(more, pa.scalar(0x80, pa.uint64()), zero))
        as_bytes = _reinterpret(pc.cast(group, pa.uint8()), 1)
        parts.append(
            as_bytes if i == 0 else pc.if_else(pc.not_equal(shifted, zero), as_bytes, _EMPTY)
        )
        if more is None or not pc.any(more).as_py():
            break
    return _join(*parts) if len(parts) > 1 else parts[0]


def _nulls_empty(encoded: pa.Array, source: pa.Array) -> pa.Array:
    if source.null_count == 0:
        return encoded
    return pc.if_else(pc.is_valid(source), encoded, _EMPTY)


def _length_delimited(tag: int, data: pa.Array) -> pa.Array:
    lengths = pc.cast(pc.binary_length(data), pa.int64())
    return _join(_byte(tag), _varint(lengths), pc.fill_null(data, b""))


def to_micros(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Returns a timestamp column as int64 microseconds since the epoch (UTC)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us", tz=column.type.tz))
        return column.view(pa.int64())
    return pc.cast(column, pa.int64())


def _timestamp_body(micros: pa.Array) -> pa.Array:
    """The serialized `google.protobuf.Timestamp` of each value (zero fields omitted)."""
    micros = pc.fill_null(micros, 0)
    truncated = pc.divide(micros, 1_000_000)  # integer division truncates toward zero
    rem = pc.subtract(micros, pc.multiply(truncated, 1_000_000))
    negative = pc.less(rem, 0)
    seconds_i = pc.if_else(negative, pc.subtract(truncated, 1), truncated)
    rem = pc.if_else(negative, pc.add(rem, 1_000_000), rem)
    nanos = pc.multiply(rem, 1000)
    sec_part = pc.if_else(
        pc.not_equal(seconds_i, 0),
        _join(_byte(_TAG_SECONDS), _varint(seconds_i)),
        _EMPTY,
    )
    nanos_part = pc.if_else(
        pc.not_equal(nanos, 0), _join(_byte(_TAG_NANOS), _varint(nanos)), _EMPTY
    )
    return _join(sec_part, nanos_part)


def _encode_with_protobuf(column: pa.Array, value_type: int) -> pa.Array:
    """Fallback for list types: one `Value` message per row."""
    number = types_pb2.ValueType.ValueType(value_type)  # int at run time; the stubs' NewType
    field = types_pb2.ValueType.Name(number).removeprefix("VALUE_TYPE_").lower()
    name = {
        "int32_list": "int32_list_value",
        "int64_list": "int64_list_value",
        "float32_list": "float_list_value",
        "float64_list": "double_list_value",
        "string_list": "string_list_value",
        "bytes_list": "bytes_list_value",
        "bool_list": "bool_list_value",
        "timestamp_list": "timestamp_list_value",
    }[field]
    out: list[bytes] = []
    for item in column.to_pylist():
        if item is None:
            out.append(b"")
            continue
        value = types_pb2.Value()
        target = getattr(value, name)
        if name == "timestamp_list_value":
            for ts in item:
                stamp = target.values.add()
                if ts is not None:
                    stamp.FromDatetime(ts)
        else:
            target.values.extend(item)
        out.append(value.SerializeToString())
    return pa.array(out, pa.binary())


def encode_column(column: pa.Array | pa.ChunkedArray, value_type: int) -> pa.Array:
    """Serializes each value of a column as a `skewless.v1.Value` of `value_type`.

    Args:
        column: Values already cast to the Arrow type of `value_type`
            (`skewless.core.types.arrow_type`).
        value_type: The declared `skewless.v1.ValueType`.

    Returns:
        A `binary` array of the same length; nulls are empty bytes.

    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    vt = types_pb2.ValueType
    if len(column) == 0:
        return pa.array([], pa.binary())
    if value_type == vt.VALUE_TYPE_FLOAT64 and _LITTLE_ENDIAN:
        encoded = _join(_byte(_TAG_DOUBLE), _reinterpret(column, 8))
    elif value_type == vt.VALUE_TYPE_FLOAT32 and _LITTLE_ENDIAN:
        encoded = _join(_byte(_TAG_FLOAT), _reinterpret(column, 4))
    elif value_type == vt.VALUE_TYPE_INT64:
        encoded = _join(_byte(_TAG_INT64), _varint(column))
    elif value_type == vt.VALUE_TYPE_INT32:
        encoded = _join(_byte(_TAG_INT32), _varint(pc.cast(column, pa.int64())))
    elif value_type == vt.VALUE_TYPE_BOOL:
        encoded = pc.if_else(
            pc.fill_null(column, False),
            pa.scalar(bytes([_TAG_BOOL, 1]), pa.binary()),
            pa.scalar(bytes([_TAG_BOOL, 0]), pa.binary()),
        )
    elif value_type == vt.VALUE_TYPE_STRING:
        encoded = _length_delimited(_TAG_STRING, pc.cast(column, pa.binary()))
    elif value_type == vt.VALUE_TYPE_BYTES:
        encoded = _length_delimited(_TAG_BYTES, pc.cast(column, pa.binary()))
    elif value_type == vt.VALUE_TYPE_TIMESTAMP:
        encoded = _length_delimited(_TAG_TIMESTAMP, _timestamp_body(to_micros(column)))
    elif value_type in (vt.VALUE_TYPE_FLOAT64, vt.VALUE_TYPE_FLOAT32):  # big-endian hosts
        name = "double_value" if value_type == vt.VALUE_TYPE_FLOAT64 else "float_value"
        encoded = pa.array(
            [
                types_pb2.Value(**{name: v}).SerializeToString() if v is not None else b""
                for v in column.to_pylist()
            ],
            pa.binary(),
        )
    else:
        return _encode_with_protobuf(column, value_type)
    return _nulls_empty(encoded, column)


def encode_timestamps(micros: pa.Array) -> pa.Array:
    """Encodes int64 microseconds as ASCII decimal bytes (nulls become empty bytes)."""
    return pc.fill_null(pc.cast(pc.cast(micros, pa.string()), pa.binary()), b"")


def _key_part(column: pa.Array) -> pa.Array:
    """Encodes one join key column as `skewless.online.layout.encode_key_part` does."""
    if pa.types.is_integer(column.type):
        return pc.cast(pc.cast(column, pa.string()), pa.binary())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
        if pc.all(pc.match_substring_regex(column, _SAFE_KEY_RE)).as_py() is not False:
            return pc.cast(column, pa.binary())
        return pa.array([quote(v, safe="").encode() for v in column.to_pylist()], pa.binary())
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return pa.array([b"0x" + v.hex().encode() for v in column.to_pylist()], pa.binary())
    raise TypeError(f"unsupported join key type {column.type}")


def encode_redis_keys(
    project: str, view: str, key_columns: Sequence[pa.Array | pa.ChunkedArray]
) -> pa.Array:
    """Builds the Redis key of every row, as `skewless.online.layout.redis_key` does.

    Args:
        project: The project name.
        view: The feature view name.
        key_columns: The view's join key columns in join key order (no nulls).

    Returns:
        A `binary` array with one key per row.

    """
    parts: list[pa.Array | pa.Scalar] = []
    for i, column in enumerate(key_columns):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if i:
            parts.append(pa.scalar(b",", pa.binary()))
        parts.append(_key_part(column))
    prefix = pa.scalar(view_key_prefix(project, view) + b"{", pa.binary())
    return _join(prefix, *parts, pa.scalar(b"}", pa.binary()))


def decode_value(data: bytes) -> object:
    """Decodes stored bytes to a Python value (None for null); for tests and tools."""
    if not data:
        return None
    value = types_pb2.Value.FromString(data)
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=UTC)
    result = getattr(value, kind)
    if kind.endswith("_list_value"):
        return list(result.values)
    return result
