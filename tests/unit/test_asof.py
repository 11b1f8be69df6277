"""The as-of step of the join against a brute-force reference, key types and slices included."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from skewless.core.types import MAX_TIME_MICROS, MIN_TIME_MICROS
from skewless.offline.asof import (
    DIRECT_SPREAD,
    LabelOrder,
    ViewIndex,
    _by_key_and_time,
    align_key,
    winner_positions,
)

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64()]


def reference(
    entity: list[tuple[int | None, int]], history: list[tuple[int, int]], ttl: int
) -> list[int]:
    """Per entity row, the position of the newest history row with its key at or before t."""
    out = []
    for key, t in entity:
        best = -1
        best_time = None
        for position, (k, e) in enumerate(history):
            if key is None or k != key or e > t or (ttl > 0 and e < t - ttl):
                continue
            if best_time is None or e > best_time:
                best, best_time = position, e
        out.append(best)
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    history_type = draw(st.sampled_from(INT_TYPES))
    entity_type = draw(st.sampled_from(INT_TYPES))
    keys = st.sampled_from([0, 1, 2, 127, 128, 255, 256, -1, -129, 2**31, 2**40, 2**63 - 1])
    history_key = keys.filter(lambda k: _fits(k, history_type))
    # One row per (key, event time): the index the history loader hands over.
    pairs = draw(st.lists(st.tuples(history_key, st.integers(0, 30)), max_size=40, unique=True))
    entity = draw(
        st.lists(
            st.tuples(
                st.one_of(st.none(), keys.filter(lambda k: _fits(k, entity_type))),
                st.integers(-5, 35),
            ),
            max_size=60,
        )
    )
    ttl = draw(st.sampled_from([0, 1, 5, 100]))
    slice_rows = draw(st.sampled_from([1, 3, 1000]))
    return history_type, entity_type, pairs, entity, ttl, slice_rows


def _fits(value: int, typ: pa.DataType) -> bool:
    try:
        pa.scalar(value, typ)
    except (OverflowError, pa.ArrowInvalid):
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(cases())
def test_winner_positions_match_the_reference(case: tuple) -> None:
    history_type, entity_type, pairs, entity, ttl, slice_rows = case
    index = pa.table(
        {
            "k": pa.array([k for k, _ in pairs], history_type),
            "ts": pa.array([t for _, t in pairs], pa.int64()).cast(pa.timestamp("us", "UTC")),
            "pos": pa.array(range(len(pairs)), pa.int64()),
        }
    )
    labels = pa.array([t for _, t in entity], pa.int64())
    got = winner_positions(
        [pa.array([k for k, _ in entity], entity_type)],
        LabelOrder.of(labels),
        ViewIndex.of(index, ["k"], "ts", "pos"),
        ttl,
        slice_rows=slice_rows,
    )
    assert got.tolist() == reference(entity, pairs, ttl)


def test_two_keys_and_strings_join_on_both() -> None:
    index = pa.table(
        {
            "c": pa.array(["a", "a", "b"], pa.string()),
            "z": pa.array([1, 2, 1], pa.int32()),
            "ts": pa.array([10, 10, 20], pa.int64()),
            "pos": pa.array([0, 1, 2], pa.int64()),
        }
    )
    entity_c = pa.array(["a", "a", "b", "b", None], pa.large_string())
    entity_z = pa.array([2, 1, 1, 2, 1], pa.int64())
    labels = pa.array([10, 9, 25, 25, 30], pa.int64())
    got = winner_positions(
        [entity_c, entity_z],
        LabelOrder.of(labels),
        ViewIndex.of(index, ["c", "z"], "ts", "pos"),
        0,
        slice_rows=2,
    )
    assert got.tolist() == [1, -1, 2, -1, -1]


def test_align_key_nulls_what_the_history_type_cannot_hold() -> None:
    aligned = align_key(pa.array([1, 300, -1, None, 2**40], pa.int64()), pa.uint8())
    assert aligned.type == pa.uint8()
    assert aligned.to_pylist() == [1, None, None, None, None]
    wide = align_key(pa.array([0, 2**64 - 1], pa.uint64()), pa.int64())
    assert wide.to_pylist() == [0, None]


def test_an_empty_history_or_input_gives_no_winner() -> None:
    empty = pa.table(
        {
            "k": pa.array([], pa.int64()),
            "ts": pa.array([], pa.int64()),
            "pos": pa.array([], pa.int64()),
        }
    )
    got = winner_positions(
        [pa.array([1, 2], pa.int64())],
        LabelOrder.of(pa.array([5, 6], pa.int64())),
        ViewIndex.of(empty, ["k"], "ts", "pos"),
        0,
        slice_rows=10,
    )
    assert got.tolist() == [-1, -1]
    none = winner_positions(
        [pa.array([], pa.int64())],
        LabelOrder.of(pa.array([], pa.int64())),
        ViewIndex.of(empty, ["k"], "ts", "pos"),
        0,
        slice_rows=10,
    )
    assert none.tolist() == []


@st.composite
def spread_cases(draw: st.DrawFn) -> tuple:
    """Event and label times near the ends of what skewless stores, or close together."""
    wide = draw(st.booleans())
    low, high = (MIN_TIME_MICROS, MAX_TIME_MICROS) if wide else (0, 40)
    times = st.one_of(
        st.integers(low, high), st.sampled_from([low, low + 1, high - 1, high, (low + high) // 2])
    )
    pairs = draw(st.lists(st.tuples(st.integers(0, 40), times), max_size=60, unique=True))
    entity = draw(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 45)), times), max_size=60))
    ttl = draw(st.sampled_from([0, 1, 7, 2**40, high - low]))
    return pairs, entity, ttl, draw(st.sampled_from([1, 4, 1000]))


@settings(max_examples=300, deadline=None)
@given(spread_cases())
def test_time_offsets_and_time_ranks_find_the_same_winners(case: tuple) -> None:
    """The index codes times as offsets when key count x time span fits an int64, else as
    ranks: both must give the reference's winners, at the extremes of the time range."""
    pairs, entity, ttl, slice_rows = case
    index = pa.table(
        {
            "k": pa.array([k for k, _ in pairs], pa.int64()),
            "ts": pa.array([t for _, t in pairs], pa.int64()),
            "pos": pa.array(range(len(pairs)), pa.int64()),
        }
    )
    keys = [pa.array([k for k, _ in entity], pa.int64())]
    order = LabelOrder.of(pa.array([t for _, t in entity], pa.int64()))
    expected = reference(entity, pairs, ttl)
    for ranked in (False, True):
        view = ViewIndex.of(index, ["k"], "ts", "pos", ranked=ranked)
        assert not pairs or (view.distinct is not None) == (ranked or view.first is None)
        got = winner_positions(keys, order, view, ttl, slice_rows=slice_rows)
        assert got.tolist() == expected


