"""The skew report: what was served, against what training would have seen.

`skew_report` reads a feature service's log (`skewless.offline.feature_log`), takes the
logged rows as entity rows labelled with their request time, runs the ordinary
point-in-time join of historical retrieval (`skewless.offline.retrieval.start_retrieval`,
with each view's winning `event_timestamp` requested beside its features), and puts every
(logged row, feature) in exactly one category, decided in this order:

1. `EXPECTED_EMPTY`: served empty (NOT_FOUND, OUTSIDE_MAX_AGE) and no offline winner;
2. `MISSING_ONLINE`: served empty, but offline has a winner;
3. `SERVED_AHEAD`: served a row (PRESENT, NULL_VALUE), offline has none, or the
   served event time is after the offline winner's;
4. `SERVED_STALE`: the served event time is before the offline winner's (the lag is
   offline minus served);
5. same event time: `MATCH` when both are null or the values are bit-identical (floats
   compared by their bits, so NaN matches NaN and -0.0 does not match 0.0, unless a
   tolerance is given: then |served - offline| <= tolerance), else `VALUE_MISMATCH`.

The result is the `GetSkewReportResponse` message itself: the server returns it, the
CLI prints it as a table or JSON, and the server's schedule turns it into gauges.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import duration_pb2, timestamp_pb2

from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError
from skewless.core.names import EVENT_TIMESTAMP
from skewless.core.types import VALUE_FIELDS, list_element_type
from skewless.offline.feature_log import (
    LogColumns,
    iter_log,
    log_columns,
    log_files,
    read_log,
    require_log,
)
from skewless.offline.point_in_time import OUTPUT_BATCH_ROWS
from skewless.offline.retrieval import start_retrieval
from skewless.registry.feature_refs import (
    FeaturePlan,
    ResolvedFeature,
    resolve_feature_service,
)
from skewless.v1 import monitoring_service_pb2, registry_pb2, types_pb2

__all__ = [
    "CATEGORY_NAMES",
    "DEFAULT_EXAMPLES",
    "MAX_EXAMPLES",
    "categorize",
    "human_duration",
    "offline_plan",
    "skew_report",
    "summary_rows",
    "view_arrays",
]

_pb = monitoring_service_pb2
Cat = _pb.SkewCategory
VT = types_pb2.ValueType

#: Examples per feature when the request asks for 0.
DEFAULT_EXAMPLES = 5
#: Most examples per feature.
MAX_EXAMPLES = 100
#: Category numbers to their short names (`MATCH`, ...), in enum order.
CATEGORY_NAMES: dict[int, str] = {
    int(n): name.removeprefix("SKEW_CATEGORY_") for name, n in Cat.items() if n != 0
}
_CATEGORIES = tuple(CATEGORY_NAMES)
_NOT_MATCHING = (
    Cat.SKEW_CATEGORY_VALUE_MISMATCH,
    Cat.SKEW_CATEGORY_SERVED_STALE,
    Cat.SKEW_CATEGORY_SERVED_AHEAD,
    Cat.SKEW_CATEGORY_MISSING_ONLINE,
)
_LABEL = "__skewless_request_time"
_UTC_US = pa.timestamp("us", tz="UTC")
_FLOATS: dict[int, pa.DataType] = {
    int(VT.VALUE_TYPE_FLOAT32): pa.int32(),
    int(VT.VALUE_TYPE_FLOAT64): pa.int64(),
}
_MIN_INT64 = -(2**63)


def _offline_ts_name(view: str) -> str:
    return f"__offline_ts__{view}"


def offline_plan(plan: FeaturePlan) -> FeaturePlan:
    """The service's plan plus each view's winning event time, as a timestamp feature."""
    views = []
    extra = []
    for view in plan.views:
        ts = ResolvedFeature(
            view=view.name,
            name=EVENT_TIMESTAMP,
            value_type=VT.VALUE_TYPE_TIMESTAMP,
            output_name=_offline_ts_name(view.name),
        )
        extra.append(ts)
        # (every other field kept: the join reads the view's current generation)
        views.append(dataclasses.replace(view, features=(*view.features, ts)))
    return FeaturePlan(views=tuple(views), features=(*plan.features, *extra))


def _one(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _micros(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Timestamps as int64 microseconds, nulls as the smallest int64."""
    return _one(pc.fill_null(pc.cast(column, pa.int64()), _MIN_INT64))


