"""Decoding handed-off calls into the log's typed columns, for every value type."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from google.protobuf import timestamp_pb2

from skewless.offline.feature_log import LoggedCall, decode_calls, log_schema
from skewless.registry.feature_refs import FeaturePlan, JoinKeySpec, ResolvedFeature, ViewPlan
from skewless.v1 import online_service_pb2, types_pb2

VT = types_pb2.ValueType
S = types_pb2.FeatureStatus
T = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


CASES = [
    (VT.VALUE_TYPE_INT32, types_pb2.Value(int32_value=-3), -3),
    (VT.VALUE_TYPE_INT64, types_pb2.Value(int64_value=2**40), 2**40),
    (VT.VALUE_TYPE_FLOAT32, types_pb2.Value(float_value=0.5), 0.5),
    (VT.VALUE_TYPE_FLOAT64, types_pb2.Value(double_value=0.1), 0.1),
    (VT.VALUE_TYPE_STRING, types_pb2.Value(string_value="é"), "é"),
    (VT.VALUE_TYPE_BYTES, types_pb2.Value(bytes_value=b"\x00"), b"\x00"),
    (VT.VALUE_TYPE_BOOL, types_pb2.Value(bool_value=False), False),
    (VT.VALUE_TYPE_TIMESTAMP, types_pb2.Value(timestamp_value=ts(T)), T),
    (
        VT.VALUE_TYPE_FLOAT64_LIST,
        types_pb2.Value(double_list_value=types_pb2.DoubleList(values=[1.5, -2.0])),
        [1.5, -2.0],
    ),
    (
        VT.VALUE_TYPE_STRING_LIST,
        types_pb2.Value(string_list_value=types_pb2.StringList(values=["a"])),
        ["a"],
    ),
    (
        VT.VALUE_TYPE_TIMESTAMP_LIST,
        types_pb2.Value(timestamp_list_value=types_pb2.TimestampList(values=[ts(T)])),
        [T],
    ),
]


def test_every_type_status_and_event_time_decodes_to_its_column() -> None:
    features = tuple(
        ResolvedFeature("v", f"f{i}", value_type, f"v__f{i}")
        for i, (value_type, _, _) in enumerate(CASES)
    )
    key = JoinKeySpec("k", VT.VALUE_TYPE_STRING)
    plan = FeaturePlan(views=(ViewPlan("v", (key,), 0, features),), features=features)
    request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="s")
    request.entities["k"].values.extend(
        [types_pb2.Value(string_value=x) for x in ("a", "b", "c", "d")]
    )
    response = online_service_pb2.GetOnlineFeaturesResponse()
    for i, (_, value, _) in enumerate(CASES):
        vector = response.results.add(name=f"f{i}")
        vector.values.extend([value, types_pb2.Value(), types_pb2.Value(), types_pb2.Value()])
        vector.statuses.extend(
            [
                S.FEATURE_STATUS_PRESENT,
                S.FEATURE_STATUS_NULL_VALUE,
                S.FEATURE_STATUS_NOT_FOUND,
                S.FEATURE_STATUS_OUTSIDE_MAX_AGE,
            ]
        )
        vector.event_times.extend([ts(T), ts(T), timestamp_pb2.Timestamp(), ts(T)])
    call = LoggedCall(request, response.SerializeToString(), 1_000_000, "r1", 7)
    table = decode_calls(plan, [call, call])
    assert table.schema == log_schema(plan)
    assert table.num_rows == 8
    assert table.column("k").to_pylist() == ["a", "b", "c", "d"] * 2
    assert table.column("request_id").to_pylist() == ["r1"] * 8
    assert table.column("registry_version").to_pylist() == [7] * 8
    assert table.column("request_time")[0].as_py() == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    for i, (_, _, expected) in enumerate(CASES):
        values = table.column(f"v__f{i}").to_pylist()[:4]
        assert values == [expected, None, None, None], (i, values)
        assert table.column(f"v__f{i}__status").to_pylist()[:4] == [
            "PRESENT",
            "NULL_VALUE",
            "NOT_FOUND",
            "OUTSIDE_MAX_AGE",
        ]
        assert table.column(f"v__f{i}__event_time").to_pylist()[:4] == [T, T, None, T]
    assert table.schema.field("v__f2").type == pa.float32()
