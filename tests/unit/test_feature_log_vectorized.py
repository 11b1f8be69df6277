"""The column-by-column decoder gives exactly the general decoder's rows (or declines)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.offline import feature_log, log_decoding
from skewless.offline.feature_log import LoggedCall, decode_calls
from skewless.offline.log_decoding import decode_batch
from skewless.registry.feature_refs import FeaturePlan, JoinKeySpec, ResolvedFeature, ViewPlan
from skewless.v1 import online_service_pb2, types_pb2

VT = types_pb2.ValueType
S = types_pb2.FeatureStatus

_MICROS = st.integers(min_value=-(10**15), max_value=10**16)
_INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_FLOAT32 = st.floats(width=32, allow_nan=False)
_TEXT = st.text(max_size=4)

#: value type -> (Value field, strategy of a Python value, setter)
_SCALARS: dict[int, tuple[str, Any]] = {
    VT.VALUE_TYPE_INT32: ("int32_value", _INT32),
    VT.VALUE_TYPE_INT64: ("int64_value", _INT64),
    VT.VALUE_TYPE_FLOAT32: ("float_value", _FLOAT32),
    VT.VALUE_TYPE_FLOAT64: ("double_value", st.floats(allow_nan=False)),
    VT.VALUE_TYPE_STRING: ("string_value", _TEXT),
    VT.VALUE_TYPE_BYTES: ("bytes_value", st.binary(max_size=4)),
    VT.VALUE_TYPE_BOOL: ("bool_value", st.booleans()),
}
_LISTS: dict[int, tuple[str, Any]] = {
    VT.VALUE_TYPE_INT64_LIST: ("int64_list_value", st.lists(_INT64, max_size=3)),
    VT.VALUE_TYPE_FLOAT64_LIST: ("double_list_value", st.lists(st.floats(), max_size=3)),
    VT.VALUE_TYPE_STRING_LIST: ("string_list_value", st.lists(_TEXT, max_size=3)),
    VT.VALUE_TYPE_TIMESTAMP_LIST: ("timestamp_list_value", st.lists(_MICROS, max_size=3)),
}
_TYPES = [*_SCALARS, VT.VALUE_TYPE_TIMESTAMP, *_LISTS]
_STATUSES = [
    S.FEATURE_STATUS_PRESENT,
    S.FEATURE_STATUS_NULL_VALUE,
    S.FEATURE_STATUS_NOT_FOUND,
    S.FEATURE_STATUS_OUTSIDE_MAX_AGE,
]


def _value(value_type: int, py: Any) -> types_pb2.Value:
    out = types_pb2.Value()
    if value_type == VT.VALUE_TYPE_TIMESTAMP:
        out.timestamp_value.FromMicroseconds(py)
    elif value_type == VT.VALUE_TYPE_TIMESTAMP_LIST:
        out.timestamp_list_value.SetInParent()  # an empty list is a value too
        for micros in py:
            out.timestamp_list_value.values.add().FromMicroseconds(micros)
    elif value_type in _LISTS:
        getattr(out, _LISTS[value_type][0]).SetInParent()
        getattr(out, _LISTS[value_type][0]).values.extend(py)
    else:
        setattr(out, _SCALARS[value_type][0], py)
    return out


def _values_of(value_type: int) -> Any:
    if value_type == VT.VALUE_TYPE_TIMESTAMP:
        return _MICROS
    return (_LISTS.get(value_type) or _SCALARS[value_type])[1]


@st.composite
def _workload(draw: Any) -> tuple[FeaturePlan, list[LoggedCall]]:
    key_types = draw(
        st.lists(
            st.sampled_from([VT.VALUE_TYPE_INT64, VT.VALUE_TYPE_STRING]), min_size=1, max_size=2
        )
    )
    keys = tuple(JoinKeySpec(f"k{i}", t) for i, t in enumerate(key_types))
    views = []
    features: list[ResolvedFeature] = []
    for v in range(draw(st.integers(1, 2))):
        types = draw(st.lists(st.sampled_from(_TYPES), min_size=1, max_size=4))
        own = tuple(
            ResolvedFeature(f"v{v}", f"f{i}", t, f"v{v}__f{i}") for i, t in enumerate(types)
        )
        views.append(ViewPlan(f"v{v}", (keys[v % len(keys)],), 0, own))
        features += own
    plan = FeaturePlan(views=tuple(views), features=tuple(features))
    calls = []
    for c in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 4))
        request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="s")
        for key in keys:
            strategy = _INT64 if key.value_type == VT.VALUE_TYPE_INT64 else _TEXT
            request.entities[key.name].values.extend(
                [_value(key.value_type, draw(strategy)) for _ in range(n)]
            )
        response = online_service_pb2.GetOnlineFeaturesResponse()
        rows = {
            v.name: [(draw(st.sampled_from(_STATUSES)), draw(_MICROS)) for _ in range(n)]
            for v in views
        }
        for f in features:
            vector = response.results.add(name=f.output_name)
            for status, micros in rows[f.view]:
                if status == S.FEATURE_STATUS_PRESENT and draw(st.integers(0, 9)) == 0:
                    status = S.FEATURE_STATUS_NULL_VALUE  # a null feature of a found row
                present = status == S.FEATURE_STATUS_PRESENT
                vector.values.append(
                    _value(f.value_type, draw(_values_of(f.value_type)))
                    if present
                    else types_pb2.Value()
                )
                vector.statuses.append(status)
                stamp = vector.event_times.add()
                if status != S.FEATURE_STATUS_NOT_FOUND:
                    stamp.FromMicroseconds(micros)
        calls.append(
            LoggedCall(request, response.SerializeToString(), draw(_MICROS), f"r{c}", c + 1)
        )
    return plan, calls


def _bits(value: Any) -> Any:
    """A row value with every float as its bytes: NaN equals itself, -0.0 differs from 0.0."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bits(v) for v in value]
    return value


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Same schema and bit-identical values (`Table.equals` holds NaN unequal to itself)."""
    return a.schema.equals(b.schema, check_metadata=True) and _bits(a.to_pylist()) == _bits(
        b.to_pylist()
    )


def _fast(plan: FeaturePlan, calls: list[LoggedCall]) -> pa.Table | None:
    return decode_batch(
        plan,
        requests=[c.request for c in calls],
        responses=[c.response for c in calls],
        request_ids=[c.request_id for c in calls],
        request_times_us=[c.request_time_us for c in calls],
        registry_versions=[c.registry_version for c in calls],
        schema=feature_log.log_schema(plan),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_workload())
def test_column_decoder_equals_the_general_decoder(
    workload: tuple[FeaturePlan, list[LoggedCall]],
) -> None:
    plan, calls = workload
    fast = _fast(plan, calls)
    assert fast is not None  # what the server sends is always read column by column
    general = decode_calls(plan, calls, vectorized=False)
    assert _same_rows(fast, general), (fast.to_pylist(), general.to_pylist())


def _call(vector_values: list[types_pb2.Value], *, key: types_pb2.Value) -> LoggedCall:
    request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="s")
    request.entities["k"].values.append(key)
    response = online_service_pb2.GetOnlineFeaturesResponse()
    vector = response.results.add(name="v__f")
    vector.values.extend(vector_values)
    vector.statuses.extend([S.FEATURE_STATUS_PRESENT] * len(vector_values))
    vector.event_times.add().FromMicroseconds(5)
    return LoggedCall(request, response.SerializeToString(), 1, "r", 1)


_PLAN = FeaturePlan(
    views=(ViewPlan("v", (JoinKeySpec("k", VT.VALUE_TYPE_INT64),), 0, ()),),
    features=(ResolvedFeature("v", "f", VT.VALUE_TYPE_INT64, "v__f"),),
)


@pytest.mark.parametrize(
    "call",
    [
        # a present value of another kind than the declared type
        _call([types_pb2.Value(int32_value=3)], key=types_pb2.Value(int64_value=1)),
        # a key of another kind
        _call([types_pb2.Value(int64_value=3)], key=types_pb2.Value(string_value="a")),
        # a null key
        _call([types_pb2.Value(int64_value=3)], key=types_pb2.Value()),
    ],
)
def test_what_the_column_decoder_cannot_read_goes_the_general_way(call: LoggedCall) -> None:
    assert _fast(_PLAN, [call]) is None
    assert _outcome(lambda: decode_calls(_PLAN, [call])) == _outcome(
        lambda: decode_calls(_PLAN, [call], vectorized=False)
    )


def _outcome(decode: Any) -> Any:
    try:
        return decode().to_pylist()
    except Exception as exc:  # the general path's own error, whichever it is
        return type(exc)


def test_a_response_of_another_width_is_refused_as_before() -> None:
    call = _call([types_pb2.Value(int64_value=3)], key=types_pb2.Value(int64_value=1))
    two = FeaturePlan(
        views=_PLAN.views,
        features=(*_PLAN.features, ResolvedFeature("v", "g", VT.VALUE_TYPE_INT64, "v__g")),
    )
    assert _fast(two, [call]) is None
    with pytest.raises(ValueError, match="1 features for a plan of 2"):
        decode_calls(two, [call])


def test_many_calls_decode_in_pieces_to_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [
        _call([types_pb2.Value(int64_value=i)], key=types_pb2.Value(int64_value=i))
        for i in range(50)
    ]
    whole = decode_calls(_PLAN, calls)
    monkeypatch.setattr(feature_log, "DECODE_CHUNK_BYTES", 100)
    pieces = decode_calls(_PLAN, calls)
    assert pieces.equals(whole)
    assert pieces.column("v__f").to_pylist() == list(range(50))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_STATUSES), _MICROS), min_size=1, max_size=20))
def test_event_times_read_as_one_run_of_varints_equal_those_read_body_by_body(
    rows: list[tuple[int, int]],
) -> None:
    vector = online_service_pb2.FeatureVector(name="v__f")
    for status, micros in rows:
        stamp = vector.event_times.add()
        if status != S.FEATURE_STATUS_NOT_FOUND:  # as the server sends them
            stamp.FromMicroseconds(micros)
    found = np.array([s != S.FEATURE_STATUS_NOT_FOUND for s, _ in rows])
    fast = log_decoding._event_times(vector.SerializeToString(), found)
    one_by_one = log_decoding._times_micros([t.SerializeToString() for t in vector.event_times])
    if all(not 0 <= m < 1_000_000 for s, m in rows if s != S.FEATURE_STATUS_NOT_FOUND):
        assert fast is not None  # only bodies without seconds (the epoch's first second)
    if fast is not None:
        assert fast[found].tolist() == one_by_one[found].tolist()


def test_a_found_row_at_the_epoch_is_read_body_by_body_to_the_same_rows() -> None:
    request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="s")
    request.entities["k"].values.extend([types_pb2.Value(int64_value=i) for i in range(3)])
    response = online_service_pb2.GetOnlineFeaturesResponse()
    vector = response.results.add(name="v__f")
    for i, (status, micros) in enumerate(
        [
            (S.FEATURE_STATUS_PRESENT, 0),
            (S.FEATURE_STATUS_NOT_FOUND, 0),
            (S.FEATURE_STATUS_PRESENT, 7),
        ]
    ):
        vector.values.append(
            types_pb2.Value(int64_value=i)
            if status == S.FEATURE_STATUS_PRESENT
            else types_pb2.Value()
        )
        vector.statuses.append(status)
        vector.event_times.add().FromMicroseconds(micros)
    call = LoggedCall(request.SerializeToString(), response.SerializeToString(), 1, "r", 1)
    fast = _fast(_PLAN, [call])
    assert fast is not None
    assert fast.equals(decode_calls(_PLAN, [call], vectorized=False))
    assert [t and t.timestamp() for t in fast.column("v__f__event_time").to_pylist()] == [
        0.0,
        None,
        7e-6,
    ]