def _valid(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return _one(pc.is_valid(column))


def _float_key(value: Any) -> Any:
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, list):
        return [_float_key(v) for v in value]
    return value


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or abs(a - b) <= tolerance
    return bool(a == b)


def _equal_values(
    served: pa.ChunkedArray, offline: pa.ChunkedArray, value_type: int, tolerance: float
) -> pa.Array:
    """Per row: both null, or both set and equal (bit for bit, or within the tolerance)."""
    s_valid, o_valid = _valid(served), _valid(offline)
    both_null = pc.and_(pc.invert(s_valid), pc.invert(o_valid))
    both = pc.and_(s_valid, o_valid)
    if value_type in _FLOATS:
        width = _FLOATS[value_type]
        s = _one(pc.fill_null(served, 0.0))
        o = _one(pc.fill_null(offline, 0.0))
        same = pc.equal(s.view(width), o.view(width))
        if tolerance > 0:
            near = pc.less_equal(
                pc.abs(pc.subtract(pc.cast(s, pa.float64()), pc.cast(o, pa.float64()))),
                tolerance,
            )
            same = pc.or_(same, pc.fill_null(near, False))
        return _one(pc.or_(both_null, pc.and_(both, same)))
    if list_element_type(value_type) is not None:
        flags = [False] * len(served)
        rows = pc.indices_nonzero(both)
        if len(rows):
            left = served.take(rows).to_pylist()
            right = offline.take(rows).to_pylist()
            for row, a, b in zip(rows.to_pylist(), left, right, strict=True):
                flags[row] = (
                    _close(a, b, tolerance) if tolerance > 0 else _float_key(a) == _float_key(b)
                )
        return _one(pc.or_(both_null, pa.array(flags, pa.bool_())))
    if pa.types.is_timestamp(served.type):
        served, offline = pc.cast(served, pa.int64()), pc.cast(offline, pa.int64())
    same = _one(pc.fill_null(pc.equal(served, offline), False))
    return _one(pc.or_(both_null, pc.and_(both, same)))


_SERVED = pa.array(["PRESENT", "NULL_VALUE"])


def _served_row(status: pa.ChunkedArray | pa.Array) -> pa.Array:
    status = _one(status)
    if isinstance(status, pa.DictionaryArray):  # as the log is read: test the few names
        flags = pc.is_in(status.dictionary, value_set=_SERVED)
        return _one(pc.fill_null(flags.take(status.indices), False))
    return _one(pc.fill_null(pc.is_in(status, value_set=_SERVED), False))


def _cat(c: int) -> pa.Scalar:
    return pa.scalar(c, pa.int8())


