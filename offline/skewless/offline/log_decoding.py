"""Decoding many logged calls at once, column by column, without a Python loop per value.

The feature logger's general decoder (`skewless.offline.feature_log`) parses every
response into `GetOnlineFeaturesResponse` objects and reads value by value: hundreds of
nanoseconds per value, under the GIL of the serving process. This module reads the same
bytes through *wire views*: private message types, built here from descriptors, that are
wire-compatible with the public ones but declare the fields so that the protobuf parser
(upb, in C) does the gathering:

* `_Response.results` is `repeated bytes`: a call's feature vectors as raw bytes, so
  that the j-th vectors of every call in a batch are concatenated and parsed once;
* in `_Vector`, `values` is a *singular* `_ValueColumn`: the parser merges repeated
  occurrences of a singular message field, so the values of every row of every call land
  in one repeated field per kind (`int64_value`, `double_value`, ...); nulls (empty
  `Value`s) add nothing and are placed back from the statuses; `statuses` is
  `repeated bytes` (one packed run per call, one byte per status), `name` is
  `repeated string` (one per call, checked); a view's event times are read from its
  first feature only (`_PlainVector`, for the others, leaves them out), through `_Times`,
  where `event_times` is `repeated uint64`: the parser reads every `Timestamp` body as a
  packed run and appends all their tags and varints to one array, which numpy assigns
  to the found rows (`_event_times`; bodies it cannot place are read one by one);
* the request's key columns are taken from the request's bytes as received
  (`_Request`, no parse of the whole request) and parsed the same way (`_Keys`).

`decode_batch` returns None whenever the bytes are not exactly what it can read
(a vector in an unexpected place, a row count that differs from the request's, a value
of an unexpected kind, a status above 127): the caller then decodes the batch with the
general path, which gives the same table (proven by property tests) or its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from skewless.core.types import VALUE_FIELDS, arrow_type, list_element_type
from skewless.registry.feature_refs import FeaturePlan
from skewless.v1 import online_service_pb2, types_pb2

__all__ = ["decode_batch"]

VT = types_pb2.ValueType
_UTC_US = pa.timestamp("us", tz="UTC")
_PRESENT = int(types_pb2.FEATURE_STATUS_PRESENT)
_NOT_FOUND = int(types_pb2.FEATURE_STATUS_NOT_FOUND)
_MAX_STATUS = max(int(n) for n in types_pb2.FeatureStatus.values())

#: Status numbers to the names the log stores (`STATUS_NAMES` of the feature log).
_STATUS_NAMES = pa.array(
    [
        next(
            (
                name.removeprefix("FEATURE_STATUS_")
                for name, number in types_pb2.FeatureStatus.items()
                if number == i
            ),
            "UNSPECIFIED",
        )
        for i in range(_MAX_STATUS + 1)
    ]
)


def _wire_views() -> dict[str, Any]:
    """Builds the private wire-view message classes (see the module docstring)."""
    field = descriptor_pb2.FieldDescriptorProto
    repeated, optional = field.LABEL_REPEATED, field.LABEL_OPTIONAL
    package = "skewless_internal.log_decoding"
    file = descriptor_pb2.FileDescriptorProto(
        name="skewless_internal/log_decoding.proto", package=package, syntax="proto3"
    )
    # Every `Value` kind as a repeated field of the same number; messages as raw bytes.
    kinds = file.message_type.add(name="ValueColumn")
    for f in types_pb2.Value.DESCRIPTOR.fields:
        scalar = f.type != f.TYPE_MESSAGE
        kinds.field.add(
            name=f.name,
            number=f.number,
            label=repeated,
            type=f.type
            if scalar and f.type != f.TYPE_ENUM
            else (field.TYPE_INT32 if scalar else field.TYPE_BYTES),
        )
    column = f".{package}.ValueColumn"
    vector = file.message_type.add(name="Vector")
    number = online_service_pb2.FeatureVector.DESCRIPTOR.fields_by_name
    vector.field.add(
        name="name", number=number["name"].number, label=repeated, type=field.TYPE_STRING
    )
    vector.field.add(
        name="values",
        number=number["values"].number,
        label=optional,
        type=field.TYPE_MESSAGE,
        type_name=column,
    )
    vector.field.add(
        name="statuses", number=number["statuses"].number, label=repeated, type=field.TYPE_BYTES
    )
    vector.field.add(
        name="event_times",
        number=number["event_times"].number,
        label=repeated,
        type=field.TYPE_BYTES,
    )
    # The same vector without its event times (a view's other features: only its first
    # feature's times are read), and its event times alone, as one run of varints: a
    # `repeated uint64` field also parses length-delimited (packed) runs, so the parser
    # appends every `Timestamp` body's tags and values to one array.
    plain = file.message_type.add(name="PlainVector")
    plain.field.extend(f for f in vector.field if f.name != "event_times")
    times = file.message_type.add(name="Times")
    times.field.add(
        name="event_times",
        number=number["event_times"].number,
        label=repeated,
        type=field.TYPE_UINT64,
    )
    response = file.message_type.add(name="Response")
    response.field.add(
        name="results",
        number=online_service_pb2.GetOnlineFeaturesResponse.DESCRIPTOR.fields_by_name[
            "results"
        ].number,
        label=repeated,
        type=field.TYPE_BYTES,
    )
    keys = file.message_type.add(name="Keys")
    keys.field.add(
        name="values",
        number=types_pb2.RepeatedValue.DESCRIPTOR.fields_by_name["values"].number,
        label=optional,
        type=field.TYPE_MESSAGE,
        type_name=column,
    )
    # A request's `entities` map as its entries, each value's bytes kept as received.
    entry = file.message_type.add(name="Entry")
    entry.field.add(name="key", number=1, label=optional, type=field.TYPE_STRING)
    entry.field.add(name="value", number=2, label=optional, type=field.TYPE_BYTES)
    request = file.message_type.add(name="Request")
    request.field.add(
        name="entities",
        number=online_service_pb2.GetOnlineFeaturesRequest.DESCRIPTOR.fields_by_name[
            "entities"
        ].number,
        label=repeated,
        type=field.TYPE_MESSAGE,
        type_name=f".{package}.Entry",
    )
    packed = file.message_type.add(name="Packed")
    packed.field.add(name="values", number=1, label=repeated, type=field.TYPE_UINT64)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{m.name}"))
        for m in file.message_type
    }


_VIEWS = _wire_views()
_Response, _Vector, _Keys = _VIEWS["Response"], _VIEWS["Vector"], _VIEWS["Keys"]
_Packed = _VIEWS["Packed"]
_PlainVector, _Times, _Request = _VIEWS["PlainVector"], _VIEWS["Times"], _VIEWS["Request"]

_NUMPY: dict[int, Any] = {
    VT.VALUE_TYPE_INT32: np.int32,
    VT.VALUE_TYPE_INT64: np.int64,
    VT.VALUE_TYPE_FLOAT32: np.float32,
    VT.VALUE_TYPE_FLOAT64: np.float64,
    VT.VALUE_TYPE_BOOL: np.bool_,
}
_LIST_CLASSES: dict[int, Any] = {
    VT.VALUE_TYPE_INT32_LIST: types_pb2.Int32List,
    VT.VALUE_TYPE_INT64_LIST: types_pb2.Int64List,
    VT.VALUE_TYPE_FLOAT32_LIST: types_pb2.FloatList,
    VT.VALUE_TYPE_FLOAT64_LIST: types_pb2.DoubleList,
    VT.VALUE_TYPE_STRING_LIST: types_pb2.StringList,
    VT.VALUE_TYPE_BYTES_LIST: types_pb2.BytesList,
    VT.VALUE_TYPE_BOOL_LIST: types_pb2.BoolList,
    VT.VALUE_TYPE_TIMESTAMP_LIST: types_pb2.TimestampList,
}


def _body_micros(body: bytes) -> int:
    ts = timestamp_pb2.Timestamp.FromString(body)
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


_SECONDS_TAG = 1 << 3  # Timestamp.seconds, varint
_NANOS_TAG = 2 << 3  # Timestamp.nanos, varint
_VARINT_STEPS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _times_micros(bodies: Sequence[bytes]) -> np.ndarray:
    """Microseconds of serialized `Timestamp`s (the empty body: the epoch, 0).

    The bodies are read as one run of varints (`Timestamp` has two varint fields, so a
    body is tag, value, tag, value): each varint is assigned to its body by its byte
    offset. Anything else (another field, a malformed body) is read body by body.
    """
    n = len(bodies)
    out = np.zeros(n, dtype=np.int64)
    blob = b"".join(bodies)
    if not blob:
        return out
    varints = np.array(
        _Packed.FromString(b"\x0a" + _varint(len(blob)) + blob).values, dtype=np.uint64
    )
    ends = np.cumsum(1 + (varints[:, None] >= _VARINT_STEPS[None, :]).sum(axis=1, dtype=np.int64))
    body_ends = np.cumsum(np.fromiter(map(len, bodies), dtype=np.int64, count=n))
    owner = np.searchsorted(body_ends, ends, side="left")
    tags, values = varints[0::2], varints[1::2].view(np.int64)
    if (
        len(varints) % 2
        or int(ends[-1]) != len(blob)
        or not np.array_equal(owner[0::2], owner[1::2])
        or not np.all((tags == _SECONDS_TAG) | (tags == _NANOS_TAG))
    ):
        return np.array([_body_micros(b) for b in bodies], dtype=np.int64)
    rows = owner[1::2]
    seconds = tags == _SECONDS_TAG
    out[rows[seconds]] = values[seconds] * 1_000_000
    out[rows[~seconds]] += values[~seconds] // 1000
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _present_values(container: Any, value_type: int) -> pa.Array:
    """The values of one kind gathered by the parser, as an Arrow array of the type."""
    dtype = arrow_type(value_type)
    numpy_type = _NUMPY.get(value_type)
    if numpy_type is not None:
        return pa.array(np.array(container, dtype=numpy_type), dtype)
    if value_type in (VT.VALUE_TYPE_STRING, VT.VALUE_TYPE_BYTES):
        return pa.array(list(container), dtype)
    if value_type == VT.VALUE_TYPE_TIMESTAMP:
        return pa.array(_times_micros(container), pa.int64()).cast(dtype)
    cls = _LIST_CLASSES[value_type]
    if list_element_type(value_type) == VT.VALUE_TYPE_TIMESTAMP:
        items = [
            [int(t.seconds) * 1_000_000 + int(t.nanos) // 1000 for t in cls.FromString(b).values]
            for b in container
        ]
        return pa.array(items, pa.list_(pa.int64())).cast(dtype)
    return pa.array([list(cls.FromString(b).values) for b in container], dtype)


def _only_kind(column: Any, kind: str) -> Any | None:
    """The repeated field `kind` of a merged column, or None if another kind is set."""
    fields = column.ListFields()
    if not fields:
        return ()
    if len(fields) != 1 or fields[0][0].name != kind:
        return None
    return fields[0][1]


def _spread(values: pa.Array, present: np.ndarray, count: int) -> pa.Array:
    """Places the present rows' values at their rows (null elsewhere)."""
    if count == len(present):
        return values
    slots = np.cumsum(present, dtype=np.int64) - 1
    return values.take(pa.array(slots, pa.int64(), mask=~present))