def test_a_wide_time_span_over_many_keys_is_coded_by_rank() -> None:
    index = pa.table(
        {
            "k": pa.array(list(range(40)) * 2, pa.int64()),
            "ts": pa.array([MIN_TIME_MICROS] * 40 + [MAX_TIME_MICROS] * 40, pa.int64()),
            "pos": pa.array(range(80), pa.int64()),
        }
    )
    view = ViewIndex.of(index, ["k"], "ts", "pos")
    assert view.first is None and view.distinct is not None
    got = winner_positions(
        [pa.array([3, 3, 41], pa.int64())],
        LabelOrder.of(pa.array([MIN_TIME_MICROS, MAX_TIME_MICROS, MAX_TIME_MICROS], pa.int64())),
        view,
        0,
        slice_rows=2,
    )
    assert got.tolist() == [3, 43, -1]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([pa.int8(), pa.int64(), pa.uint64()]),
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 5, 100, -3, -(2**62), 2**62, 2**63 - 1]),
            st.one_of(st.integers(0, 50), st.sampled_from([MIN_TIME_MICROS, MAX_TIME_MICROS])),
        ),
        max_size=50,
        unique=True,
    ),
)
def test_the_one_column_sort_orders_like_the_two_column_sort(
    key_type: pa.DataType, pairs: list[tuple[int, int]]
) -> None:
    """An integer key sorts as one combined int64 column when the ranges allow it."""
    pairs = [(k, t) for k, t in pairs if _fits(k, key_type)]
    frame = pl.DataFrame(
        pa.table(
            {
                "k": pa.array([k for k, _ in pairs], key_type),
                "__t": pa.array([t for _, t in pairs], pa.int64()),
                "__pos": pa.array(range(len(pairs)), pa.int64()),
            }
        )
    )
    got = _by_key_and_time(frame, ["k"])
    assert got.equals(frame.sort(["k", "__t"]))