def view_arrays(
    served_time: pa.ChunkedArray, offline_time: pa.ChunkedArray
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """What every feature of a view shares: offline has a winner, both event times in µs."""
    return _valid(offline_time), _micros(served_time), _micros(offline_time)


def categorize(
    *,
    served_status: pa.ChunkedArray,
    served_value: pa.ChunkedArray,
    served_time: pa.ChunkedArray,
    offline_value: pa.ChunkedArray,
    offline_time: pa.ChunkedArray,
    value_type: int,
    tolerance: float = 0.0,
    prepared: tuple[pa.Array, pa.Array, pa.Array] | None = None,
) -> tuple[pa.Array, pa.Array]:
    """Puts each row in one `SkewCategory` (see the module docstring).

    Args:
        served_status: The served status names.
        served_value: The served values.
        served_time: The served event times.
        offline_value: The offline values at request time.
        offline_time: The offline winners' event times (null: no winner).
        value_type: The feature's `ValueType`.
        tolerance: 0 compares floats bit for bit; else the largest difference that matches.
        prepared: `view_arrays(served_time, offline_time)`, shared by a view's features.

    Returns:
        The category number per row (int8) and the lag per row in microseconds (offline
        winner's event time minus the served one; 0 unless SERVED_STALE).

    """
    served_row = _served_row(served_status)
    offline_row, s_ts, o_ts = prepared or view_arrays(served_time, offline_time)
    equal = _equal_values(served_value, offline_value, value_type, tolerance)
    category = pc.if_else(
        equal, _cat(Cat.SKEW_CATEGORY_MATCH), _cat(Cat.SKEW_CATEGORY_VALUE_MISMATCH)
    )
    category = pc.if_else(pc.less(s_ts, o_ts), _cat(Cat.SKEW_CATEGORY_SERVED_STALE), category)
    ahead = pc.or_(pc.invert(offline_row), pc.greater(s_ts, o_ts))
    category = pc.if_else(ahead, _cat(Cat.SKEW_CATEGORY_SERVED_AHEAD), category)
    empty = pc.if_else(
        offline_row, _cat(Cat.SKEW_CATEGORY_MISSING_ONLINE), _cat(Cat.SKEW_CATEGORY_EXPECTED_EMPTY)
    )
    category = _one(pc.if_else(served_row, category, empty))
    stale = pc.equal(category, _cat(Cat.SKEW_CATEGORY_SERVED_STALE))
    lag = _one(pc.if_else(stale, pc.subtract(o_ts, s_ts), pa.scalar(0, pa.int64())))
    return category, lag


def _view_lag(
    served_status: pa.ChunkedArray, served_time: pa.ChunkedArray, offline_time: pa.ChunkedArray
) -> pa.Array:
    """Per row where both sides have a row for the view: max(0, offline - served), µs."""
    both = pc.and_(_served_row(served_status), _valid(offline_time))
    lag = pc.max_element_wise(
        pc.subtract(_micros(offline_time), _micros(served_time)), pa.scalar(0, pa.int64())
    )
    return _one(pc.filter(lag, both))


def _duration(micros: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(int(micros))
    return d


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(micros))
    return t


def _lag(values: pa.Array) -> _pb.LagDistribution:
    """Nearest-rank quantiles: the p-quantile of n values is the ceil(p * n)-th smallest."""
    n = len(values)
    if n == 0:
        return _pb.LagDistribution(count=0)
    ordered = pc.array_sort_indices(values)

    def rank(p: float) -> int:
        return int(values[ordered[max(0, math.ceil(p * n) - 1)].as_py()].as_py())

    return _pb.LagDistribution(
        count=n,
        p50=_duration(rank(0.5)),
        p90=_duration(rank(0.9)),
        p99=_duration(rank(0.99)),
        max=_duration(pc.max(values).as_py()),
    )


def _value(py: Any, value_type: int) -> types_pb2.Value:
    """An Arrow value (as Python) as a `skewless.v1.Value`; null for None."""
    if py is None:
        return types_pb2.Value()
    value = types_pb2.Value()
    element = list_element_type(value_type)
    if value_type == VT.VALUE_TYPE_TIMESTAMP:
        value.timestamp_value.FromDatetime(py)
    elif element == VT.VALUE_TYPE_TIMESTAMP:
        for item in py:
            value.timestamp_list_value.values.add().FromDatetime(item)
    elif element is not None:
        getattr(value, VALUE_FIELDS[value_type]).values.extend(py)
    else:
        setattr(value, VALUE_FIELDS[value_type], py)
    return value


_STATUS_NUMBERS: dict[str, Any] = {
    name.removeprefix("FEATURE_STATUS_"): n for name, n in types_pb2.FeatureStatus.items()
}


def _time_of(scalar: pa.Scalar) -> timestamp_pb2.Timestamp | None:
    if not scalar.is_valid:
        return None
    return _timestamp(pc.cast(scalar, pa.int64()).as_py())


def _examples(
    rows: Sequence[int],
    keys: pa.Table,
    served: pa.Table,
    offline: pa.Table,
    plan: FeaturePlan,
    columns: LogColumns,
    category: pa.Array,
    *,
    offset: int = 0,
) -> list[_pb.SkewExample]:
    """The example rows, read value by value (a `take` would join every chunk first).

    `rows` index a batch that starts at log row `offset`: `served`, `offline` and
    `category` are the batch's; `keys` (the meta and key columns) is the whole log's.
    """
    f = columns.feature
    view = next(v for v in plan.views if v.name == f.view)
    out = []
    for local in rows:
        row = offset + local
        example = _pb.SkewExample(
            category=category[local].as_py(),
            request_id=keys.column("request_id")[row].as_py() or "",
            served_value=_value(served.column(columns.value)[local].as_py(), f.value_type),
            served_status=_STATUS_NUMBERS.get(
                served.column(columns.status)[local].as_py() or "", 0
            ),
            offline_value=_value(offline.column(f.output_name)[local].as_py(), f.value_type),
        )
        for target, scalar in (
            (example.request_time, keys.column("request_time")[row]),
            (example.served_event_time, served.column(columns.event_time)[local]),
            (example.offline_event_time, offline.column(_offline_ts_name(f.view))[local]),
        ):
            stamp = _time_of(scalar)
            if stamp is not None:
                target.CopyFrom(stamp)
        for key in view.join_keys:
            example.entity_key[key.name].CopyFrom(
                _value(keys.column(key.name)[row].as_py(), key.value_type)
            )
        out.append(example)
    return out


def _concat(parts: list[pa.Array]) -> pa.Array:
    if not parts:
        return pa.array([], pa.int64())
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


class _Prefetch:
    """Runs an iterator of tables in a thread, a few tables ahead.

    Parquet reads release the GIL: the log is read while the join and the comparison run.
    """

    _END = object()

    def __init__(self, tables: Iterator[pa.Table], ahead: int = 2) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(tables,), name="skewless-skew-read", daemon=True
        )
        self._thread.start()

    def _run(self, tables: Iterator[pa.Table]) -> None:
        try:
            for table in tables:
                while not self._stop.is_set():
                    try:
                        self._queue.put(table, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            item: object = self._END
        except BaseException as exc:  # raised again in the reading thread
            item = exc
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[pa.Table]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pa.Table)
            yield item

    def close(self) -> None:
        """Stops the thread (tables not taken are dropped)."""
        self._stop.set()
        self._thread.join()


