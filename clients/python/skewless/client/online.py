"""Online lookups: entity columns to a request, a response to columns, rows or Arrow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from skewless.v1 import online_service_pb2, types_pb2

__all__ = [
    "STATUS_NAMES",
    "Entities",
    "FeatureColumn",
    "OnlineFeatures",
    "build_online_request",
    "entity_columns",
    "to_value",
    "value_to_python",
]

#: Entity rows as columns (join key to values) or as a sequence of row mappings.
Entities = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]

#: Short status names by `FeatureStatus` number (`PRESENT`, `NULL_VALUE`, ...).
STATUS_NAMES: dict[int, str] = {
    number: name.removeprefix("FEATURE_STATUS_") for name, number in types_pb2.FeatureStatus.items()
}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NOT_FOUND = types_pb2.FEATURE_STATUS_NOT_FOUND


def to_value(value: Any) -> types_pb2.Value:
    """Converts a Python entity key value to a `Value` (int, str, bytes or a `Value`).

    Raises:
        TypeError: The value has no key type (floats, booleans, None, ...).

    """
    if isinstance(value, types_pb2.Value):
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{value!r} is not a valid entity key value (use int, str or bytes)")
    if isinstance(value, str):
        return types_pb2.Value(string_value=value)
    if isinstance(value, bytes | bytearray):
        return types_pb2.Value(bytes_value=bytes(value))
    if hasattr(value, "__index__"):  # int and numpy integers
        return types_pb2.Value(int64_value=value.__index__())
    raise TypeError(
        f"{type(value).__name__} is not a valid entity key type (use int, str or bytes)"
    )


def entity_columns(entities: Entities) -> dict[str, list[Any]]:
    """Returns entity rows as columns (join key to values), keeping key order."""
    if isinstance(entities, Mapping):
        return {str(key): list(values) for key, values in entities.items()}
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(entities):
        if i == 0:
            columns = {str(key): [] for key in row}
        if set(row) != set(columns):
            raise ValueError(f"entity row {i} has keys {sorted(row)}, row 0 has {sorted(columns)}")
        for key, value in row.items():
            columns[str(key)].append(value)
    return columns


def build_online_request(
    entities: Entities,
    *,
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
    full_feature_names: bool = False,
) -> online_service_pb2.GetOnlineFeaturesRequest:
    """Builds a `GetOnlineFeaturesRequest`.

    Args:
        entities: Join key columns (`{"driver_id": [1, 2]}`) or rows (`[{"driver_id": 1}]`).
        feature_service: A feature service name; exclusive with `features`.
        features: `view:feature` or `view` references; exclusive with `feature_service`.
        full_feature_names: Name results `view__feature`.

    Raises:
        ValueError: Neither or both of `feature_service` and `features` were given.

    """
    if (feature_service is None) == (features is None):
        raise ValueError("pass exactly one of feature_service= or features=")
    request = online_service_pb2.GetOnlineFeaturesRequest(full_feature_names=full_feature_names)
    if feature_service is not None:
        request.feature_service = feature_service
    else:
        request.features.features.extend(features or [])
    for key, values in entity_columns(entities).items():
        request.entities[key].values.extend(to_value(v) for v in values)
    return request


def _timestamp(ts: Any) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def value_to_python(value: types_pb2.Value) -> Any:
    """Converts a `Value` to Python (None for null; datetimes in UTC; lists as lists)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "timestamp_value":
        return _timestamp(value.timestamp_value)
    if kind == "timestamp_list_value":
        return [_timestamp(t) for t in value.timestamp_list_value.values]
    if kind.endswith("_list_value"):
        return list(getattr(value, kind).values)
    return getattr(value, kind)


