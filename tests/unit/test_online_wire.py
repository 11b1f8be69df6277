"""The online fast paths give exactly what the generated code and the general paths give.

Hypothesis draws registries, plans, stored replies and request columns; each fast path
(response assembly from stored bytes, the one-row shortcut, fixed-width framing, the
INT64 entity-key shortcut, the wire primitives) must equal its reference byte for byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.client._wire import decode_varint, encode_varint, field_tag, skip_field
from skewless.core.errors import InvalidArgumentError
from skewless.online.deadlines import Deadlines
from skewless.online.entity_keys import encode_entity_keys
from skewless.online.layout import encode_key_part
from skewless.online.plan import LookupPlan, PlanCatalog
from skewless.online.response_encoding import encode_response
from skewless.v1 import online_service_pb2, registry_pb2, types_pb2

VT = types_pb2.ValueType
S = types_pb2.FeatureStatus
NOW = 1_700_000_000_000_000
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a registry and plans ------------------------------------------------------------------


def _registry(shapes: list[tuple[int, int, int]]) -> registry_pb2.Registry:
    """Views `v<i>` with `n_features` FLOAT64/INT64/STRING features, a TTL and a key set."""
    reg = registry_pb2.Registry(project="wire")
    reg.entities.add(
        name="one", join_keys=[registry_pb2.JoinKey(name="k1", value_type=VT.VALUE_TYPE_INT64)]
    )
    reg.entities.add(
        name="two", join_keys=[registry_pb2.JoinKey(name="k2", value_type=VT.VALUE_TYPE_STRING)]
    )
    types = [VT.VALUE_TYPE_FLOAT64, VT.VALUE_TYPE_INT64, VT.VALUE_TYPE_STRING, VT.VALUE_TYPE_BOOL]
    for i, (n_features, ttl_seconds, entities) in enumerate(shapes):
        view = reg.feature_views.add(
            name=f"v{i}",
            entities=["one"] if entities == 0 else ["two"] if entities == 1 else ["one", "two"],
            source="s",
            online=True,
        )
        if ttl_seconds:
            view.ttl.seconds = ttl_seconds
        for j in range(n_features):
            view.features.add(name=f"f{j}", value_type=types[j % len(types)])
    return reg


_shapes = st.lists(
    st.tuples(st.integers(1, 6), st.sampled_from([0, 60, 3600]), st.integers(0, 2)),
    min_size=1,
    max_size=4,
)


def _value(draw: Any, value_type: int, large: bool) -> bytes | None:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return None  # an absent field
    if choice == 1:
        return b""  # a stored null
    if value_type == VT.VALUE_TYPE_FLOAT64:
        value = types_pb2.Value(double_value=draw(st.floats(allow_nan=False)))
    elif value_type == VT.VALUE_TYPE_INT64:
        value = types_pb2.Value(int64_value=draw(st.integers(-(2**63), 2**63 - 1)))
    elif value_type == VT.VALUE_TYPE_BOOL:
        value = types_pb2.Value(bool_value=draw(st.booleans()))
    else:
        size = draw(st.sampled_from([0, 5, 200, 16_383, 16_400, 20_000])) if large else 10
        value = types_pb2.Value(string_value="x" * size)
    return value.SerializeToString()


@st.composite
def _case(draw: Any) -> tuple[LookupPlan, int, list[list[bytes | None]]]:
    registry = _registry(draw(_shapes))
    catalog = PlanCatalog("wire")
    catalog.load(registry)
    refs: list[str] = []
    for view in registry.feature_views:
        if draw(st.booleans()):
            refs.append(view.name)  # every feature of the view
        else:
            count = draw(st.integers(1, len(view.features)))
            refs += [f"{view.name}:{f.name}" for f in view.features[:count]]
    plan = catalog.for_features(refs, full_feature_names=True)
    n = draw(st.sampled_from([1, 1, 2, 3, 9]))
    large = draw(st.booleans())
    views = {v.name: v for v in registry.feature_views}
    replies: list[list[bytes | None]] = []
    for lookup in plan.lookups:
        view = views[lookup.view]
        types = {f.name.encode(): f.value_type for f in view.features}
        for _ in range(n):
            kind = draw(st.sampled_from(["missing", "stale", "fresh", "fresh", "negative"]))
            if kind == "missing":
                replies.append([None] * len(lookup.fields))
                continue
            ts = {
                "stale": NOW - lookup.ttl_micros - 1,
                "fresh": NOW - draw(st.integers(0, 10**9)),
                "negative": -draw(st.integers(1, 10**12)),
            }[kind]
            row: list[bytes | None] = [str(ts).encode()]
            row += [_value(draw, types[field], large) for field in lookup.fields[1:]]
            replies.append(row)
    return plan, n, replies


def _reference(plan: LookupPlan, n: int, replies: list[list[bytes | None]]) -> bytes:
    """The response built message by message with the generated classes."""
    response = online_service_pb2.GetOnlineFeaturesResponse()
    for feature in plan.outputs:
        lookup = plan.lookups[feature.lookup]
        vector = response.results.add(name=feature.name)
        for i in range(n):
            row = replies[feature.lookup * n + i]
            value = types_pb2.Value()
            stamp = timestamp_pb2.Timestamp()
            if row[0] is None:
                status = S.FEATURE_STATUS_NOT_FOUND
            else:
                micros = int(row[0])
                stamp.FromMicroseconds(micros)
                stored = row[feature.column]
                if lookup.ttl_micros and micros < NOW - lookup.ttl_micros:
                    status = S.FEATURE_STATUS_OUTSIDE_MAX_AGE
                elif stored:
                    status = S.FEATURE_STATUS_PRESENT
                    value.ParseFromString(stored)
                else:
                    status = S.FEATURE_STATUS_NULL_VALUE
            vector.values.append(value)
            vector.statuses.append(status)
            vector.event_times.append(stamp)
    return response.SerializeToString()


@_SETTINGS
@given(_case())
def test_encode_response_equals_the_generated_serializer(
    case: tuple[LookupPlan, int, list[list[bytes | None]]],
) -> None:
    plan, n, replies = case
    assert encode_response(plan, n, replies, now_micros=NOW) == _reference(plan, n, replies)


@_SETTINGS
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=40))
def test_fixed_width_columns_equal_the_generated_serializer(values: list[float]) -> None:
    catalog = PlanCatalog("wire")
    catalog.load(_registry([(1, 0, 0)]))
    plan = catalog.for_features(["v0:f0"])
    replies: list[list[bytes | None]] = [
        [str(NOW - i).encode(), types_pb2.Value(double_value=v).SerializeToString()]
        for i, v in enumerate(values)
    ]
    got = encode_response(plan, len(values), replies, now_micros=NOW)
    assert got == _reference(plan, len(values), replies)


# --- entity keys ---------------------------------------------------------------------------


def _general_suffixes(
    plan: LookupPlan, entities: dict[str, list[types_pb2.Value]]
) -> list[list[bytes]]:
    """Each key set's `{entity key}` suffixes, written out from the layout's rule."""
    out = []
    n = len(next(iter(entities.values())))
    for key_set in plan.key_sets:
        rows = []
        for i in range(n):
            parts = []
            for name in key_set.names:
                value = entities[name][i]
                parts.append(encode_key_part(getattr(value, str(value.WhichOneof("kind")))))
            rows.append(("{" + ",".join(parts) + "}").encode())
        out.append(rows)
    return out


def _columns(entities: dict[str, list[types_pb2.Value]]) -> dict[str, types_pb2.RepeatedValue]:
    return {k: types_pb2.RepeatedValue(values=v) for k, v in entities.items()}


@_SETTINGS
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50),
    st.booleans(),
)
def test_int64_key_fast_path_equals_the_general_path(keys: list[int], mixed: bool) -> None:
    catalog = PlanCatalog("wire")
    catalog.load(_registry([(2, 0, 0), (1, 60, 0)]))
    plan = catalog.for_features(["v0", "v1"], full_feature_names=True)
    assert plan.int64_keys == ("k1",)  # the fast path applies to this plan
    values = [
        types_pb2.Value(int32_value=k)
        if mixed and -(2**31) <= k < 2**31 and i % 2
        else types_pb2.Value(int64_value=k)
        for i, k in enumerate(keys)
    ]
    entities = {"k1": values}
    got = encode_entity_keys(plan, _columns(entities))
    assert got.rows == len(keys)
    assert got.suffixes == _general_suffixes(plan, entities)


@_SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=12)), min_size=1, max_size=20
    )
)
def test_composite_keys_follow_the_layout(rows: list[tuple[int, str]]) -> None:
    catalog = PlanCatalog("wire")
    catalog.load(_registry([(1, 0, 2), (1, 0, 1)]))
    plan = catalog.for_features(["v0", "v1"], full_feature_names=True)
    entities = {
        "k1": [types_pb2.Value(int64_value=k) for k, _ in rows],
        "k2": [types_pb2.Value(string_value=s) for _, s in rows],
    }
    assert encode_entity_keys(plan, _columns(entities)).suffixes == _general_suffixes(
        plan, entities
    )


def test_key_values_that_do_not_fit_are_refused_with_the_row() -> None:
    catalog = PlanCatalog("wire")
    catalog.load(_registry([(1, 0, 2)]))
    plan = catalog.for_features(["v0"])
    entities = {
        "k1": [types_pb2.Value(int64_value=1), types_pb2.Value(string_value="2")],
        "k2": [types_pb2.Value(string_value="a"), types_pb2.Value(string_value="b")],
    }
    with pytest.raises(InvalidArgumentError) as info:
        encode_entity_keys(plan, _columns(entities))
    assert info.value.reason == "WRONG_KEY_TYPE"
    assert info.value.metadata["row"] == "1" and info.value.field == "entities[k1]"


# --- the wire primitives -------------------------------------------------------------------


@given(st.integers(-(2**63), 2**64 - 1))
def test_varints_round_trip_as_protobuf_writes_them(value: int) -> None:
    encoded = encode_varint(value)
    decoded, end = decode_varint(encoded, 0)
    assert end == len(encoded) and decoded == value & 0xFFFFFFFFFFFFFFFF
    if -(2**63) <= value < 2**63:
        reference = types_pb2.Value(int64_value=value).SerializeToString()
        assert reference == field_tag(types_pb2.Value, "int64_value") + encoded


def test_field_tags_come_from_the_descriptors() -> None:
    vector = online_service_pb2.FeatureVector(
        name="n", values=[types_pb2.Value()], statuses=[1], event_times=[timestamp_pb2.Timestamp()]
    )
    data = vector.SerializeToString()
    seen = []
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        seen.append(encode_varint(key))
        pos = skip_field(data, pos, key & 7)
    assert seen == [
        field_tag(online_service_pb2.FeatureVector, name)
        for name in ("name", "values", "statuses", "event_times")
    ]
    with pytest.raises(ValueError, match="truncated"):
        skip_field(b"\x05ab", 0, 2)


# --- deadlines -----------------------------------------------------------------------------


def test_deadlines_cancel_only_what_is_due_with_one_timer() -> None:
    async def go() -> None:
        deadlines = Deadlines()
        slow = asyncio.create_task(asyncio.sleep(10))
        fast = asyncio.create_task(asyncio.sleep(0.01))
        later = asyncio.create_task(asyncio.sleep(10))
        deadlines.arm(slow, 0.05)
        deadlines.arm(fast, 0.05)
        deadlines.arm(later, 0.2)
        await fast
        assert deadlines.disarm(fast) is False  # finished in time: not cancelled
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert deadlines.disarm(slow) is True  # its deadline passed
        assert not later.done()  # re-armed for the next one, not fired early
        deadlines.disarm(later)
        later.cancel()

    asyncio.run(go())


# --- reading INT64 key columns from their bytes -------------------------------------------

_INT64S = st.integers(-(2**63), 2**63 - 1)


def _value_bytes(draw: Any) -> bytes:
    """The bytes of one `Value`: an int64 mostly, else anything a client could send."""
    kind = draw(
        st.sampled_from(["int64"] * 6 + ["int32", "string", "null", "bool", "twice", "unknown"])
    )
    if kind == "int64":
        return types_pb2.Value(int64_value=draw(_INT64S)).SerializeToString()
    if kind == "int32":
        return types_pb2.Value(
            int32_value=draw(st.integers(-(2**31), 2**31 - 1))
        ).SerializeToString()
    if kind == "string":
        return types_pb2.Value(string_value=draw(st.text(max_size=8))).SerializeToString()
    if kind == "null":
        return b""
    if kind == "bool":
        return types_pb2.Value(bool_value=draw(st.booleans())).SerializeToString()
    first = types_pb2.Value(int64_value=draw(_INT64S)).SerializeToString()
    if kind == "twice":  # the field sent twice: the last one counts
        return first + types_pb2.Value(int64_value=draw(_INT64S)).SerializeToString()
    return first + encode_varint(501 << 3) + encode_varint(draw(st.integers(0, 2**20)))


@_SETTINGS
@given(st.data(), st.integers(1, 40))
def test_int64_columns_read_from_bytes_equal_value_by_value(data: Any, rows: int) -> None:
    from skewless.online.entity_keys import _int64_tags, _int64_tags_by_value

    tag = field_tag(types_pb2.RepeatedValue, "values")
    raw = b"".join(
        tag + encode_varint(len(v)) + v for v in (_value_bytes(data.draw) for _ in range(rows))
    )
    column = types_pb2.RepeatedValue.FromString(raw)
    reference = _int64_tags_by_value(column.values)
    assert _int64_tags(column) == reference
    if reference is not None:  # every value an int64: the layout's own encoding
        expected = [b"{" + encode_key_part(v.int64_value).encode() + b"}" for v in column.values]
        assert reference == expected


# --- packing the HMGETs --------------------------------------------------------------------


@_SETTINGS
@given(
    st.lists(
        st.tuples(_INT64S, st.text(min_size=0, max_size=40)),
        min_size=1,
        max_size=30,
    )
)
def test_packed_hmgets_equal_one_command_at_a_time(rows: list[tuple[int, str]]) -> None:
    import hiredis

    from skewless.online.reader import _pack_hmgets
    from skewless.online.resp import pack_commands

    catalog = PlanCatalog("wire")
    catalog.load(_registry([(2, 0, 0), (1, 0, 1), (3, 60, 2)]))  # INT64, STRING, composite
    plan = catalog.for_features(["v0", "v1", "v2"], full_feature_names=True)
    entities = {
        "k1": [types_pb2.Value(int64_value=k) for k, _ in rows],
        "k2": [types_pb2.Value(string_value=s) for _, s in rows],
    }
    keys = encode_entity_keys(plan, _columns(entities))
    commands = [
        [b"HMGET", lookup.key_prefix + suffix, *lookup.fields]
        for lookup in plan.lookups
        for suffix in keys.suffixes[lookup.key_set]
    ]
    packed, count = _pack_hmgets(plan, keys.suffixes)
    assert count == len(commands)
    assert packed == pack_commands(commands)
    reader = hiredis.Reader()  # and it is RESP a parser reads back as those commands
    reader.feed(packed)
    assert [reader.gets() for _ in commands] == commands


@_SETTINGS
@given(_case(), st.data())
def test_rows_sharing_one_event_time_equal_the_generated_serializer(
    case: tuple[LookupPlan, int, list[list[bytes | None]]], data: Any
) -> None:
    plan, n, replies = case
    shared = []
    for index, lookup in enumerate(plan.lookups):  # one event time for all rows of a view
        ts = data.draw(
            st.sampled_from(
                [NOW, NOW - 1, NOW - lookup.ttl_micros, NOW - lookup.ttl_micros - 1, -5]
            )
        )
        for row in replies[index * n : (index + 1) * n]:
            shared.append([str(ts).encode(), *row[1:]])
    assert encode_response(plan, n, shared, now_micros=NOW) == _reference(plan, n, shared)
