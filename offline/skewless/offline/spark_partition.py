"""The per-partition step of the Spark engine's point-in-time join (runs on Spark's workers).

Spark hands `join_partition` one hash bucket of the entity keys: every entity row and
every pruned history row of one view whose key falls in that bucket. Since a key's rows
are all in one bucket, joining each bucket alone gives the whole join's answer, and the
bucket is joined by the very code the DuckDB engine runs (`skewless.offline.asof`):

1. ties (two history rows with one key and one event time) are resolved as
   `skewless.offline.history_index` does: the greatest created time (NULL below every
   value), then the greatest file rank (the committed files sorted by path), then the
   greatest row in that file;
2. `winner_positions` finds each entity row's winner (TTL included) or none;
3. the winners' features are gathered with `take` and returned with the entity rows'
   input row numbers; rows without a winner are left out (the driver fills nulls).

This module imports only pyarrow, numpy, polars and `asof`: the driver pickles it by
value, so a cluster's workers need those libraries but not skewless itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from skewless.offline import asof

__all__ = [
    "BUCKET",
    "CREATED",
    "FILE_RANK",
    "FILE_ROW",
    "LABEL",
    "ROW",
    "TIME",
    "feature_column",
    "partition_join",
]

#: Entity-side columns: input row number and label time (int64 microseconds).
ROW = "__row"
LABEL = "__t"
#: History-side columns: event and created time (int64 µs), file rank, row in file.
TIME = "__ts"
CREATED = "__c"
FILE_RANK = "__fi"
FILE_ROW = "__fr"
#: The hash bucket of the join keys, on both sides.
BUCKET = "__b"
_POS = "__pos"


def feature_column(j: int) -> str:
    """The name of a view's `j`-th feature in the partition tables."""
    return f"__f{j}"


def _winners(history: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The index (keys, event time, position) keeping one winner per (key, event time)."""
    frame = pl.from_arrow(
        history.select([*keys, TIME, CREATED, FILE_RANK, FILE_ROW]).append_column(
            _POS, pa.array(np.arange(history.num_rows, dtype=np.int64))
        )
    )
    assert isinstance(frame, pl.DataFrame)
    group = [*keys, TIME]
    if frame.select(pl.struct(group).is_duplicated().any()).item():
        frame = frame.sort(
            [*group, CREATED, FILE_RANK, FILE_ROW],
            descending=[False] * len(group) + [True, True, True],
            nulls_last=True,
        ).unique(subset=group, keep="first", maintain_order=True)
    return frame.select([*group, _POS]).to_arrow()


def partition_join(
    keys: Sequence[str], ttl_micros: int, n_features: int, *, slice_rows: int
) -> Callable[[pa.Table, pa.Table], pa.Table]:
    """The function Spark's `cogroup(...).applyInArrow` runs on each bucket of one view.

    Args:
        keys: The view's join key names (same Arrow types on both sides).
        ttl_micros: The view's TTL in microseconds (0: none).
        n_features: How many `__f<j>` feature columns the history side carries.
        slice_rows: Entity rows joined at a time (as in the DuckDB engine).

    Returns:
        `fn(entities, history)`: entities have the keys, `__t` and `__row`; history has
        the keys, `__ts`, `__c`, `__fi`, `__fr` and the features. It returns `__row` and
        the features of every entity row that has a winner.

    """
    key_names = list(keys)
    features = [feature_column(j) for j in range(n_features)]

    def join_bucket(entities: pa.Table, history: pa.Table) -> pa.Table:
        out_fields = [pa.field(ROW, pa.int64()), *(history.schema.field(f) for f in features)]
        empty = pa.schema(out_fields).empty_table()
        if entities.num_rows == 0 or history.num_rows == 0:
            return empty
        index = asof.ViewIndex.of(_winners(history, key_names), key_names, TIME, _POS)
        order = asof.LabelOrder.of(entities.column(LABEL))
        positions = asof.winner_positions(
            [entities.column(k) for k in key_names],
            order,
            index,
            ttl_micros,
            slice_rows=slice_rows,
        )
        hit = np.flatnonzero(positions >= 0)
        if len(hit) == 0:
            return empty
        take = pa.array(positions[hit])
        rows = entities.column(ROW).take(pa.array(hit))
        return pa.Table.from_arrays(
            [rows, *(history.column(f).take(take) for f in features)],
            schema=pa.schema(out_fields),
        )

    return join_bucket
