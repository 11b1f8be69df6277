"""Entity keys of an online read: the request's entity columns to Redis key suffixes.

Each feature view's Redis key ends with `{<entity key>}` (`skewless.online.layout`):
the view's join key values in order, each encoded by `encode_key_part`, joined with
",". `encode_entity_keys` validates the request's columns (one per join key, equal
lengths, values that fit the declared key types) and encodes the suffixes of every
distinct key set of the plan. INT64 keys sent as int64 values, the common case, take a
fast path (a column of many rows is read from its serialized bytes, without Python work
per value); the property tests prove it equals the general one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from skewless.client._wire import field_tag
from skewless.core.errors import (
    InvalidArgumentError,
    ResourceExhaustedError,
    quoted,
    shown,
)
from skewless.core.types import key_value_fits, value_type_name
from skewless.online.layout import encode_key_part
from skewless.online.plan import LookupPlan
from skewless.v1 import types_pb2

__all__ = ["MAX_ENTITY_ROWS", "EntityKeys", "encode_entity_keys"]

#: Most entity rows one `GetOnlineFeatures` call may ask for.
MAX_ENTITY_ROWS = 1000

_INT32 = int(types_pb2.VALUE_TYPE_INT32)
_INT64 = int(types_pb2.VALUE_TYPE_INT64)


@dataclass(frozen=True)
class EntityKeys:
    """The encoded entity keys of one request.

    Attributes:
        rows: The number of entity rows.
        suffixes: Per `LookupPlan.key_sets` entry, the `{entity key}` suffix of every
            row's Redis key, in row order.

    """

    rows: int
    suffixes: list[list[bytes]]


def _wrong_key_type(key: str, value_type: int, got: str, row: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"entity row {row} of join key {quoted(key)} is {got}, but it is declared "
        f"{value_type_name(value_type)}; send values of that type (no nulls)",
        field=f"entities[{shown(key, 64)}]",
        reason="WRONG_KEY_TYPE",
        metadata={
            "join_key": key,
            "row": str(row),
            "expected": value_type_name(value_type),
            "got": got,
        },
    )


def _key_parts(values: Sequence[types_pb2.Value], key: str, value_type: int) -> list[str]:
    """Each value's encoded key part; refuses values that do not fit the key's type.

    Which values fit is `skewless.core.types.key_value_fits`: an INT64 key takes int64
    or int32 values, an INT32 key int32 values and int64 values within its range
    (clients in dynamically typed languages send int64), STRING and BYTES keys their own.
    """
    parts: list[str] = []
    for i, value in enumerate(values):
        kind = value.WhichOneof("kind")
        if not key_value_fits(value_type, kind):
            got = "null" if kind in (None, "null_value") else str(kind)
            raise _wrong_key_type(key, value_type, got, i)
        item = getattr(value, str(kind))
        if value_type == _INT32 and not -(2**31) <= item < 2**31:
            raise _wrong_key_type(key, value_type, f"{kind} {item} (out of range)", i)
        parts.append(encode_key_part(item))
    return parts


def _varints_class() -> Any:
    """A message of one `repeated int64` field numbered like `RepeatedValue.values`.

    Parsed from the bytes of a `RepeatedValue` whose every `Value` holds exactly one
    `int64_value`, each value's bytes read as a packed chunk of two varints: the tag of
    `int64_value`, then the value. It lives in a private descriptor pool.
    """
    fd = descriptor_pb2.FieldDescriptorProto
    values = types_pb2.RepeatedValue.DESCRIPTOR.fields_by_name["values"]
    proto = descriptor_pb2.FileDescriptorProto(
        name="skewless/online/varints.proto", package="skewless.online", syntax="proto3"
    )
    proto.message_type.add(name="Varints").field.add(
        name="values", number=values.number, type=fd.TYPE_INT64, label=fd.LABEL_REPEATED
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("skewless.online.Varints"))


def _int64_column_pattern() -> re.Pattern[bytes]:
    """Matches exactly the bytes of a `RepeatedValue` of values that each hold one int64.

    Each value is the `values` tag, a one-byte length, the `int64_value` tag and a
    varint of `length - 1` bytes (1 to 10): nothing else, no other field, no null.
    """
    values = field_tag(types_pb2.RepeatedValue, "values")
    int64 = field_tag(types_pb2.Value, "int64_value")
    one = [
        re.escape(values + bytes([k + 2]) + int64) + (rb"[\x80-\xff]{%d}" % k) + rb"[\x00-\x7f]"
        for k in range(10)
    ]
    return re.compile(b"(?:" + b"|".join(one) + b")*")


_Varints = _varints_class()
_INT64_COLUMN = _int64_column_pattern()
#: From this many rows on, an INT64 column is read from its bytes (below, value by value).
_RAW_MIN_ROWS = 8


def _int64_tags(column: types_pb2.RepeatedValue) -> list[bytes] | None:
    """The `{<decimal>}` key suffixes of an INT64 column whose values are all int64.

    A column of `_RAW_MIN_ROWS` rows or more is read from its serialized bytes (one C
    call each to serialize, check and parse them; no Python work per value but the
    decimal formatting); a shorter one value by value.

    Returns:
        None when some value is of another kind (the general path validates those).

    """
    values = column.values
    if len(values) < _RAW_MIN_ROWS:
        return _int64_tags_by_value(values)
    data = column.SerializeToString()
    if _INT64_COLUMN.fullmatch(data) is None:
        return _int64_tags_by_value(values)  # e.g. a long varint length: no shortcut
    pairs = _Varints.FromString(data).values  # tag, value, tag, value, ...
    return list(map(b"{%d}".__mod__, pairs[1::2]))


def _int64_tags_by_value(values: Sequence[types_pb2.Value]) -> list[bytes] | None:
    """`_int64_tags` value by value (None when some value is not an int64)."""
    tags: list[bytes] = []
    append = tags.append
    for value in values:
        if value.WhichOneof("kind") != "int64_value":
            return None
        append(b"{%d}" % value.int64_value)
    return tags


def _int64_keys_fast(
    names: tuple[str, ...], entities: Mapping[str, types_pb2.RepeatedValue]
) -> EntityKeys | None:
    """`encode_entity_keys` for INT64 join keys with valid int64 columns only.

    Returns:
        None for anything else (the general path then validates and words the error).

    """
    encoded: list[list[bytes]] = []
    n = -1
    for name in names:
        if name not in entities:
            return None
        column = entities[name]
        values = column.values
        if len(values) != n:
            if n != -1 or not 0 < len(values) <= MAX_ENTITY_ROWS:
                return None
            n = len(values)
        if n == 1:  # indexing is cheaper than iterating a repeated field
            value = values[0]
            if value.WhichOneof("kind") != "int64_value":
                return None
            encoded.append([b"{%d}" % value.int64_value])
            continue
        tags = _int64_tags(column)
        if tags is None:
            return None
        encoded.append(tags)
    return EntityKeys(n, encoded)


def encode_entity_keys(
    plan: LookupPlan, entities: Mapping[str, types_pb2.RepeatedValue]
) -> EntityKeys:
    """Validates the entity columns and encodes the entity keys of every key set.

    Args:
        plan: The compiled plan of the request.
        entities: The request's `entities` map (join key name to a column of values).

    Returns:
        The number of entity rows and, per `plan.key_sets` entry, the `{entity key}`
        suffix of every row's Redis key, in row order. INT64-only plans whose columns
        hold int64 values take a fast path with the same result.

    Raises:
        InvalidArgumentError: No rows, unequal column lengths, a missing join key or a
            value of the wrong type (the field names `entities[<key>]`).
        ResourceExhaustedError: More than `MAX_ENTITY_ROWS` rows.

    """
    simple = plan.int64_keys
    if simple is not None and len(entities) == len(simple):
        fast = _int64_keys_fast(simple, entities)
        if fast is not None:
            return fast
    if not entities:
        raise InvalidArgumentError(
            "no entities: send one column per join key ("
            + ", ".join(sorted(plan.join_keys))
            + ") with one value per entity row",
            field="entities",
            reason="NO_ENTITIES",
            metadata={"join_keys": ",".join(sorted(plan.join_keys))},
        )
    columns = {name: column.values for name, column in entities.items()}
    lengths = {name: len(values) for name, values in columns.items()}
    n = max(lengths.values())
    for name, length in lengths.items():
        if length != n:
            raise InvalidArgumentError(
                f"entity column {quoted(name)} has {length} values but another has {n}; "
                "every column must have one value per entity row",
                field=f"entities[{shown(name, 64)}]",
                reason="UNEQUAL_ENTITY_COLUMNS",
                metadata={"join_key": name, "length": str(length), "expected": str(n)},
            )
    if n == 0:
        raise InvalidArgumentError(
            "no entity rows: the entity columns are empty",
            field="entities",
            reason="NO_ENTITIES",
        )
    if n > MAX_ENTITY_ROWS:
        raise ResourceExhaustedError(
            f"{n} entity rows exceed the limit of {MAX_ENTITY_ROWS} per GetOnlineFeatures "
            "call; split the request",
            reason="TOO_MANY_ENTITY_ROWS",
            metadata={"limit": str(MAX_ENTITY_ROWS), "rows": str(n)},
        )
    for name in plan.join_keys:
        if name not in columns:
            raise InvalidArgumentError(
                f"missing join key {name!r}: the requested features need the entity "
                f"columns {', '.join(sorted(plan.join_keys))}",
                field=f"entities[{name}]",
                reason="MISSING_JOIN_KEY",
                metadata={"join_key": name},
            )
    parts: dict[str, list[str]] = {}

    def key_parts(name: str) -> list[str]:
        found = parts.get(name)
        if found is None:
            found = parts[name] = _key_parts(columns[name], name, plan.join_keys[name])
        return found

    encoded: list[list[bytes]] = []
    for key_set in plan.key_sets:
        if len(key_set.names) == 1:
            name = key_set.names[0]
            tags = _int64_tags(entities[name]) if key_set.value_types[0] == _INT64 else None
            if tags is None:
                tags = [("{" + p + "}").encode() for p in key_parts(name)]
            encoded.append(tags)
        else:
            rows = zip(*(key_parts(name) for name in key_set.names), strict=True)
            encoded.append([("{" + ",".join(row) + "}").encode() for row in rows])
    return EntityKeys(n, encoded)