#: Most response bytes parsed in one piece (larger pieces parse slower: caches).
_PARSE_BYTES = 256 * 1024


def _pieces(responses: Sequence[bytes]) -> list[list[bytes]]:
    pieces: list[list[bytes]] = []
    size = _PARSE_BYTES
    for response in responses:
        if size >= _PARSE_BYTES:
            pieces.append([])
            size = 0
        pieces[-1].append(response)
        size += len(response)
    return pieces


def _entities(request: online_service_pb2.GetOnlineFeaturesRequest | bytes) -> dict[str, bytes]:
    """A request's `entities`: key to its `RepeatedValue` bytes (the last entry wins)."""
    if isinstance(request, bytes):
        return {e.key: e.value for e in _Request.FromString(request).entities}
    return {k: v.SerializeToString() for k, v in request.entities.items()}


def _keys(
    plan: FeaturePlan,
    requests: Sequence[online_service_pb2.GetOnlineFeaturesRequest | bytes],
    rows: int,
) -> list[pa.Array] | None:
    entities = [_entities(r) for r in requests]
    out = []
    for key in plan.join_keys:
        parts = []
        for given in entities:
            part = given.get(key.name)
            if part is None:
                return None
            parts.append(part)
        values = _only_kind(_Keys.FromString(b"".join(parts)).values, VALUE_FIELDS[key.value_type])
        if values is None or len(values) != rows:
            return None  # a null key or one of another kind: the general path reads those
        out.append(_present_values(values, key.value_type))
    return out


