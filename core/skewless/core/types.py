"""The one mapping between skewless value types, Arrow types and DuckDB types."""

from __future__ import annotations

import pyarrow as pa

from skewless.v1 import types_pb2

__all__ = [
    "KEY_TYPES",
    "arrow_type",
    "duckdb_type",
    "list_element_type",
    "parse_value_type",
    "value_type_name",
    "value_type_of_arrow",
]

VT = types_pb2.ValueType

_ARROW: dict[int, pa.DataType] = {
    VT.VALUE_TYPE_INT32: pa.int32(),
    VT.VALUE_TYPE_INT64: pa.int64(),
    VT.VALUE_TYPE_FLOAT32: pa.float32(),
    VT.VALUE_TYPE_FLOAT64: pa.float64(),
    VT.VALUE_TYPE_STRING: pa.string(),
    VT.VALUE_TYPE_BYTES: pa.binary(),
    VT.VALUE_TYPE_BOOL: pa.bool_(),
    VT.VALUE_TYPE_TIMESTAMP: pa.timestamp("us", tz="UTC"),
}
_LISTS = {
    VT.VALUE_TYPE_INT32_LIST: VT.VALUE_TYPE_INT32,
    VT.VALUE_TYPE_INT64_LIST: VT.VALUE_TYPE_INT64,
    VT.VALUE_TYPE_FLOAT32_LIST: VT.VALUE_TYPE_FLOAT32,
    VT.VALUE_TYPE_FLOAT64_LIST: VT.VALUE_TYPE_FLOAT64,
    VT.VALUE_TYPE_STRING_LIST: VT.VALUE_TYPE_STRING,
    VT.VALUE_TYPE_BYTES_LIST: VT.VALUE_TYPE_BYTES,
    VT.VALUE_TYPE_BOOL_LIST: VT.VALUE_TYPE_BOOL,
    VT.VALUE_TYPE_TIMESTAMP_LIST: VT.VALUE_TYPE_TIMESTAMP,
}
for _list, _elem in _LISTS.items():
    _ARROW[_list] = pa.list_(_ARROW[_elem])

_DUCKDB: dict[int, str] = {
    VT.VALUE_TYPE_INT32: "INTEGER",
    VT.VALUE_TYPE_INT64: "BIGINT",
    VT.VALUE_TYPE_FLOAT32: "FLOAT",
    VT.VALUE_TYPE_FLOAT64: "DOUBLE",
    VT.VALUE_TYPE_STRING: "VARCHAR",
    VT.VALUE_TYPE_BYTES: "BLOB",
    VT.VALUE_TYPE_BOOL: "BOOLEAN",
    VT.VALUE_TYPE_TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
}
for _list, _elem in _LISTS.items():
    _DUCKDB[_list] = _DUCKDB[_elem] + "[]"

#: Types a join key may have.
KEY_TYPES = frozenset(
    {VT.VALUE_TYPE_INT32, VT.VALUE_TYPE_INT64, VT.VALUE_TYPE_STRING, VT.VALUE_TYPE_BYTES}
)

# Names accepted in definitions, besides the enum's own names without the prefix.
_ALIASES = {"FLOAT": "FLOAT32", "DOUBLE": "FLOAT64", "INT": "INT64", "BOOLEAN": "BOOL"}


def parse_value_type(name: str) -> int:
    """Parses a type name from a definition (`INT64`, `FLOAT32`, `STRING_LIST`, ...).

    Raises:
        ValueError: The name is not a known type; the message lists the known ones.

    """
    key = name.strip().upper()
    key = _ALIASES.get(key, key)
    full = "VALUE_TYPE_" + key
    if key == "UNSPECIFIED" or full not in VT.keys():  # noqa: SIM118 - enum wrapper, not a dict
        known = ", ".join(value_type_name(v) for v in _ARROW)
        raise ValueError(f"unknown type {name!r}; known types: {known}")
    return int(VT.Value(full))


def list_element_type(value_type: int) -> int | None:
    """Returns the element type of a list type (`INT64_LIST` -> `INT64`), None for scalars."""
    element = _LISTS.get(value_type)  # type: ignore[call-overload]  # enum wrapper keys
    return None if element is None else int(element)


def value_type_name(value_type: int) -> str:
    """Returns the short name of a value type (`INT64`)."""
    return str(VT.Name(VT.ValueType(value_type))).removeprefix("VALUE_TYPE_")


def arrow_type(value_type: int) -> pa.DataType:
    """Returns the Arrow type a value type is stored as."""
    return _ARROW[value_type]


def duckdb_type(value_type: int) -> str:
    """Returns the DuckDB SQL type a value type is stored as."""
    return _DUCKDB[value_type]


def value_type_of_arrow(dtype: pa.DataType) -> int | None:
    """Returns the value type an Arrow type stores exactly, or None if there is none.

    Timestamps of any unit and zone map to TIMESTAMP, large strings/binaries to their
    plain forms; dictionary types map to their value type.
    """
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_timestamp(dtype):
        return int(VT.VALUE_TYPE_TIMESTAMP)
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        dtype = pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        dtype = pa.binary()
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        elem = value_type_of_arrow(dtype.value_type)
        if elem is None:
            return None
        for list_type, elem_type in _LISTS.items():
            if elem_type == elem:
                return int(list_type)
        return None
    for value_type, candidate in _ARROW.items():
        if candidate == dtype:
            return int(value_type)
    return None