_ARROW_BY_KIND: dict[str, pa.DataType] = {
    "int32_value": pa.int32(),
    "int64_value": pa.int64(),
    "float_value": pa.float32(),
    "double_value": pa.float64(),
    "string_value": pa.string(),
    "bytes_value": pa.binary(),
    "bool_value": pa.bool_(),
    "timestamp_value": pa.timestamp("us", tz="UTC"),
    "int32_list_value": pa.list_(pa.int32()),
    "int64_list_value": pa.list_(pa.int64()),
    "float_list_value": pa.list_(pa.float32()),
    "double_list_value": pa.list_(pa.float64()),
    "string_list_value": pa.list_(pa.string()),
    "bytes_list_value": pa.list_(pa.binary()),
    "bool_list_value": pa.list_(pa.bool_()),
    "timestamp_list_value": pa.list_(pa.timestamp("us", tz="UTC")),
}


class FeatureColumn:
    """One feature's results for every entity row.

    Attributes:
        name: The feature's name in the response.
        values: Python values, None unless the status is PRESENT.
        statuses: Status names per row: PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE.
        event_times: Event time per row (UTC), None when NOT_FOUND.
        arrow_type: The Arrow type of the values (null when no value is present).

    """

    def __init__(self, vector: online_service_pb2.FeatureVector) -> None:
        """Decodes one `FeatureVector`."""
        self.name: str = vector.name
        self.values: list[Any] = [value_to_python(v) for v in vector.values]
        self.statuses: list[str] = [STATUS_NAMES.get(s, str(s)) for s in vector.statuses]
        self.event_times: list[dt.datetime | None] = [
            None if status == _NOT_FOUND else _timestamp(ts)
            for status, ts in zip(vector.statuses, vector.event_times, strict=False)
        ]
        kinds = [str(v.WhichOneof("kind")) for v in vector.values if v.WhichOneof("kind")]
        kinds = [k for k in kinds if k != "null_value"]
        self.arrow_type: pa.DataType = _ARROW_BY_KIND[kinds[0]] if kinds else pa.null()


class OnlineFeatures:
    """The result of `Client.get_online_features`.

    Attributes:
        response: The raw `GetOnlineFeaturesResponse`.
        entities: The request's entity columns (Python values), in request order.
        features: One `FeatureColumn` per returned feature, in response order.

    """

    def __init__(
        self,
        response: online_service_pb2.GetOnlineFeaturesResponse,
        entities: Mapping[str, Sequence[Any]],
    ) -> None:
        """Wraps a response and the entity columns it answers."""
        self.response = response
        self.entities = {key: list(values) for key, values in entities.items()}
        self.features = [FeatureColumn(vector) for vector in response.results]

    @property
    def feature_names(self) -> list[str]:
        """The returned feature names, in order."""
        return [f.name for f in self.features]

    def __len__(self) -> int:
        """The number of entity rows."""
        return len(next(iter(self.entities.values()), []))

    def to_dict(self, *, include_entities: bool = True) -> dict[str, list[Any]]:
        """Returns columns: the join keys (optional), then one list per feature."""
        out: dict[str, list[Any]] = dict(self.entities) if include_entities else {}
        for feature in self.features:
            out[feature.name] = feature.values
        return out

    def statuses(self) -> dict[str, list[str]]:
        """Returns the status names per feature."""
        return {f.name: f.statuses for f in self.features}

    def event_times(self) -> dict[str, list[dt.datetime | None]]:
        """Returns the event times per feature (None when NOT_FOUND)."""
        return {f.name: f.event_times for f in self.features}

    def to_arrow(self, *, include_entities: bool = True) -> pa.Table:
        """Returns a `pyarrow.Table`: join key columns (optional), then typed features."""
        arrays: dict[str, pa.Array] = {}
        if include_entities:
            for key, values in self.entities.items():
                arrays[key] = pa.array(values)
        for feature in self.features:
            arrays[feature.name] = pa.array(feature.values, type=feature.arrow_type)
        return pa.table(arrays)

    def rows(self, *, include_entities: bool = True) -> Iterator[dict[str, Any]]:
        """Yields one dict per entity row (join keys, then features)."""
        columns = self.to_dict(include_entities=include_entities)
        for i in range(len(self)):
            yield {name: values[i] for name, values in columns.items()}
