"""Assembling `GetOnlineFeaturesResponse` wire bytes from the stored `Value` bytes.

The values are never decoded: each stored `skewless.v1.Value` is framed as a
length-delimited `FeatureVector.values` entry, and statuses and event times are
written beside them. Field tags come from the descriptors (`skewless.client._wire`).

`encode_response` is the general path; it takes two shortcuts that give the same
bytes (proven by the property tests against the generated serializer): one entity row
(`_encode_single`: no per-row loops; it declines values or vectors of 16 KiB or more),
and columns whose fixed-width values are all set (framed with one `join`).

Statuses: a row with no `_ts` is NOT_FOUND (event time unset: the epoch); a row whose
event time is older than `now - ttl` is OUTSIDE_MAX_AGE (value withheld, event time
kept; a TTL of 0 never expires); a stored empty value or an absent field is NULL_VALUE;
anything else is PRESENT.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import timestamp_pb2

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


def _frame_value(v: bytes | None) -> bytes:
    return _TAG_VALUES + length_prefix(len(v)) + v if v else _NULL_VALUE_FIELD


def _frame_column(column: Sequence[bytes | None], *, all_set: bool = False) -> bytes:
    """Frames stored `Value` bytes as repeated `FeatureVector.values` (null: empty).

    Args:
        column: The stored values of one feature, one per entity row.
        all_set: Every value is non-empty and of a fixed-width type: if all lengths are
            indeed equal, the column is framed with one `join`.

    """
    lengths = SMALL_VARINTS
    if all_set:
        present = cast("Sequence[bytes]", column)  # the caller's promise: no None
        sizes = set(map(len, present))
        if len(sizes) == 1:
            size = sizes.pop()
            if size < 16384:
                separator = _TAG_VALUES + lengths[size]
                return separator + separator.join(present)
    heads = _VALUE_HEADS
    try:
        return b"".join([heads[len(v)] + v if v else _NULL_VALUE_FIELD for v in column])
    except IndexError:  # a value of 16 KiB or more
        return b"".join([_frame_value(v) for v in column])


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
    rows: Sequence[Sequence[bytes | None]], n: int, ttl_micros: int, now_micros: int
) -> tuple[list[int] | None, bytes]:
    """Returns the row statuses (None when all PRESENT) and the framed event times."""
    times = [row[0] for row in rows]
    distinct = set(times)
    if None not in distinct and len(distinct) <= 8:  # rows often share event times
        stored = {ts: _stored_time(cast("bytes", ts)) for ts in distinct}
        if not ttl_micros or min(m for m, _ in stored.values()) >= now_micros - ttl_micros:
            frames = {ts: frame for ts, (_, frame) in stored.items()}
            return None, b"".join(map(frames.__getitem__, times))
    statuses: list[int] | None = None
    framed: list[bytes] = []
    oldest = now_micros - ttl_micros if ttl_micros else None
    for i, row in enumerate(rows):
        ts = row[0]
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
        rows = replies[index * n : (index + 1) * n]
        statuses, framed = _lookup_rows(rows, n, lookup.ttl_micros, now_micros)
        row_status.append(statuses)
        times.append(framed)
        columns.append(list(zip(*rows, strict=True)))
    header = _TAG_STATUSES + length_prefix(n)
    all_present = header + bytes([_PRESENT]) * n
    lengths = SMALL_VARINTS
    out: list[bytes] = []
    for feature in plan.outputs:
        statuses = row_status[feature.lookup]
        column: Sequence[bytes | None] = columns[feature.lookup][feature.column]
        if statuses is None:
            if all(column):
                body = _frame_column(column, all_set=feature.fixed_width) + all_present
            else:
                codes = header + bytes([_PRESENT if v else _NULL for v in column])
                body = _frame_column(column) + codes
        else:
            column = [v if s == _PRESENT else None for v, s in zip(column, statuses, strict=True)]
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
