"""The lookup form's entity rows: CSV text to the key columns of an online request.

The text is a header of join keys, then one row per line.

Each cell is converted by its join key's declared type (known from the registry):
INT32/INT64 cells must be integers, STRING cells are kept as written, BYTES cells are
hex when written `0x...` and UTF-8 otherwise. A column the registry does not declare is
sent as an integer when it looks like one and as a string otherwise, so that the server,
not the console, says what is wrong with it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass

from skewless.v1 import types_pb2

__all__ = ["EntityRows", "EntityRowsError", "parse_entity_rows"]

_INTEGER = re.compile(r"[+-]?\d+")
_VT = types_pb2.ValueType
_INT_TYPES = {_VT.VALUE_TYPE_INT32, _VT.VALUE_TYPE_INT64}


class EntityRowsError(ValueError):
    """The entity rows cannot be read; the message says where and why."""


@dataclass(frozen=True)
class EntityRows:
    """Parsed entity rows.

    Attributes:
        keys: The join key names, in header order.
        rows: The cells as written, one list per row.
        columns: The typed values per join key, for the request.

    """

    keys: list[str]
    rows: list[list[str]]
    columns: dict[str, list[types_pb2.Value]]


def _value(cell: str, key: str, value_type: int | None, where: str) -> types_pb2.Value:
    if value_type in _INT_TYPES or (value_type is None and _INTEGER.fullmatch(cell)):
        if not _INTEGER.fullmatch(cell):
            raise EntityRowsError(
                f"{where}: {cell[:40]!r} is not an integer ({key} is an integer key)"
            )
        if value_type == _VT.VALUE_TYPE_INT32:
            return types_pb2.Value(int32_value=int(cell))
        return types_pb2.Value(int64_value=int(cell))
    if value_type == _VT.VALUE_TYPE_BYTES:
        if cell.startswith("0x"):
            try:
                return types_pb2.Value(bytes_value=bytes.fromhex(cell[2:]))
            except ValueError:
                raise EntityRowsError(f"{where}: {cell[:40]!r} is not hexadecimal") from None
        return types_pb2.Value(bytes_value=cell.encode())
    return types_pb2.Value(string_value=cell)


def parse_entity_rows(text: str, key_types: Mapping[str, int]) -> EntityRows:
    """Reads CSV entity rows.

    Args:
        text: A header line of join key names, then one line per entity row; blank
            lines are ignored, cells may be quoted.
        key_types: The declared `ValueType` of each known join key.

    Returns:
        The rows and their typed key columns.

    Raises:
        EntityRowsError: No header or no row, a repeated key, a row of the wrong
            length, or a cell that does not fit its key's type.

    """
    lines = [line for line in text.splitlines() if line.strip()]
    records = list(csv.reader(lines, skipinitialspace=True))
    if not records:
        raise EntityRowsError("enter a header line of join keys, then one row per line")
    keys = [k.strip() for k in records[0]]
    if any(not k for k in keys):
        raise EntityRowsError("the header has an empty join key name")
    if len(set(keys)) != len(keys):
        raise EntityRowsError("the header names a join key twice")
    if len(records) == 1:
        raise EntityRowsError("enter at least one entity row below the header")
    rows: list[list[str]] = []
    columns: dict[str, list[types_pb2.Value]] = {k: [] for k in keys}
    for number, record in enumerate(records[1:], start=1):
        cells = [c.strip() for c in record]
        if len(cells) != len(keys):
            raise EntityRowsError(
                f"row {number} has {len(cells)} value(s), the header {len(keys)} key(s)"
            )
        for key, cell in zip(keys, cells, strict=True):
            columns[key].append(_value(cell, key, key_types.get(key), f"row {number}, {key}"))
        rows.append(cells)
    return EntityRows(keys=keys, rows=rows, columns=columns)
