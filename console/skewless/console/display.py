"""How API values read on a page: types, durations, instants, feature values, states.

Pure functions, registered as Jinja filters by `skewless.console.app`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from skewless.client.online import STATUS_NAMES, value_to_python
from skewless.v1 import materialization_service_pb2, monitoring_service_pb2, registry_pb2, types_pb2

__all__ = [
    "FILTERS",
    "age",
    "duration",
    "feature_value",
    "file_format",
    "job_state",
    "skew_category",
    "source_kind",
    "status_name",
    "to_datetime",
    "type_name",
    "when",
]

_TYPE_NAMES: dict[int, str] = {
    n: name.removeprefix("VALUE_TYPE_") for name, n in types_pb2.ValueType.items()
}
_JOB_STATES: dict[int, str] = {
    n: name.removeprefix("JOB_STATE_") for name, n in materialization_service_pb2.JobState.items()
}
_SKEW_CATEGORIES: dict[int, str] = {
    n: name.removeprefix("SKEW_CATEGORY_")
    for name, n in monitoring_service_pb2.SkewCategory.items()
}
_FORMATS: dict[int, str] = {
    n: name.removeprefix("FILE_FORMAT_") for name, n in registry_pb2.FileFormat.items()
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def type_name(value_type: int) -> str:
    """`VALUE_TYPE_FLOAT64` as `FLOAT64`."""
    return _TYPE_NAMES.get(value_type, str(value_type))


def job_state(state: int) -> str:
    """`JOB_STATE_SUCCEEDED` as `SUCCEEDED`."""
    return _JOB_STATES.get(state, str(state))


def skew_category(category: int) -> str:
    """`SKEW_CATEGORY_VALUE_MISMATCH` as `VALUE_MISMATCH`."""
    return _SKEW_CATEGORIES.get(category, str(category))


def status_name(status: int) -> str:
    """`FEATURE_STATUS_PRESENT` as `PRESENT`."""
    return STATUS_NAMES.get(status, str(status))


def file_format(fmt: int) -> str:
    """A file source's format; `inferred` when unset."""
    return "inferred from the extension" if fmt == 0 else _FORMATS.get(fmt, str(fmt))


def source_kind(source: registry_pb2.DataSource) -> str:
    """`file`, `sql` or `push`."""
    return source.WhichOneof("kind") or "unset"


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    parts: list[str] = []
    rest = int(seconds)
    for unit, size in _UNITS:
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def duration(value: duration_pb2.Duration | dt.timedelta) -> str:
    """A duration as `2d`, `1h 30min` or `250 ms`; an empty string for zero."""
    seconds = (
        value.total_seconds()
        if isinstance(value, dt.timedelta)
        else value.seconds + value.nanos / 1e9
    )
    return "" if seconds == 0 else _span(seconds)


def to_datetime(value: timestamp_pb2.Timestamp | dt.datetime | None) -> dt.datetime | None:
    """A timestamp as an aware UTC datetime; None when unset."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if value.seconds == 0 and value.nanos == 0:
        return None
    return _EPOCH + dt.timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def when(value: timestamp_pb2.Timestamp | dt.datetime | None) -> str:
    """An instant as `2026-11-20 06:15:00 UTC` (`—` when unset)."""
    moment = to_datetime(value)
    if moment is None:
        return "—"
    moment = moment.astimezone(dt.UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + " UTC"


def age(value: timestamp_pb2.Timestamp | dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago an instant was (`3h 5min ago`, `in 2d`); empty when unset."""
    moment = to_datetime(value)
    if moment is None:
        return ""
    seconds = ((now or dt.datetime.now(dt.UTC)) - moment).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"{_span(seconds)} ago" if seconds > 0 else f"in {_span(seconds)}"


def _python(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex() if value else '""'
    if isinstance(value, dt.datetime):
        return when(value)
    if isinstance(value, list):
        return "[" + ", ".join(_python(v) for v in value) + "]"
    return str(value)


def feature_value(value: types_pb2.Value) -> str:
    """A served value as text: `0.42`, `"premium"` as `premium`, `null`, `[1, 2]`, `0x0a`."""
    return _python(value_to_python(value))


#: Jinja filters, by name.
FILTERS = {
    "age": age,
    "duration": duration,
    "feature_value": feature_value,
    "file_format": file_format,
    "job_state": job_state,
    "skew_category": skew_category,
    "source_kind": source_kind,
    "status_name": status_name,
    "type_name": type_name,
    "when": when,
}
