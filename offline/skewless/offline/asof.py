"""The as-of step of the point-in-time join: each entity row's winning history position.

Given a view's history index (join keys, event time, position; at most one row per key
and event time, which `skewless.offline.history_index` guarantees) and the entity rows
(join keys, label time), `winner_positions` returns, per entity row, the position of the
history row with the same key and the greatest event time `<= label time`, or -1 when
there is none, the key is NULL, or the TTL rules that row out (`event time < label time -
TTL`: the newest candidate is too old, so every other one is too).

It runs as a sort-merge in Polars (`join_asof` with `by`): the entity rows are sorted by
label time once for every view, the index by event time once per view, and the entity
rows are joined in label-ordered slices, each against only the index rows its label
range can reach. The positions are then scattered back into input order, so the
features never travel through a sort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["LabelOrder", "ViewIndex", "align_key", "winner_positions"]

_ROW = "__row"
_T = "__t"
_POS = "__pos"

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
    """The entity rows sorted by label time once, shared by every view of a join.

    Attributes:
        rows: Input row number of each row in label order (uint32 or uint64).
        labels: Label times in label order (int64 microseconds).

    """

    rows: pl.Series
    labels: pl.Series

    @classmethod
    def of(cls, labels: pa.ChunkedArray | pa.Array) -> LabelOrder:
        """Sorts label times (timestamps, or int64 microseconds) with their row numbers."""
        micros = pl.Series(_T, labels.cast(pa.int64()))
        order = micros.arg_sort()
        return cls(rows=order, labels=micros.gather(order))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class ViewIndex:
    """A view's history index sorted by event time.

    Attributes:
        frame: Join keys (in their history types), `__t` event time (int64 µs) and
            `__pos` (the row's position in the view's features), by `__t`.
        times: The `__t` column as NumPy, for finding a label range's rows.
        keys: The join key names.

    """

    frame: pl.DataFrame
    times: np.ndarray
    keys: list[str]

    @classmethod
    def of(cls, index: pa.Table, keys: Sequence[str], time: str, position: str) -> ViewIndex:
        """Builds it from an index table with the given key, time and position columns."""
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
        frame = frame.sort(_T)
        return cls(frame=frame, times=frame.get_column(_T).to_numpy(), keys=list(keys))

    def key_types(self) -> list[pa.DataType]:
        """The Arrow type of each join key column."""
        schema = self.frame.head(0).to_arrow().schema
        return [schema.field(k).type for k in self.keys]

    def window(self, low: int | None, high: int) -> pl.DataFrame:
        """The rows with `low <= __t <= high` (no lower bound when `low` is None)."""
        start = 0 if low is None else int(np.searchsorted(self.times, low, side="left"))
        stop = int(np.searchsorted(self.times, high, side="right"))
        return self.frame.slice(start, max(0, stop - start))


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
        order: The entity rows' label order.
        index: The view's index.
        ttl_micros: The view's TTL in microseconds (0: none).
        slice_rows: Entity rows joined at a time (bounds the join's memory).
        cancelled: Checked between slices; a True stops the work (the result is then
            incomplete and must not be used).

    """
    n = len(order)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or index.frame.height == 0:
        return out
    aligned = {
        name: align_key(column, target)
        for name, column, target in zip(index.keys, keys, index.key_types(), strict=True)
    }
    key_frame = pl.from_arrow(pa.table(aligned))
    assert isinstance(key_frame, pl.DataFrame)
    # A NULL key never matches (SQL equality), so such rows keep -1.
    has_key = (
        key_frame.select(pl.all_horizontal(pl.all().is_not_null())).to_series()
        if sum(key_frame.null_count().row(0))
        else None
    )
    for start in range(0, n, max(1, slice_rows)):
        if cancelled():
            break
        rows = order.rows.slice(start, slice_rows)
        labels = order.labels.slice(start, slice_rows)
        low = int(labels[0]) - ttl_micros if ttl_micros > 0 else None
        right = index.window(low, int(labels[-1]))
        if right.height == 0:
            continue
        left = key_frame.select(pl.all().gather(rows)).with_columns(labels, rows.alias(_ROW))
        if has_key is not None:
            left = left.filter(has_key.gather(rows))
        if left.height == 0:
            continue
        joined = left.join_asof(
            right.rename({_T: "__ts"}),
            left_on=_T,
            right_on="__ts",
            by=index.keys,
            strategy="backward",
            check_sortedness=False,
        )
        hit = pl.col(_POS).is_not_null()
        if ttl_micros > 0:
            hit = hit & (pl.col("__ts") >= pl.col(_T) - ttl_micros)
        found = joined.filter(hit)
        out[found.get_column(_ROW).to_numpy()] = found.get_column(_POS).to_numpy()
    return out