class _Aligned:
    """Tables from an iterator, re-cut to the sizes asked for."""

    def __init__(self, tables: Iterator[pa.Table]) -> None:
        self._tables = tables
        self._held: list[pa.Table] = []
        self._rows = 0

    def take(self, n: int) -> pa.Table:
        """The next `n` rows as one table (one chunk per column)."""
        while self._rows < n:
            table = next(self._tables, None)
            if table is None:
                raise RuntimeError(f"the log ended {n - self._rows} rows early")
            self._held.append(table)
            self._rows += table.num_rows
        whole = pa.concat_tables(self._held) if len(self._held) > 1 else self._held[0]
        rest = whole.slice(n)
        self._held = [rest] if rest.num_rows else []
        self._rows -= n
        return whole.slice(0, n).combine_chunks()

    def done(self) -> bool:
        """Whether every row was taken."""
        return self._rows == 0 and all(t.num_rows == 0 for t in self._tables)


class _Tally:
    """One feature's counts, stale lags and example candidates over the batches so far."""

    def __init__(self) -> None:
        self.counts = np.zeros(max(_CATEGORIES) + 1, dtype=np.int64)
        self.lags: list[pa.Array] = []
        self.category: pa.Array | None = None
        #: (request time, log row, example) of the newest not matching rows so far.
        self.candidates: list[tuple[int, int, _pb.SkewExample]] = []

    def add(self, category: pa.Array, lag: pa.Array) -> None:
        self.counts += np.bincount(
            category.to_numpy(zero_copy_only=False), minlength=len(self.counts)
        )[: len(self.counts)]
        stale = pc.equal(category, _cat(Cat.SKEW_CATEGORY_SERVED_STALE))
        self.lags.append(_one(pc.filter(lag, stale)))
        self.category = category

    def pick(
        self,
        wanted: int,
        keys: pa.Table,
        served: pa.Table,
        offline: pa.Table,
        plan: FeaturePlan,
        columns: LogColumns,
        *,
        offset: int,
    ) -> None:
        """Keeps the batch's newest `wanted` not matching rows as example candidates.

        `served` and `offline` are the batch's rows, `offset` its first row in the log,
        `keys` the whole log's meta and key columns.
        """
        category = self.category
        assert category is not None
        flagged = pc.indices_nonzero(
            pc.is_in(category, value_set=pa.array(_NOT_MATCHING, pa.int8()))
        )
        if not len(flagged):
            return
        batch_times = keys.column("request_time").slice(offset, len(category))
        times = _micros(batch_times).take(flagged)
        newest = pc.sort_indices(times, sort_keys=[("", "descending")])  # stable: row order
        chosen = newest.slice(0, wanted)
        rows = flagged.take(chosen).to_pylist()
        stamps = times.take(chosen).to_pylist()
        examples = _examples(rows, keys, served, offline, plan, columns, category, offset=offset)
        self.candidates += zip(stamps, [offset + r for r in rows], examples, strict=True)

    def examples(self, wanted: int) -> list[_pb.SkewExample]:
        """The newest `wanted` candidates (ties: the earlier logged row first)."""
        ordered = sorted(self.candidates, key=lambda c: (-c[0], c[1]))
        return [example for _, _, example in ordered[:wanted]]


