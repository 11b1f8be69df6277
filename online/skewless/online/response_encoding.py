"""Assembling `GetOnlineFeaturesResponse` wire bytes from the stored `Value` bytes.

The values are never decoded: each stored `skewless.v1.Value` is framed as a
length-delimited `FeatureVector.values` entry, and statuses and event times are
written beside them. Field tags come from the descriptors (`skewless.client._wire`).

`encode_response` is the general path: each feature's column of stored values is
framed by protobuf's own serializer (`_frame_column`, no Python work per value), and
rows sharing one event time get it framed once. One entity row takes a shortcut with
the same bytes (`_encode_single`: no per-row loops; it declines values or vectors of
16 KiB or more); the property tests prove both equal the generated serializer.

Statuses: a row with no `_ts` is NOT_FOUND (event time unset: the epoch); a row whose
event time is older than `now - ttl` is OUTSIDE_MAX_AGE (value withheld, event time
kept; a TTL of 0 never expires); a stored empty value or an absent field is NULL_VALUE;
anything else is PRESENT.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from skewless.client._wire import SMALL_VARINTS, encode_varint, field_tag, length_prefix
from skewless.online.plan import LookupPlan
from skewless.v1 import online_service_pb2, types_pb2

__all__ = ["encode_response", "timestamp_field"]

_PRESENT = int(types_pb2.FEATURE_STATUS_PRESENT)
_NULL = int(types_pb2.FEATURE_STATUS_NULL_VALUE)
_NOT_FOUND = int(types_pb2.FEATURE_STATUS_NOT_FOUND)
_STALE = int(types_pb2.FEATURE_STATUS_OUTSIDE_MAX_AGE)

_Vector = online_service_pb2.FeatureVector
_TAG_RESULTS = field_tag(online_service_pb2.GetOnlineFeaturesResponse, "results")
_TAG_VALUES = field_tag(_Vector, "values")
_TAG_STATUSES = field_tag(_Vector, "statuses")  # packed
_TAG_TIMES = field_tag(_Vector, "event_times")
_TAG_SECONDS = field_tag(timestamp_pb2.Timestamp, "seconds")
_TAG_NANOS = field_tag(timestamp_pb2.Timestamp, "nanos")
_NULL_VALUE_FIELD = _TAG_VALUES + b"\x00"  # an empty Value: null
_UNSET_TIME_FIELD = _TAG_TIMES + b"\x00"  # an empty Timestamp: the epoch, "unset"
_ONE_STATUS = _TAG_STATUSES + b"\x01"  # a packed list of one status (enum values < 128)
_ONE_PRESENT = _ONE_STATUS + bytes([_PRESENT])
# `FeatureVector.values` tag and length prefix, by value length.
_VALUE_HEADS = tuple(_TAG_VALUES + n for n in SMALL_VARINTS)


def timestamp_field(micros: int) -> bytes:
    """Frames a Timestamp (micros since the epoch) as a `FeatureVector.event_times` entry."""
    seconds, rest = divmod(micros, 1_000_000)
    body = _TAG_SECONDS + encode_varint(seconds) if seconds else b""
    if rest:
        body += _TAG_NANOS + encode_varint(rest * 1000)
    return _TAG_TIMES + length_prefix(len(body)) + body


@functools.lru_cache(maxsize=8192)
def _stored_time(ts: bytes) -> tuple[int, bytes]:
    """Parses a stored `_ts` and frames it; cached, as rows often share event times."""
    micros = int(ts)
    return micros, timestamp_field(micros)


def _frames_class() -> Any:
    """A message of one `repeated bytes` field numbered like `FeatureVector.values`.

    A `Value` is framed on the wire as length-delimited bytes, exactly as a `bytes`
    element is: serializing this message with the stored `Value` bytes as its elements
    gives the `values` entries of a `FeatureVector` (an empty element is a null value),
    all in C. It lives in a private descriptor pool.
    """
    fd = descriptor_pb2.FieldDescriptorProto
    values = _Vector.DESCRIPTOR.fields_by_name["values"]
    proto = descriptor_pb2.FileDescriptorProto(
        name="skewless/online/frames.proto", package="skewless.online", syntax="proto3"
    )
    proto.message_type.add(name="Frames").field.add(
        name="values", number=values.number, type=fd.TYPE_BYTES, label=fd.LABEL_REPEATED
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("skewless.online.Frames"))


_Frames = _frames_class()


def _frame_column(column: Sequence[bytes | None]) -> bytes:
    """Frames stored `Value` bytes as repeated `FeatureVector.values` (None: null)."""
    framed: bytes
    try:
        framed = _Frames(values=column).SerializeToString()
    except TypeError:  # an absent field (None): an empty value
        framed = _Frames(values=[v or b"" for v in column]).SerializeToString()
    return framed


def _encode_single(
    plan: LookupPlan, replies: Sequence[Sequence[bytes | None]], now_micros: int
) -> bytes | None:
    """`encode_response` for one entity row: no per-row loops, one `extend` per feature.

    Returns None when a value or vector is 16 KiB or more (the general path frames those).
    """
    lengths, heads = SMALL_VARINTS, _VALUE_HEADS
    rows: list[Sequence[bytes | None]] = []  # a lookup that is not PRESENT: no values
    tails: list[bytes] = []
    tail_sizes: list[int] = []
    null_tails: list[bytes] = []
    for lookup, row in zip(plan.lookups, replies, strict=True):
        ts = row[0]
        if ts is None:
            status, framed = _NOT_FOUND, _UNSET_TIME_FIELD
        else:
            micros, framed = _stored_time(ts)
            stale = lookup.ttl_micros and micros < now_micros - lookup.ttl_micros
            status = _STALE if stale else _PRESENT
        tail = _ONE_PRESENT + framed
        tails.append(tail)
        tail_sizes.append(len(tail))
        if status == _PRESENT:
            rows.append(row)
            null_tails.append(_NULL_VALUE_FIELD + _ONE_STATUS + bytes([_NULL]) + framed)
        else:
            rows.append([None] * len(row))
            null_tails.append(_NULL_VALUE_FIELD + _ONE_STATUS + bytes([status]) + framed)
    out: list[bytes] = []
    extend = out.extend
    try:
        for index, column, name, name_size in plan.single_layout:
            v = rows[index][column]
            if v:
                size = len(v)
                head = heads[size]
                size += name_size + len(head) + tail_sizes[index]
                extend((_TAG_RESULTS, lengths[size], name, head, v, tails[index]))
            else:
                tail = null_tails[index]
                extend((_TAG_RESULTS, lengths[name_size + len(tail)], name, tail))
    except IndexError:  # a value or vector of 16 KiB or more
        return None
    return b"".join(out)


def _lookup_rows(
    times: Sequence[bytes | None], n: int, ttl_micros: int, now_micros: int
) -> tuple[list[int] | None, bytes]:
    """Returns the row statuses (None when all PRESENT) and the framed event times.

    Args:
        times: The stored `_ts` of each row (None: no row).
        n: The number of rows.
        ttl_micros: The view's TTL (0: values never go stale).
        now_micros: The request time.

    """
    first = times[0]
    if first is not None and times.count(first) == n:  # one event time for every row
        micros, frame = _stored_time(first)
        if not ttl_micros or micros >= now_micros - ttl_micros:
            return None, frame * n
        return [_STALE] * n, frame * n
    distinct = set(times)
    if None not in distinct and len(distinct) <= 8:  # rows often share event times
        stored = {ts: _stored_time(cast("bytes", ts)) for ts in distinct}
        if not ttl_micros or min(m for m, _ in stored.values()) >= now_micros - ttl_micros:
            frames = {ts: frame for ts, (_, frame) in stored.items()}
            return None, b"".join(map(frames.__getitem__, times))
    statuses: list[int] | None = None
    framed: list[bytes] = []
    oldest = now_micros - ttl_micros if ttl_micros else None
    for i, ts in enumerate(times):
        if ts is None:
            framed.append(_UNSET_TIME_FIELD)
            status = _NOT_FOUND
        else:
            micros, frame = _stored_time(ts)
            framed.append(frame)
            status = _STALE if oldest is not None and micros < oldest else _PRESENT
        if status != _PRESENT:
            if statuses is None:
                statuses = [_PRESENT] * n
            statuses[i] = status
    return statuses, b"".join(framed)


def encode_response(
    plan: LookupPlan,
    n: int,
    replies: Sequence[Sequence[bytes | None]],
    *,
    now_micros: int,
) -> bytes:
    """Assembles `GetOnlineFeaturesResponse` wire bytes from HMGET replies.

    Args:
        plan: The plan the replies were read with.
        n: The number of entity rows.
        replies: The HMGET replies, lookup by lookup, `n` rows each, each row holding
            `_ts` then the lookup's features.
        now_micros: The request time, for TTL checks.

    Returns:
        The serialized response.

    """
    if n == 1:
        single = _encode_single(plan, replies, now_micros)
        if single is not None:
            return single
    columns: list[Any] = []  # per lookup: the transposed columns
    row_status: list[list[int] | None] = []
    times: list[bytes] = []
    for index, lookup in enumerate(plan.lookups):
        transposed = list(zip(*replies[index * n : (index + 1) * n], strict=True))
        statuses, framed = _lookup_rows(transposed[0], n, lookup.ttl_micros, now_micros)
        row_status.append(statuses)
        times.append(framed)
        columns.append(transposed)
    header = _TAG_STATUSES + length_prefix(n)
    all_present = header + bytes([_PRESENT]) * n
    lengths = SMALL_VARINTS
    out: list[bytes] = []
    for feature in plan.outputs:
        statuses = row_status[feature.lookup]
        column: Sequence[bytes | None] = columns[feature.lookup][feature.column]
        if statuses is None:
            if all(column):
                body = _frame_column(column) + all_present
            else:
                codes = header + bytes([_PRESENT if v else _NULL for v in column])
                body = _frame_column(column) + codes
        else:
            column = [v if s == _PRESENT else b"" for v, s in zip(column, statuses, strict=True)]
            codes = header + bytes(
                [
                    s if s != _PRESENT else (_PRESENT if v else _NULL)
                    for v, s in zip(column, statuses, strict=True)
                ]
            )
            body = _frame_column(column) + codes
        vector = feature.name_field + body + times[feature.lookup]
        size = len(vector)
        out.append(_TAG_RESULTS + (lengths[size] if size < 16384 else encode_varint(size)))
        out.append(vector)
    return b"".join(out)