@st.composite
def dense_cases(draw: st.DrawFn) -> tuple:
    """One dense integer key (direct addressing applies), in any width, around any origin."""
    history_type = draw(st.sampled_from(INT_TYPES))
    entity_type = draw(st.sampled_from(INT_TYPES))
    origin = draw(st.sampled_from([0, 1, -3, 100, 250, -128, 2**31 - 5, 2**63 - 20, -(2**63)]))
    offsets = st.integers(0, 12)
    history_key = offsets.map(lambda o: origin + o).filter(lambda k: _fits(k, history_type))
    pairs = draw(st.lists(st.tuples(history_key, st.integers(0, 30)), max_size=40, unique=True))
    # Keys inside the range but absent, outside it on both sides, and far away.
    entity_key = st.one_of(
        st.none(),
        st.integers(-4, 16).map(lambda o: origin + o),
        st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**64 - 1]),
    ).filter(lambda k: k is None or _fits(k, entity_type))
    entity = draw(st.lists(st.tuples(entity_key, st.integers(-5, 35)), max_size=60))
    ttl = draw(st.sampled_from([0, 1, 5, 100]))
    slice_rows = draw(st.sampled_from([1, 3, 1000]))
    return history_type, entity_type, pairs, entity, ttl, slice_rows, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(dense_cases())
def test_direct_addressing_finds_the_hash_joins_winners(case: tuple) -> None:
    """A dense integer key coded by a table finds what the hash join finds, and the reference."""
    history_type, entity_type, pairs, entity, ttl, slice_rows, chunked = case
    index = pa.table(
        {
            "k": pa.array([k for k, _ in pairs], history_type),
            "ts": pa.array([t for _, t in pairs], pa.int64()),
            "pos": pa.array(range(len(pairs)), pa.int64()),
        }
    )
    column = pa.array([k for k, _ in entity], entity_type)
    keys = [pa.chunked_array([column[:3], column[3:]], entity_type) if chunked else column]
    order = LabelOrder.of(pa.array([t for _, t in entity], pa.int64()))
    direct = ViewIndex.of(index, ["k"], "ts", "pos")
    hashed = ViewIndex.of(index, ["k"], "ts", "pos", direct=False)
    distinct = {k for k, _ in pairs}
    dense = bool(distinct) and max(distinct) - min(distinct) + 1 <= DIRECT_SPREAD * len(distinct)
    assert (direct.direct is not None) == dense
    assert hashed.direct is None
    got = winner_positions(keys, order, direct, ttl, slice_rows=slice_rows)
    general = winner_positions(keys, order, hashed, ttl, slice_rows=slice_rows)
    assert got.tolist() == general.tolist()
    assert got.tolist() == reference(entity, pairs, ttl)


def test_a_sparse_integer_key_keeps_the_hash_join() -> None:
    index = pa.table(
        {
            "k": pa.array([0, 100], pa.int64()),
            "ts": pa.array([1, 1], pa.int64()),
            "pos": pa.array([0, 1], pa.int64()),
        }
    )
    view = ViewIndex.of(index, ["k"], "ts", "pos")
    assert view.direct is None
    got = winner_positions(
        [pa.array([100, 50, 0], pa.int64())],
        LabelOrder.of(pa.array([1, 1, 0], pa.int64())),
        view,
        0,
        slice_rows=10,
    )
    assert got.tolist() == [1, -1, -1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(-20, 20)), max_size=30, unique=True),
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-1, 6)),
            st.one_of(st.integers(-30, 30), st.sampled_from([-(2**63), 2**63 - 1])),
        ),
        max_size=40,
    ),
    st.sampled_from([1, 3, 25, 2**62, 2**63 - 1, 2**63, 2**64]),
    st.booleans(),
)
def test_a_huge_ttl_or_an_extreme_label_time_does_not_overflow(
    pairs: list[tuple[int, int]], entity: list[tuple[int | None, int]], ttl: int, ranked: bool
) -> None:
    """`label - TTL` is never computed where it would leave int64: the winners stay exact."""
    index = pa.table(
        {
            "k": pa.array([k for k, _ in pairs], pa.int64()),
            "ts": pa.array([t for _, t in pairs], pa.int64()),
            "pos": pa.array(range(len(pairs)), pa.int64()),
        }
    )
    got = winner_positions(
        [pa.array([k for k, _ in entity], pa.int64())],
        LabelOrder.of(pa.array([t for _, t in entity], pa.int64())),
        ViewIndex.of(index, ["k"], "ts", "pos", ranked=ranked),
        ttl,
        slice_rows=7,
    )
    assert got.tolist() == reference(entity, pairs, ttl)
