"""The compare-and-set script on a real Redis against a model of its rule.

Rows are written in batches whose feature set, created-time column and expiry vary, over
a few keys with ties of event and created time, so that every branch of the script runs:
new keys, older rows refused, equal times replayed, a hash left with a field the row does
not write (`_ct`, a removed feature), an expiry set and then dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.online.codec import decode_value
from skewless.online.writer import OnlineWriter, prepare_rows
from skewless.registry.feature_refs import FeatureSpec
from skewless.v1 import types_pb2

VT = types_pb2.ValueType
FEATURES = {
    "a": FeatureSpec("a", VT.VALUE_TYPE_FLOAT64),
    "b": FeatureSpec("b", VT.VALUE_TYPE_STRING),
    "c": FeatureSpec("c", VT.VALUE_TYPE_INT64),
}
#: Event times close to now, so that keys given an expiry do not expire during the test.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
EXPIRY = timedelta(days=1)

row = st.tuples(
    st.integers(0, 3),  # key
    st.integers(0, 2),  # event time, seconds after T0
    st.one_of(st.none(), st.integers(0, 2)),  # created time
    st.integers(-5, 5),  # value
)
batch = st.tuples(
    st.lists(st.sampled_from(sorted(FEATURES)), min_size=1, max_size=3, unique=True),
    st.booleans(),  # with a created-time column
    st.booleans(),  # with an expiry
    st.lists(row, min_size=1, max_size=12),
)


def _model(
    batches: list[tuple[list[str], bool, bool, list[tuple[int, int, int | None, int]]]],
) -> dict[bytes, tuple[dict[bytes, object], bool]]:
    """The stored hash and whether it expires, per key: the newest (event, created) wins."""
    state: dict[bytes, tuple[dict[bytes, object], bool]] = {}
    order: dict[bytes, tuple[int, float]] = {}
    for names, with_ct, expire, rows in batches:
        for key, ts, ct, value in rows:
            name = f"cas:v:{{{key}}}".encode()
            created = ct if with_ct else None
            rank = (ts, float("-inf") if created is None else created)
            if name in order and rank < order[name]:
                continue
            order[name] = rank
            fields: dict[bytes, object] = {b"_ts": _micros(ts)}
            if created is not None:
                fields[b"_ct"] = _micros(created)
            for n in names:
                fields[n.encode()] = _value(n, value)
            state[name] = (fields, expire)
    return state


def _micros(seconds: int) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1_000_000)


def _value(name: str, value: int) -> object:
    return {"a": value / 4, "b": f"s{value}", "c": value}[name]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(batch, min_size=1, max_size=6))
def test_stored_hashes_follow_the_newest_row_exactly(
    redis_url: str,
    batches: list[tuple[list[str], bool, bool, list[tuple[int, int, int | None, int]]]],
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    writer = OnlineWriter.from_url(redis_url)
    try:
        for names, with_ct, expire, rows in batches:
            columns: dict[str, pa.Array] = {
                "id": pa.array([r[0] for r in rows], pa.int64()),
                "event_timestamp": pa.array(
                    [T0 + timedelta(seconds=r[1]) for r in rows], pa.timestamp("us", tz="UTC")
                ),
            }
            if with_ct:
                columns["created_timestamp"] = pa.array(
                    [None if r[2] is None else T0 + timedelta(seconds=r[2]) for r in rows],
                    pa.timestamp("us", tz="UTC"),
                )
            for n in names:
                values = [_value(n, r[3]) for r in rows]
                columns[n] = pa.array(values, {"a": pa.float64(), "b": pa.string()}.get(n))
            encoded = prepare_rows(
                "cas",
                "v",
                pa.table(columns),
                join_keys=["id"],
                features=[FEATURES[n] for n in names],
            )
            writer.write(encoded, expire_after=EXPIRY if expire else None)
        expected = _model(batches)
        assert sorted(client.keys("*")) == sorted(expected)
        for key, (fields, expires) in expected.items():
            stored = {
                f: int(v) if f in (b"_ts", b"_ct") else decode_value(v)
                for f, v in client.hgetall(key).items()
            }
            assert stored == fields, key
            assert (client.pttl(key) > 0) == expires, key
    finally:
        writer.close()
        client.close()