def _tally_batch(
    log: pa.Table,
    offline: pa.Table,
    plan: FeaturePlan,
    tallies: dict[str, _Tally],
    view_lags: dict[str, list[pa.Array]],
    tolerance: float,
) -> None:
    """Categorizes one batch of logged rows (`log`, already sliced) against its join rows."""
    prepared: dict[str, tuple[pa.Array, pa.Array, pa.Array]] = {}
    for columns in log_columns(plan):
        f = columns.feature
        offline_time = offline.column(_offline_ts_name(f.view))
        if f.view not in prepared:  # a view's features share its rows' event times
            prepared[f.view] = view_arrays(log.column(columns.event_time), offline_time)
            view_lags[f.view].append(
                _view_lag(log.column(columns.status), log.column(columns.event_time), offline_time)
            )
        category, lag = categorize(
            served_status=log.column(columns.status),
            served_value=log.column(columns.value),
            served_time=log.column(columns.event_time),
            offline_value=offline.column(f.output_name),
            offline_time=offline_time,
            value_type=f.value_type,
            tolerance=tolerance,
            prepared=prepared[f.view],
        )
        tallies[columns.value].add(category, lag)


def _distinct(column: pa.ChunkedArray) -> int:
    if not len(column):
        return 0
    return len(pc.unique(column))  # on dictionaries too (unifies them; 3x a cast's speed)


def _check_range(start_us: int | None, end_us: int | None, tolerance: float, examples: int) -> None:
    if start_us is not None and end_us is not None and end_us < start_us:
        raise InvalidArgumentError(
            "the end of the range is before its start; swap them",
            field="end_time",
            reason="WINDOW_REVERSED",
        )
    if tolerance < 0 or tolerance != tolerance:
        raise InvalidArgumentError(
            f"float_tolerance must be 0 or more, got {tolerance}",
            field="float_tolerance",
            reason="OUT_OF_RANGE",
            metadata={"float_tolerance": str(tolerance)},
        )
    if examples < 0 or examples > MAX_EXAMPLES:
        raise InvalidArgumentError(
            f"max_examples must be from 0 to {MAX_EXAMPLES}, got {examples}",
            field="max_examples",
            reason="OUT_OF_RANGE",
            metadata={"max_examples": str(examples)},
        )


