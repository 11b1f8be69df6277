"""Value types: how each maps to Arrow and DuckDB, and which incoming types fit it.

The one mapping between skewless value types, Arrow types and DuckDB types, the one rule
for which columns and values may be stored as a declared type (`fits`), and the range of
instants skewless accepts.
"""

from __future__ import annotations

import dataclasses
import enum

import pyarrow as pa
import pyarrow.compute as pc

from skewless.v1 import types_pb2

__all__ = [
    "KEY_TYPES",
    "MAX_TIME_MICROS",
    "MIN_TIME_MICROS",
    "TIME_RANGE",
    "VALUE_FIELDS",
    "ColumnType",
    "TypeFamily",
    "arrow_column_type",
    "arrow_type",
    "arrow_type_fits",
    "duckdb_column_type",
    "duckdb_type",
    "duckdb_type_fits",
    "first_time_out_of_range",
    "fits",
    "key_value_fits",
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

#: The `skewless.v1.Value` field that holds each value type.
VALUE_FIELDS: dict[int, str] = {
    VT.VALUE_TYPE_INT32: "int32_value",
    VT.VALUE_TYPE_INT64: "int64_value",
    VT.VALUE_TYPE_FLOAT32: "float_value",
    VT.VALUE_TYPE_FLOAT64: "double_value",
    VT.VALUE_TYPE_STRING: "string_value",
    VT.VALUE_TYPE_BYTES: "bytes_value",
    VT.VALUE_TYPE_BOOL: "bool_value",
    VT.VALUE_TYPE_TIMESTAMP: "timestamp_value",
    VT.VALUE_TYPE_INT32_LIST: "int32_list_value",
    VT.VALUE_TYPE_INT64_LIST: "int64_list_value",
    VT.VALUE_TYPE_FLOAT32_LIST: "float_list_value",
    VT.VALUE_TYPE_FLOAT64_LIST: "double_list_value",
    VT.VALUE_TYPE_STRING_LIST: "string_list_value",
    VT.VALUE_TYPE_BYTES_LIST: "bytes_list_value",
    VT.VALUE_TYPE_BOOL_LIST: "bool_list_value",
    VT.VALUE_TYPE_TIMESTAMP_LIST: "timestamp_list_value",
}

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


# --- which stored types fit a declared type ------------------------------------------------
#
# One rule decides, for every way rows come in (definitions at `apply`, materialization
# of a view's SQL, pushes, historical entity rows, online request keys), whether a value
# of some type may be stored as a declared value type: the declared type's *family*
# must accept the incoming one. Integers of any width fit INT32/INT64 (each value is
# range-checked when it is cast: out of range is refused, never wrapped); integers,
# decimals and floats fit FLOAT32/FLOAT64; dates and timestamps of any unit fit
# TIMESTAMP (a date is midnight UTC); strings, bytes and booleans fit only their own
# type; a list fits a list type when its elements fit. A column of nulls fits anything.


class TypeFamily(enum.StrEnum):
    """What kind of values a column of some engine's type holds."""

    INTEGER = "integer"
    FLOAT = "float"
    DECIMAL = "decimal"
    STRING = "string"
    BYTES = "bytes"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    DATE = "date"
    LIST = "list"
    NULL = "null"
    OTHER = "other"


@dataclasses.dataclass(frozen=True)
class ColumnType:
    """A column's type as far as fitting is concerned: a family (and a list's element).

    Attributes:
        family: The values' family.
        element: For `LIST`, the element's type.

    """

    family: TypeFamily
    element: ColumnType | None = None


_ACCEPTS: dict[int, frozenset[TypeFamily]] = {
    VT.VALUE_TYPE_INT32: frozenset({TypeFamily.INTEGER}),
    VT.VALUE_TYPE_INT64: frozenset({TypeFamily.INTEGER}),
    VT.VALUE_TYPE_FLOAT32: frozenset({TypeFamily.INTEGER, TypeFamily.FLOAT, TypeFamily.DECIMAL}),
    VT.VALUE_TYPE_FLOAT64: frozenset({TypeFamily.INTEGER, TypeFamily.FLOAT, TypeFamily.DECIMAL}),
    VT.VALUE_TYPE_STRING: frozenset({TypeFamily.STRING}),
    VT.VALUE_TYPE_BYTES: frozenset({TypeFamily.BYTES}),
    VT.VALUE_TYPE_BOOL: frozenset({TypeFamily.BOOL}),
    VT.VALUE_TYPE_TIMESTAMP: frozenset({TypeFamily.TIMESTAMP, TypeFamily.DATE}),
}

_DUCKDB_FAMILIES: dict[str, TypeFamily] = {
    **dict.fromkeys(
        (
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "UHUGEINT",
        ),
        TypeFamily.INTEGER,
    ),
    "FLOAT": TypeFamily.FLOAT,
    "DOUBLE": TypeFamily.FLOAT,
    "VARCHAR": TypeFamily.STRING,
    "BLOB": TypeFamily.BYTES,
    "BOOLEAN": TypeFamily.BOOL,
    **dict.fromkeys(
        (
            "TIMESTAMP",
            "TIMESTAMP WITH TIME ZONE",
            "TIMESTAMP_S",
            "TIMESTAMP_MS",
            "TIMESTAMP_NS",
        ),
        TypeFamily.TIMESTAMP,
    ),
    "DATE": TypeFamily.DATE,
    '"NULL"': TypeFamily.NULL,
    "NULL": TypeFamily.NULL,
}


def duckdb_column_type(sql_type: str) -> ColumnType:
    """The `ColumnType` of a DuckDB type as `DESCRIBE` writes it (`BIGINT`, `DOUBLE[]`)."""
    text = sql_type.strip().upper()
    if text.endswith("[]"):
        return ColumnType(TypeFamily.LIST, duckdb_column_type(text[:-2]))
    if text.startswith("DECIMAL"):
        return ColumnType(TypeFamily.DECIMAL)
    return ColumnType(_DUCKDB_FAMILIES.get(text, TypeFamily.OTHER))


def arrow_column_type(dtype: pa.DataType) -> ColumnType:
    """The `ColumnType` of an Arrow type (dictionaries count as their values)."""
    t = pa.types
    if t.is_dictionary(dtype):
        return arrow_column_type(dtype.value_type)
    if t.is_list(dtype) or t.is_large_list(dtype) or t.is_list_view(dtype):
        return ColumnType(TypeFamily.LIST, arrow_column_type(dtype.value_type))
    checks = (
        (t.is_integer, TypeFamily.INTEGER),
        (t.is_floating, TypeFamily.FLOAT),
        (t.is_decimal, TypeFamily.DECIMAL),
        (
            lambda d: t.is_string(d) or t.is_large_string(d) or t.is_string_view(d),
            TypeFamily.STRING,
        ),
        (
            lambda d: t.is_binary(d) or t.is_large_binary(d) or t.is_binary_view(d),
            TypeFamily.BYTES,
        ),
        (t.is_boolean, TypeFamily.BOOL),
        (t.is_timestamp, TypeFamily.TIMESTAMP),
        (t.is_date, TypeFamily.DATE),
        (t.is_null, TypeFamily.NULL),
    )
    for check, family in checks:
        if check(dtype):
            return ColumnType(TypeFamily(family))
    return ColumnType(TypeFamily.OTHER)


def fits(value_type: int, column: ColumnType) -> bool:
    """Whether values of `column`'s type may be stored as `value_type` (the one rule)."""
    if column.family == TypeFamily.NULL:
        return True
    element = list_element_type(value_type)
    if element is not None:
        return (
            column.family == TypeFamily.LIST
            and column.element is not None
            and fits(element, column.element)
        )
    return column.family in _ACCEPTS.get(value_type, frozenset())


def duckdb_type_fits(value_type: int, sql_type: str) -> bool:
    """Whether a DuckDB column of `sql_type` may be stored as `value_type`."""
    return fits(value_type, duckdb_column_type(sql_type))


def arrow_type_fits(value_type: int, dtype: pa.DataType) -> bool:
    """Whether an Arrow column of `dtype` may be stored as `value_type`."""
    return fits(value_type, arrow_column_type(dtype))


_VALUE_KIND_FAMILIES = {
    "int32_value": TypeFamily.INTEGER,
    "int64_value": TypeFamily.INTEGER,
    "float_value": TypeFamily.FLOAT,
    "double_value": TypeFamily.FLOAT,
    "string_value": TypeFamily.STRING,
    "bytes_value": TypeFamily.BYTES,
    "bool_value": TypeFamily.BOOL,
    "timestamp_value": TypeFamily.TIMESTAMP,
}


def key_value_fits(value_type: int, kind: str | None) -> bool:
    """Whether a request `Value` whose oneof holds `kind` may key a join key of `value_type`.

    Nulls never key anything. Integer values are range-checked by the caller.
    """
    family = _VALUE_KIND_FAMILIES.get(kind or "")
    return value_type in KEY_TYPES and family is not None and fits(value_type, ColumnType(family))


# --- the instants skewless stores ----------------------------------------------------------

#: Earliest instant accepted anywhere (0001-01-01T00:00:00Z, where
#: `google.protobuf.Timestamp` and Python's `datetime` start), in microseconds.
MIN_TIME_MICROS = -62_135_596_800_000_000
#: Latest instant accepted anywhere (9999-12-31T23:59:59.999999Z), in microseconds.
MAX_TIME_MICROS = 253_402_300_799_999_999
#: The accepted range in words, for messages.
TIME_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"


def first_time_out_of_range(micros: pa.Array | pa.ChunkedArray) -> int | None:
    """Returns the first row of an int64 microsecond column outside the accepted range.

    Nulls are not out of range; None when every value is inside.
    """
    outside = pc.or_(pc.less(micros, MIN_TIME_MICROS), pc.greater(micros, MAX_TIME_MICROS))
    if not pc.any(outside).as_py():
        return None
    return int(pc.index(pc.fill_null(outside, False), True).as_py())