def _event_times(joined: bytes, found: np.ndarray) -> np.ndarray | None:
    """A view's served event times in µs (0 where NOT_FOUND), from one feature's vectors.

    The `Timestamp` bodies are read as one run of (tag, value) pairs: a body is a seconds
    pair, optionally followed by a nanos pair, so each seconds pair starts the next body.
    Those bodies are the found rows' (status not NOT_FOUND), in order, when there are as
    many: NOT_FOUND rows carry the unset time (an empty body), as the server sends them.
    Anything else gives None (a found row within the epoch's first second, whose body has
    no seconds; another field; fields out of order): the caller then reads the bodies one
    by one.
    """
    varints = np.array(_Times.FromString(joined).event_times, dtype=np.uint64)
    if len(varints) % 2:
        return None
    tags, values = varints[0::2], varints[1::2].view(np.int64)
    seconds = tags == _SECONDS_TAG
    if not np.all(seconds | (tags == _NANOS_TAG)):
        return None
    found_rows = np.flatnonzero(found)
    if int(seconds.sum()) != len(found_rows) or (len(seconds) and not seconds[0]):
        return None
    owner = found_rows[np.cumsum(seconds) - 1]
    out = np.zeros(len(found), dtype=np.int64)
    out[owner[seconds]] = values[seconds] * 1_000_000
    out[owner[~seconds]] += values[~seconds] // 1000
    return out


