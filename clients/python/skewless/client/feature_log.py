"""Entity rows from a feature service's log: train on exactly the calls that were served."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from skewless.v1 import historical_service_pb2

__all__ = ["FeatureLog"]


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:  # naive means UTC
        value = value.replace(tzinfo=dt.UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


@dataclass(frozen=True)
class FeatureLog:
    """The logged calls of a feature service, passed as `entity_rows` of a retrieval.

    The server reads the log itself: one entity row per logged entity row, with
    `request_id`, `request_time` (the label time), `registry_version` and the join keys.

    Example:
        >>> training = client.get_historical_features(
        ...     FeatureLog("driver_ranking", start_time=yesterday, include_served_values=True),
        ...     feature_service="driver_ranking",
        ... )

    Attributes:
        feature_service: The service whose log is read.
        start_time: Only calls served at or after this instant (naive = UTC).
        end_time: Only calls served before this instant.
        include_served_values: Also return what was served, per feature
            `served__<view>__<feature>` and `served__<view>__<feature>__status`.

    """

    feature_service: str
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    include_served_values: bool = False

    def to_proto(self) -> historical_service_pb2.FeatureLogRows:
        """The `FeatureLogRows` message of the query."""
        rows = historical_service_pb2.FeatureLogRows(
            feature_service=self.feature_service,
            include_served_values=self.include_served_values,
        )
        if self.start_time is not None:
            rows.start_time.CopyFrom(_timestamp(self.start_time))
        if self.end_time is not None:
            rows.end_time.CopyFrom(_timestamp(self.end_time))
        return rows