def skew_report(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    service: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    float_tolerance: float = 0.0,
    max_examples: int = 0,
) -> _pb.GetSkewReportResponse:
    """Computes the skew report of a feature service over [start, end) of its log.

    Args:
        config: The repository.
        registry: The registry (the service's current definition gives the features).
        service: The feature service.
        start_us: Earliest request time (inclusive, microseconds), or None.
        end_us: Latest request time (exclusive, microseconds), or None.
        float_tolerance: 0 compares floats bit for bit; else the largest difference
            that still matches.
        max_examples: Examples per feature (0: `DEFAULT_EXAMPLES`).

    Raises:
        NotFoundError: No such feature service.
        InvalidArgumentError: A reversed range, a negative tolerance or example count.
        FailedPreconditionError: The service has no log and logging is off.

    """
    _check_range(start_us, end_us, float_tolerance, max_examples)
    examples_wanted = max_examples or DEFAULT_EXAMPLES
    plan = resolve_feature_service(registry, service, full_feature_names=True)
    require_log(config, registry, service)
    files = log_files(config, service, start_us=start_us, end_us=end_us)
    # The join needs only the keys and request times: it starts on those while the served
    # columns are read beside it (the same files, so the same rows in the same order).
    log = read_log(
        config, service, plan, start_us=start_us, end_us=end_us, served=False, files=files
    )
    response = _pb.GetSkewReportResponse(
        feature_service=service,
        logged_rows=log.num_rows,
        logged_requests=_distinct(log.column("request_id")),
        float_tolerance=float_tolerance,
    )
    times = pc.cast(log.column("request_time"), pa.int64())
    if start_us is not None:
        response.start_time.CopyFrom(_timestamp(start_us))
    elif log.num_rows:
        response.start_time.CopyFrom(_timestamp(pc.min(times).as_py()))
    if end_us is not None:
        response.end_time.CopyFrom(_timestamp(end_us))
    elif log.num_rows:
        response.end_time.CopyFrom(_timestamp(pc.max(times).as_py() + 1))
    tallies = {c.value: _Tally() for c in log_columns(plan)}
    view_lags: dict[str, list[pa.Array]] = {v.name: [] for v in plan.views}
    # The served columns are read batch by batch beside the join's batches (the same
    # files, so the same rows in the same order): neither side is ever held whole.
    reading = _Prefetch(
        iter_log(
            config,
            service,
            plan,
            start_us=start_us,
            end_us=end_us,
            files=files,
            served_only=True,  # the meta and key columns are `log`'s
        )
    )
    served = _Aligned(iter(reading))
    join = _start_join(config, plan, log)
    offset = 0
    try:
        for batch in join.reader:
            offline = pa.Table.from_batches([batch])
            if not offline.num_rows:
                continue
            part = served.take(offline.num_rows)
            _tally_batch(part, offline, plan, tallies, view_lags, float_tolerance)
            for columns in log_columns(plan):
                tallies[columns.value].pick(
                    examples_wanted, log, part, offline, plan, columns, offset=offset
                )
            offset += offline.num_rows
    finally:
        join.close()
        reading.close()
    if offset != log.num_rows or not served.done():
        raise RuntimeError(f"the join gave {offset} rows for {log.num_rows} logged rows")
    total = bad = 0
    for columns in log_columns(plan):
        f = columns.feature
        tally = tallies[columns.value]
        rows = int(tally.counts.sum())
        counts = {c: int(tally.counts[c]) for c in _CATEGORIES}
        not_matching = sum(counts[c] for c in _NOT_MATCHING)
        total += rows
        bad += not_matching
        feature = response.features.add(
            feature_view=f.view,
            feature=f.name,
            rows=rows,
            mismatch_rate=not_matching / rows if rows else 0.0,
        )
        for c in _CATEGORIES:
            n = counts[c]
            feature.categories.add(category=c, count=n, rate=n / rows if rows else 0.0)
        feature.stale_lag.CopyFrom(_lag(_concat(tally.lags)))
        feature.examples.extend(tally.examples(examples_wanted))
    for view in plan.views:
        lags = _concat(view_lags[view.name])
        response.views.add(
            feature_view=view.name,
            rows=len(lags),
            stale_rows=int(pc.sum(pc.greater(lags, 0)).as_py() or 0),
            lag=_lag(lags),
        )
    response.mismatch_rate = bad / total if total else 0.0
    return response


def _start_join(config: RepoConfig, plan: FeaturePlan, log: pa.Table) -> Any:
    """The point-in-time join of the logged rows at their request times (features only).

    Streamed in batches of `OUTPUT_BATCH_ROWS`, in log order.
    """
    keys = [k.name for k in plan.join_keys]
    # One chunk per column: the join's input is sliced and registered, cheaper whole.
    entity_rows = pa.table(
        [*(log.column(k) for k in keys), log.column("request_time")], names=[*keys, _LABEL]
    ).combine_chunks()
    join = start_retrieval(
        config,
        offline_plan(plan),
        entity_rows,
        label_time_column=_LABEL,
        batch_rows=OUTPUT_BATCH_ROWS,
        entity_columns=False,
    )
    return join


def summary_rows(report: _pb.GetSkewReportResponse) -> Sequence[tuple[str, ...]]:
    """The report as table rows: a header, then one row per feature."""
    header = ("feature", "rows", *CATEGORY_NAMES.values(), "mismatch", "stale p50", "stale p99")
    out: list[tuple[str, ...]] = [header]
    for f in report.features:
        counts: dict[int, int] = {int(c.category): c.count for c in f.categories}
        lag = f.stale_lag
        out.append(
            (
                f"{f.feature_view}:{f.feature}",
                f"{f.rows:,}",
                *(f"{counts.get(c, 0):,}" for c in CATEGORY_NAMES),
                f"{f.mismatch_rate:.2%}",
                human_duration(lag.p50.ToMicroseconds()) if lag.count else "-",
                human_duration(lag.p99.ToMicroseconds()) if lag.count else "-",
            )
        )
    return out


def human_duration(micros: int) -> str:
    """A duration in microseconds as a short text: `850ms`, `12.5s`, `20.0m`, `3.9h`, `2.0d`."""
    seconds = micros / 1e6
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