def decode_batch(
    plan: FeaturePlan,
    *,
    requests: Sequence[online_service_pb2.GetOnlineFeaturesRequest | bytes],
    responses: Sequence[bytes],
    request_ids: Sequence[str],
    request_times_us: Sequence[int],
    registry_versions: Sequence[int],
    schema: pa.Schema,
) -> pa.Table | None:
    """Decodes calls of one service and plan into log rows, column by column.

    Args:
        plan: The plan the calls were served with.
        requests: The requests, parsed or as received.
        responses: The serialized responses, one per request.
        request_ids: The request ids, one per call.
        request_times_us: The request times, one per call.
        registry_versions: The registry versions, one per call.
        schema: `log_schema(plan)`.

    Returns:
        The rows in `schema`, or None when the bytes are not what this path reads
        (the general path then decodes them).

    """
    calls = len(responses)
    features = plan.features
    width = len(features)
    if calls == 0 or width == 0:
        return None
    parts: list[bytes] = []
    for piece in _pieces(responses):
        parts += _Response.FromString(b"".join(piece)).results
    if len(parts) != calls * width:
        return None
    # Rows per call, from the first feature's packed statuses; every feature must agree.
    columns: list[pa.Array] = []
    times: dict[str, np.ndarray] = {}
    sizes: list[int] | None = None
    rows = 0
    for j, feature in enumerate(features):
        joined = b"".join(parts[j::width])
        first_of_view = feature.view not in times
        # A view's features share its rows' event times: only its first one's are read.
        vector = (_Vector if first_of_view else _PlainVector).FromString(joined)
        names = list(vector.name)
        if len(names) != calls or names.count(names[0]) != calls:
            return None
        runs = vector.statuses
        if len(runs) != calls:
            return None
        run_sizes = list(map(len, runs))
        if sizes is None:
            sizes, rows = run_sizes, sum(run_sizes)
            if rows == 0:
                return None
        elif run_sizes != sizes:
            return None
        codes = np.frombuffer(b"".join(runs), dtype=np.int8)
        if int(codes.min()) < 0 or int(codes.max()) > _MAX_STATUS:
            return None  # a multi-byte status: not one byte per row
        present = codes == _PRESENT
        count = int(present.sum())
        values = _only_kind(vector.values, VALUE_FIELDS[feature.value_type])
        if values is None or len(values) != count:
            return None
        found = codes != _NOT_FOUND
        if first_of_view:
            bodies = vector.event_times
            if len(bodies) != rows:
                return None
            micros = _event_times(joined, found)
            times[feature.view] = _times_micros(bodies) if micros is None else micros
        columns.append(_spread(_present_values(values, feature.value_type), present, count))
        columns.append(codes)  # turned into names below
        columns.append(pa.array(times[feature.view], pa.int64(), mask=~found).cast(_UTC_US))
    assert sizes is not None
    keys = _keys(plan, requests, rows)
    if keys is None:
        return None
    of_call = pa.array(np.repeat(np.arange(calls, dtype=np.int64), sizes))
    meta = [
        pa.array(request_ids, pa.string()).take(of_call),
        pa.array(request_times_us, pa.int64()).take(of_call).cast(_UTC_US),
        pa.array(registry_versions, pa.int64()).take(of_call),
    ]
    arrays: list[pa.Array] = [*meta, *keys]
    for i in range(width):
        value, codes, event_time = columns[3 * i : 3 * i + 3]
        arrays += [value, _STATUS_NAMES.take(pa.array(codes)), event_time]
    return pa.Table.from_arrays(arrays, schema=schema)
