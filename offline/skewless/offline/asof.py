"""The as-of step of the point-in-time join: each entity row's winning history position.

Given a view's history index (join keys, event time, position; at most one row per key
and event time, which `skewless.offline.history_index` guarantees) and the entity rows
(join keys, label time), `winner_positions` returns, per entity row, the position of the
history row with the same key and the greatest event time `<= label time`, or -1 when
there is none, the key is NULL, or the TTL rules that row out (`event time < label time -
TTL`: the newest candidate is too old, so every other one is too).

It runs on integers: the distinct history keys are numbered once per view (a Polars hash
join codes the entity rows' keys with the same numbers; an unknown or NULL key has none;
one integer key whose range is at most `DIRECT_SPREAD` times its distinct count is coded
by direct addressing instead, a NumPy table indexed by `key - least key`),
each history row becomes one sortable integer `code * span + time` (the time offset from
the view's first event time, or, when that product could overflow, the rank of the time
among the view's distinct event times), sorted once. Each slice of entity rows becomes
the same integer for its key and label time, is sorted (Polars, multi-threaded), and
`numpy.searchsorted` finds the last history integer at or below it: the winner when it
has the same key code. The positions are written back into input
order, so the features never travel through a sort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DIRECT_SPREAD", "LabelOrder", "ViewIndex", "align_key", "winner_positions"]

_ROW = "__row"
_T = "__t"
_POS = "__pos"
_CODE = "__code"

_INT_RANGES = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Dictionary-encoded and large string/binary columns as their plain form."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    if pa.types.is_large_binary(column.type) or pa.types.is_binary_view(column.type):
        column = column.cast(pa.binary())
    return column


def align_key(
    column: pa.Array | pa.ChunkedArray, target: pa.DataType
) -> pa.Array | pa.ChunkedArray:
    """The entity rows' key column in the history key's type, as an equality join needs.

    Integer values the target type cannot hold become NULL: no history key can equal
    them. Other types are cast (strings to strings, binaries to binaries).
    """
    column = _plain(column)
    target = _plain(pa.nulls(0, target)).type
    if column.type == target:
        return column
    if pa.types.is_integer(column.type) and pa.types.is_integer(target):
        low, high = _INT_RANGES[target]
        source_low, source_high = _INT_RANGES[column.type]
        # Each bound is checked only where it is narrower than the source type's own,
        # and is then a value of the source type.
        checks = []
        if low > source_low:
            checks.append(pc.greater_equal(column, pa.scalar(low, column.type)))
        if high < source_high:
            checks.append(pc.less_equal(column, pa.scalar(high, column.type)))
        for fits in checks:
            column = pc.if_else(fits, column, pa.scalar(None, column.type))
        return column.cast(target)
    return column.cast(target)


@dataclass
class LabelOrder:
    """The entity rows' label times, shared by every view of a join.

    Attributes:
        rows: Input row number of each row in label order (uint32 or uint64).
        labels: Label times in label order (int64 microseconds).
        times: Label times in input order (int64 microseconds).

    """

    rows: pl.Series
    labels: pl.Series
    times: np.ndarray

    @classmethod
    def of(cls, labels: pa.ChunkedArray | pa.Array) -> LabelOrder:
        """Sorts label times (timestamps, or int64 microseconds) with their row numbers."""
        micros = pl.Series(_T, labels.cast(pa.int64()))
        order = micros.arg_sort()
        return cls(rows=order, labels=micros.gather(order), times=micros.to_numpy())

    def __len__(self) -> int:
        return len(self.rows)


#: A product `code * span` at or above this would not fit an int64 (with room to spare).
_MAX_CODED = 2**62

#: One integer key is coded by direct addressing when its range (max - min + 1) is at most
#: this many times its distinct count: the table costs at most 4 bytes x this per key.
DIRECT_SPREAD = 4


@dataclass
class ViewIndex:
    """A view's history index as sorted integers.

    Attributes:
        codes: The distinct join keys (in their history types) and `__code`, their number.
        coded: Per history row, `code * span + time code`, sorted.
        code: Each sorted row's key code.
        times: Each sorted row's event time (int64 µs).
        positions: Each sorted row's position in the view's features.
        keys: The join key names.
        first: The earliest event time (time codes are offsets from it), or None when
            the time codes are ranks among `distinct` instead.
        distinct: The distinct event times, sorted (when ranked).
        span: Time codes lie in `[0, span)`.
        direct: For one integer key coded by direct addressing: per `key - direct_low`,
            the key's code or -1 (no such key); else None.
        direct_low: The least key (when `direct` is set).

    """

    codes: pl.DataFrame
    coded: np.ndarray
    code: np.ndarray
    times: np.ndarray
    positions: np.ndarray
    keys: list[str]
    first: int | None
    distinct: np.ndarray | None
    span: int
    direct: np.ndarray | None = None
    direct_low: int = 0

    @classmethod
    def of(
        cls,
        index: pa.Table,
        keys: Sequence[str],
        time: str,
        position: str,
        *,
        ranked: bool = False,
        direct: bool = True,
    ) -> ViewIndex:
        """Builds it from an index table with the given key, time and position columns.

        `ranked`: code times by rank even when offsets would fit (tests compare the two).
        `direct`: False keeps the hash join even where direct addressing applies (tests).
        """
        keys = list(keys)
        columns = {k: _plain(index.column(k)) for k in keys}
        table = pa.table(
            {
                **columns,
                _T: index.column(time).cast(pa.int64()),
                _POS: index.column(position).cast(pa.int64()),
            }
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        # A NULL key never matches (SQL equality): such rows can never win. Sorted by
        # key then time, a key's rows are one run; runs are numbered in order.
        frame = _by_key_and_time(frame.drop_nulls(keys), keys)
        starts = pl.any_horizontal(*(pl.col(k) != pl.col(k).shift(1) for k in keys)).fill_null(True)
        change = frame.select(starts).to_series()
        codes = frame.filter(change).select(keys).with_row_index(_CODE)
        code = (change.cast(pl.Int64).cum_sum() - 1).to_numpy()
        times = frame.get_column(_T).to_numpy()
        first: int | None = None
        distinct: np.ndarray | None = None
        if len(times) == 0:
            span = 1
            offsets = times
        else:
            low, high = int(times.min()), int(times.max())
            # Offsets 1..high-low+1; 0 is left for label times before the first event.
            span = high - low + 2
            if not ranked and (codes.height + 1) * span < _MAX_CODED:
                first = low
                offsets = times - (low - 1)
            else:
                distinct = np.unique(times)
                span = len(distinct) + 1
                offsets = np.searchsorted(distinct, times, side="left") + 1
        table, table_low = _direct_table(codes, keys) if direct else (None, 0)
        return cls(
            codes=codes,
            coded=code * span + offsets,
            code=code,
            times=times,
            positions=frame.get_column(_POS).to_numpy(),
            keys=keys,
            first=first,
            distinct=distinct,
            span=span,
            direct=table,
            direct_low=table_low,
        )

    def key_types(self) -> list[pa.DataType]:
        """The Arrow type of each join key column."""
        schema = self.codes.head(0).to_arrow().schema
        return [schema.field(k).type for k in self.keys]

    def oldest_codes(self, labels: np.ndarray, ttl_micros: int) -> np.ndarray:
        """Per label time, the least time code a winner may have.

        That is 1, or with a TTL the code of the oldest event time `>= label - TTL`
        (`span` when no event time is that new).
        """
        if ttl_micros <= 0 or ttl_micros >= 2**64:
            # No TTL, or one that rules out no int64 time.
            return np.ones(len(labels), dtype=np.int64)
        # label - TTL, or the least int64 where that would be below it, without overflow:
        # `floor` is the least label for which label - TTL is an int64.
        floor = -(2**63) + ttl_micros
        if ttl_micros < 2**63:
            oldest = np.maximum(labels, floor) - ttl_micros
        else:
            oldest = (np.maximum(labels, floor) - floor) + np.int64(-(2**63))
        if self.distinct is not None:
            ranks: np.ndarray = np.searchsorted(self.distinct, oldest, side="left") + 1
            return ranks
        assert self.first is not None
        last = self.first + self.span - 2
        offsets = np.clip(oldest, self.first - 1, last) - (self.first - 1)
        return np.where(oldest > last, self.span, np.maximum(offsets, 1))

    def time_codes(self, labels: np.ndarray) -> np.ndarray:
        """Label times (int64 µs) as codes: a history row with code <= it is not later."""
        if self.distinct is not None:
            return np.searchsorted(self.distinct, labels, side="right")
        assert self.first is not None
        # Clipped first, so that nothing overflows: before the first event is 0, after
        # the last is the last offset.
        clipped: np.ndarray = np.clip(labels, self.first - 1, self.first + self.span - 2)
        return clipped - (self.first - 1)


def _direct_table(codes: pl.DataFrame, keys: list[str]) -> tuple[np.ndarray | None, int]:
    """Per `key - least key`, the key's code or -1, for one dense integer key; else None.

    The codes number the distinct keys in sorted order, so they are `0..len(codes) - 1`.
    """
    if len(keys) != 1 or not codes.height or not codes.schema[keys[0]].is_integer():
        return None, 0
    values = codes.get_column(keys[0]).to_numpy()
    low, high = int(values.min()), int(values.max())
    if high - low + 1 > DIRECT_SPREAD * codes.height:
        return None, 0
    dtype = np.int32 if codes.height < 2**31 else np.int64
    table = np.full(high - low + 1, -1, dtype=dtype)
    # In the keys' own type the differences fit (they are below the table's length).
    table[(values - values.dtype.type(low)).astype(np.intp)] = np.arange(codes.height, dtype=dtype)
    return table, low


def _direct_codes(column: pa.Array | pa.ChunkedArray, index: ViewIndex) -> np.ndarray:
    """The entity rows' key codes (int64, -1 for unknown or NULL) by direct addressing.

    `column` is already in the history key's type (`align_key`), so the comparisons with
    the least and greatest key are exact and the differences cannot overflow.
    """
    assert index.direct is not None
    table = index.direct
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    low = index.direct_low
    valid = None
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        column = column.fill_null(pa.scalar(low, column.type))
    values = column.to_numpy(zero_copy_only=False)
    first = values.dtype.type(low)
    inside = (values >= first) & (values <= values.dtype.type(low + len(table) - 1))
    if valid is not None:
        inside &= valid
    offsets = np.where(inside, values, first) - first
    found = table[offsets.astype(np.intp)].astype(np.int64)
    return np.where(inside, found, -1)


def _by_key_and_time(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The frame sorted by its keys, then `__t`.

    One integer key whose range times the time range fits an int64 sorts as one int64
    column `(key - least key) * time range + (time - first time)`: the same order, ~3x
    cheaper than a sort on two columns.
    """
    if len(keys) == 1 and frame.height and frame.schema[keys[0]].is_integer():
        key, time = frame.get_column(keys[0]), frame.get_column(_T)
        k_low, k_high = int(key.min()), int(key.max())  # type: ignore[arg-type]
        t_low, t_high = int(time.min()), int(time.max())  # type: ignore[arg-type]
        t_span = t_high - t_low + 1
        if k_low >= -(2**62) and k_high <= 2**62 and (k_high - k_low + 1) * t_span < _MAX_CODED:
            combined = (pl.col(keys[0]).cast(pl.Int64) - k_low) * t_span + (pl.col(_T) - t_low)
            return frame.sort(combined)
    return frame.sort([*keys, _T])


