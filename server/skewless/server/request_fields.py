"""Reading request fields whose wire form allows values the product does not."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from skewless.core.errors import InvalidArgumentError
from skewless.core.types import MAX_TIME_MICROS, MIN_TIME_MICROS, TIME_RANGE

__all__ = ["timestamp_argument"]

_MIN_SECONDS = MIN_TIME_MICROS // 1_000_000
_MAX_SECONDS = MAX_TIME_MICROS // 1_000_000


def timestamp_argument(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """Returns a request's `google.protobuf.Timestamp` as an aware UTC datetime.

    Raises:
        InvalidArgumentError: `seconds` is outside 0001-01-01 to 9999-12-31, or `nanos`
            outside [0, 999,999,999] (the ranges `google.protobuf.Timestamp` defines).

    """
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS or not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgumentError(
            f"{field} is not a valid timestamp (seconds={value.seconds}, nanos={value.nanos}): "
            f"it must lie in {TIME_RANGE}, with nanos in [0, 999999999]",
            field=field,
            reason="INVALID_TIMESTAMP",
            metadata={"seconds": str(value.seconds), "nanos": str(value.nanos)},
        )
    return value.ToDatetime(tzinfo=UTC)