def winner_positions(
    keys: Sequence[pa.ChunkedArray | pa.Array],
    order: LabelOrder,
    index: ViewIndex,
    ttl_micros: int,
    *,
    slice_rows: int,
    cancelled: Callable[[], bool] = lambda: False,
) -> np.ndarray:
    """Per entity row, in input order, the winner's position in the view's features or -1.

    Args:
        keys: The entity rows' join key columns (input order), one per `index.keys`.
        order: The entity rows' label times.
        index: The view's index.
        ttl_micros: The view's TTL in microseconds (0: none).
        slice_rows: Entity rows searched at a time (bounds the search's memory).
        cancelled: Checked between slices; a True stops the work (the result is then
            incomplete and must not be used).

    """
    n = len(order)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(index.coded) == 0:
        return out
    aligned = {
        name: align_key(column, target)
        for name, column, target in zip(index.keys, keys, index.key_types(), strict=True)
    }
    # Unknown and NULL keys (no match: SQL equality) get code -1, below every row's.
    if index.direct is not None:
        codes = _direct_codes(aligned[index.keys[0]], index)
    else:
        key_frame = pl.from_arrow(pa.table(aligned))
        assert isinstance(key_frame, pl.DataFrame)
        codes = (
            key_frame.join(index.codes, on=index.keys, how="left", maintain_order="left")
            .get_column(_CODE)
            .cast(pl.Int64)
            .fill_null(-1)
            .to_numpy()
        )
        del key_frame
    step = max(1, slice_rows)
    for start in range(0, n, step):
        if cancelled():
            break
        code = codes[start : start + step]
        labels = order.times[start : start + step]
        known = code >= 0
        base = code * index.span
        wanted = np.where(known, base + index.time_codes(labels), -1)
        # The least coded value a winner may have: the same key (time codes are >= 1)
        # and, with a TTL, not too old. One comparison checks both.
        least = base + index.oldest_codes(labels, ttl_micros)
        by_wanted = pl.Series(wanted).arg_sort().to_numpy()
        found = np.searchsorted(index.coded, wanted[by_wanted], side="right") - 1
        # found == -1 (nothing at or below; so is every unknown key's) reads row -1 here,
        # and is masked.
        hit = (found >= 0) & (index.coded[found] >= least[by_wanted])
        out[start + by_wanted] = np.where(hit, index.positions[found], -1)
    return out
