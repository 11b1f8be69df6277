"""The feature log of a feature service: what was served, as a typed Parquet table.

One row per served entity row of a logged `GetOnlineFeatures` call, with columns:

* `request_id` (string), `request_time` (timestamp[us, UTC]), `registry_version` (int64);
* every join key of the service, by name, in its declared type;
* per feature, named `<view>__<feature>`: its served value in the declared type (null
  unless PRESENT), `<view>__<feature>__status` (the `FeatureStatus` name without its
  prefix: `PRESENT`, `NULL_VALUE`, `NOT_FOUND`, `OUTSIDE_MAX_AGE`) and
  `<view>__<feature>__event_time` (timestamp[us, UTC]; null when NOT_FOUND). The value
  column's field metadata `skewless.storage` names the view's generation it was served
  from; `read_log` reads the columns of another generation than the current one as null.

Files live under `<data_dir>/offline/_logs/<service>/date=YYYY-MM-DD/` (the UTC day of
the request time), one per flush of one server process, named
`<flush time>-<pid>-<sequence>.parquet`: workers of `skewless serve --workers N` never
write the same name. A file is written as `<name>.tmp`, fsynced and renamed: readers see
whole files only. Any Parquet reader reads them (`read_parquet('.../_logs/s/*/*.parquet')`
in DuckDB, `pyarrow.dataset.dataset(..., partitioning="hive")`).

This module decodes what the server handed off (the parsed request and the response
bytes) into those columns, writes files, and reads a time range back
(`read_log`). It writes its own files: the history store's manifests are for views.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError, InvalidArgumentError
from skewless.core.names import FEATURE_LOG_DIR
from skewless.core.types import VALUE_FIELDS, arrow_type, list_element_type
from skewless.offline.log_decoding import decode_batch
from skewless.registry.feature_refs import FeaturePlan, ResolvedFeature, resolve_feature_service
from skewless.v1 import online_service_pb2, registry_pb2, types_pb2

__all__ = [
    "DECODE_CHUNK_BYTES",
    "LOG_COMPRESSION",
    "LOG_META_SCHEMA",
    "SERVED_PREFIX",
    "STATUS_NAMES",
    "STORAGE_METADATA",
    "LogColumns",
    "LoggedCall",
    "decode_calls",
    "iter_log",
    "log_columns",
    "log_dir",
    "log_entity_rows",
    "log_files",
    "log_schema",
    "read_log",
    "require_log",
    "write_log_file",
]

VT = types_pb2.ValueType
_UTC_US = pa.timestamp("us", tz="UTC")

#: The columns every log row starts with.
LOG_META_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("request_time", _UTC_US),
        pa.field("registry_version", pa.int64()),
    ]
)
#: `FeatureStatus` numbers to the names the log stores.
STATUS_NAMES: dict[int, str] = {
    number: name.removeprefix("FEATURE_STATUS_") for name, number in types_pb2.FeatureStatus.items()
}
_STATUS_ARRAY = pa.array([STATUS_NAMES.get(i, "UNSPECIFIED") for i in range(max(STATUS_NAMES) + 1)])
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
_PRESENT = types_pb2.FEATURE_STATUS_PRESENT
_NOT_FOUND = types_pb2.FEATURE_STATUS_NOT_FOUND


@dataclass(frozen=True)
class LogColumns:
    """The log columns of one feature of a service.

    Attributes:
        feature: The feature.
        value: Column of the served value.
        status: Column of the served status name.
        event_time: Column of the served event time.

    """

    feature: ResolvedFeature
    value: str
    status: str
    event_time: str


def log_columns(plan: FeaturePlan) -> list[LogColumns]:
    """The log columns of each feature of a plan, in plan order."""
    out = []
    for f in plan.features:
        base = f"{f.view}__{f.name}"
        out.append(LogColumns(f, base, f"{base}__status", f"{base}__event_time"))
    return out


#: Field metadata of a served value column: the storage name (the view's generation,
#: `skewless.core.names.storage_name`) it was served from.
STORAGE_METADATA = b"skewless.storage"


def log_schema(plan: FeaturePlan) -> pa.Schema:
    """The Arrow schema of a service's log rows.

    Each served value column records, as field metadata, the storage name of the view's
    generation it was served from, so that values of an earlier generation are never read
    back as the current definition (`read_log`).
    """
    storage = {v.name: v.storage_name for v in plan.views}
    fields = list(LOG_META_SCHEMA)
    fields += [pa.field(k.name, arrow_type(k.value_type)) for k in plan.join_keys]
    for c in log_columns(plan):
        stored = storage.get(c.feature.view, c.feature.view)
        fields.append(
            pa.field(
                c.value,
                arrow_type(c.feature.value_type),
                metadata={STORAGE_METADATA: stored.encode()},
            )
        )
        fields.append(pa.field(c.status, pa.string()))
        fields.append(pa.field(c.event_time, _UTC_US))
    return pa.schema(fields)


@dataclass(frozen=True)
class LoggedCall:
    """One sampled call as the request path handed it off (nothing decoded yet).

    Attributes:
        request: The `GetOnlineFeaturesRequest`, parsed (by the boundary) or as received
            (the writer process reads the keys from the bytes).
        response: The serialized `GetOnlineFeaturesResponse` sent to the caller.
        request_time_us: When the call was served, in microseconds since the epoch.
        request_id: The id echoed to the caller.
        registry_version: The registry version the call was served from.

    """

    request: online_service_pb2.GetOnlineFeaturesRequest | bytes
    response: bytes
    request_time_us: int
    request_id: str
    registry_version: int


def _micros(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def _key_values(column: types_pb2.RepeatedValue) -> list[Any]:
    out: list[Any] = []
    for value in column.values:
        kind = value.WhichOneof("kind")
        out.append(None if kind is None or kind == "null_value" else getattr(value, kind))
    return out


def _value_getter(value_type: int) -> Any:
    """Reads one present value (lists and timestamps: a Python value per row)."""
    name = VALUE_FIELDS[value_type]
    element = list_element_type(value_type)
    if value_type == VT.VALUE_TYPE_TIMESTAMP:
        return lambda v: _micros(v.timestamp_value)
    if element == VT.VALUE_TYPE_TIMESTAMP:
        return lambda v: [_micros(t) for t in v.timestamp_list_value.values]
    return lambda v: list(getattr(v, name).values)


#: Scalar types read with one attribute getter over every value (nulls masked afterwards).
_PLAIN = frozenset(
    {
        VT.VALUE_TYPE_INT32,
        VT.VALUE_TYPE_INT64,
        VT.VALUE_TYPE_FLOAT32,
        VT.VALUE_TYPE_FLOAT64,
        VT.VALUE_TYPE_STRING,
        VT.VALUE_TYPE_BYTES,
        VT.VALUE_TYPE_BOOL,
    }
)


@dataclass
class _Columns:
    """Column lists of one service's rows being decoded.

    Scalar values are read with one `attrgetter` per vector (a null reads as the type's
    default and is masked by its status at the end); event times are read once per view
    (every feature of a view carries its row's event time).
    """

    plan: FeaturePlan
    meta: list[list[Any]] = field(default_factory=lambda: [[], [], []])
    keys: dict[str, list[Any]] = field(default_factory=dict)
    values: list[list[Any]] = field(default_factory=list)
    statuses: list[list[int]] = field(default_factory=list)
    times: dict[str, list[int]] = field(default_factory=dict)
    rows: int = 0

    def __post_init__(self) -> None:
        self.keys = {k.name: [] for k in self.plan.join_keys}
        n = len(self.plan.features)
        self.values = [[] for _ in range(n)]
        self.statuses = [[] for _ in range(n)]
        self.times = {v.name: [] for v in self.plan.views}
        self._plain = [
            attrgetter(VALUE_FIELDS[f.value_type]) if f.value_type in _PLAIN else None
            for f in self.plan.features
        ]
        self._getters = [_value_getter(f.value_type) for f in self.plan.features]
        firsts: dict[str, int] = {}
        for i, f in enumerate(self.plan.features):
            firsts.setdefault(f.view, i)
        self._time_of = list(firsts.items())

    def add(self, call: LoggedCall) -> None:
        response = online_service_pb2.GetOnlineFeaturesResponse.FromString(call.response)
        vectors = response.results
        if len(vectors) != len(self.plan.features):
            raise ValueError(
                f"a response with {len(vectors)} features for a plan of "
                f"{len(self.plan.features)} (registry version {call.registry_version})"
            )
        n = len(vectors[0].statuses) if vectors else 0
        request = call.request
        if isinstance(request, bytes):
            request = online_service_pb2.GetOnlineFeaturesRequest.FromString(request)
        for name, column in self.keys.items():
            given = request.entities.get(name)
            column.extend(_key_values(given) if given is not None else [None] * n)
        for view, i in self._time_of:
            self.times[view].extend(
                t.seconds * 1_000_000 + t.nanos // 1000 for t in vectors[i].event_times
            )
        for i, vector in enumerate(vectors):
            statuses = list(vector.statuses)
            self.statuses[i].extend(statuses)
            plain = self._plain[i]
            if plain is not None:
                self.values[i].extend(map(plain, vector.values))
            else:
                get = self._getters[i]
                self.values[i].extend(
                    get(v) if s == _PRESENT else None
                    for v, s in zip(vector.values, statuses, strict=True)
                )
        self.meta[0].extend([call.request_id] * n)
        self.meta[1].extend([call.request_time_us] * n)
        self.meta[2].extend([call.registry_version] * n)
        self.rows += n

    def table(self) -> pa.Table:
        schema = log_schema(self.plan)
        arrays: list[pa.Array] = [
            pa.array(self.meta[0], pa.string()),
            pa.array(self.meta[1], pa.int64()).cast(_UTC_US),
            pa.array(self.meta[2], pa.int64()),
        ]
        for key in self.plan.join_keys:
            arrays.append(pa.array(self.keys[key.name], arrow_type(key.value_type)))
        times = {view: pa.array(t, pa.int64()) for view, t in self.times.items()}
        for i, feature in enumerate(self.plan.features):
            dtype = arrow_type(feature.value_type)
            codes = pa.array(self.statuses[i], pa.int8())
            if self._plain[i] is not None:
                present = pc.equal(codes, pa.scalar(_PRESENT, pa.int8()))
                raw = pa.array(self.values[i], dtype)
                values = pc.if_else(present, raw, pa.scalar(None, dtype))
            elif pa.types.is_timestamp(dtype):
                values = pa.array(self.values[i], pa.int64()).cast(dtype)
            elif pa.types.is_list(dtype) and pa.types.is_timestamp(dtype.value_type):
                values = pa.array(self.values[i], pa.list_(pa.int64())).cast(dtype)
            else:
                values = pa.array(self.values[i], dtype)
            found = pc.not_equal(codes, pa.scalar(_NOT_FOUND, pa.int8()))
            arrays.append(values)
            arrays.append(pc.take(_STATUS_ARRAY, codes))
            arrays.append(
                pc.if_else(found, times[feature.view], pa.scalar(None, pa.int64())).cast(_UTC_US)
            )
        return pa.Table.from_arrays(arrays, schema=schema)


#: Most response bytes decoded in one piece (bounds the decoder's memory and the time
#: it holds the GIL at once; each feature's part of a piece is parsed in one call).
DECODE_CHUNK_BYTES = 4 * 1024 * 1024


def decode_calls(
    plan: FeaturePlan, calls: Iterable[LoggedCall], *, vectorized: bool = True
) -> pa.Table:
    """Decodes handed-off calls of one service (one registry version) into log rows.

    Calls are decoded in pieces of about `DECODE_CHUNK_BYTES` of responses, column by
    column (`skewless.offline.log_decoding.decode_batch`); a piece that path declines is
    decoded call by call, value by value (the general path, also with
    `vectorized=False`), to the same rows.

    Raises:
        ValueError: A response does not hold one vector per feature of the plan.

    """
    schema = log_schema(plan)
    tables: list[pa.Table] = []
    for piece in _pieces(list(calls)):
        table = None
        if vectorized:
            table = decode_batch(
                plan,
                requests=[c.request for c in piece],
                responses=[c.response for c in piece],
                request_ids=[c.request_id for c in piece],
                request_times_us=[c.request_time_us for c in piece],
                registry_versions=[c.registry_version for c in piece],
                schema=schema,
            )
        if table is None:
            columns = _Columns(plan)
            for call in piece:
                columns.add(call)
            table = columns.table()
        tables.append(table)
    if not tables:
        return schema.empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _pieces(calls: list[LoggedCall]) -> list[list[LoggedCall]]:
    pieces: list[list[LoggedCall]] = []
    size = DECODE_CHUNK_BYTES
    for call in calls:
        if size >= DECODE_CHUNK_BYTES:
            pieces.append([])
            size = 0
        pieces[-1].append(call)
        size += len(call.response)
    return pieces


def log_dir(config: RepoConfig, service: str) -> Path:
    """The local folder of one feature service's log (a local data dir only)."""
    return config.offline_dir / FEATURE_LOG_DIR / service


def _log_key(service: str) -> str:
    """The folder key of one feature service's log in the data dir."""
    return f"offline/{FEATURE_LOG_DIR}/{service}"


#: The log files' codec: LZ4 writes and reads at a fraction of zstd's CPU (the writer runs
#: beside the server, the report reads every column) for files about 1.5x larger.
LOG_COMPRESSION = "lz4"

_sequence_lock = threading.Lock()
_sequence = 0


def write_log_file(config: RepoConfig, service: str, table: pa.Table) -> list[str]:
    """Writes log rows as one file per UTC day of request time, atomically.

    Returns:
        The files written (paths of the data dir's filesystem).

    """
    global _sequence
    if table.num_rows == 0:
        return []
    times = table.column("request_time")
    bounds = pc.min_max(times)
    first, last = (_day_of(bounds[k]) for k in ("min", "max"))
    # Dictionaries where values repeat (ids, statuses, strings), statistics where readers
    # filter (request time, keys): each costs a third of the write on the other columns.
    meta = len(LOG_META_SCHEMA)
    repeated = [
        f.name
        for f in table.schema
        if f.name == "request_id"
        or f.name.endswith("__status")
        or pa.types.is_string(f.type)
        or pa.types.is_binary(f.type)
    ]
    summarized = ["request_time"] + [
        f.name
        for f in list(table.schema)[meta:]
        if not f.metadata and not f.name.endswith(("__status", "__event_time"))
    ]
    written = []
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    if first == last:  # a flush within one day (nearly all): the table as it is
        parts: Iterable[tuple[date, pa.Table]] = [(first, table)]
    else:
        days = pc.cast(times, pa.date32())
        parts = (
            (day, table.filter(pc.equal(days, pa.scalar(day, pa.date32()))))
            for day in pc.unique(days).to_pylist()
        )
    for day, part in parts:
        with _sequence_lock:
            _sequence += 1
            seq = _sequence
        key = f"{_log_key(service)}/date={day.isoformat()}/{stamp}-{os.getpid()}-{seq:06d}.parquet"
        buffer = pa.BufferOutputStream()
        pq.write_table(
            part,
            buffer,
            compression=LOG_COMPRESSION,
            use_dictionary=repeated,
            write_statistics=summarized,
        )
        # A local temporary file renamed into place, or one PUT: never a partial file.
        config.storage.write_bytes(key, buffer.getvalue().to_pybytes())
        written.append(config.storage.fs_path(key))
    return written


def _day_of(scalar: pa.Scalar) -> date:
    return _day(pc.cast(scalar, pa.int64()).as_py())


def log_files(
    config: RepoConfig, service: str, *, start_us: int | None = None, end_us: int | None = None
) -> list[str]:
    """The log files of a service whose day may hold request times in [start, end).

    Paths of the data dir's filesystem (`config.storage.filesystem`), sorted.
    """
    storage = config.storage
    root = _log_key(service)
    first = _day(start_us) if start_us is not None else None
    last = _day(end_us - 1) if end_us is not None else None
    files: list[str] = []
    for folder in storage.list_dirs(root):
        if not folder.startswith("date="):
            continue
        try:
            day = date.fromisoformat(folder.removeprefix("date="))
        except ValueError:
            continue
        if (first is not None and day < first) or (last is not None and day > last):
            continue
        files.extend(
            storage.fs_path(f.key)
            for f in storage.list_files(f"{root}/{folder}")
            if f.key.endswith(".parquet")
        )
    return files


def _day(micros: int) -> date:
    return _instant(micros).date()


def _instant(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def read_log(
    config: RepoConfig,
    service: str,
    plan: FeaturePlan,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    served: bool = True,
    ordered: bool = False,
    files: list[str] | None = None,
) -> pa.Table:
    """Reads a service's log rows with request time in [start, end).

    Args:
        config: The repository.
        service: The feature service.
        plan: The service's current plan: its join keys and features give the columns
            (a column no file holds, as after a definition change, comes back null).
        start_us: Earliest request time (inclusive), or None.
        end_us: Latest request time (exclusive), or None.
        served: Also return the served columns of every feature (else meta and keys).
        ordered: Sort by request time (else rows come in file order: by flush, then as
            written).
        files: The files to read (`log_files` of the range, listed once by a caller that
            reads them twice and needs the same rows both times).

    Returns:
        The rows in `log_schema(plan)` (or its meta and key columns), with `request_id`
        and the status columns dictionary-encoded.

    """
    return next(
        _log_parts(
            config,
            service,
            plan,
            start_us=start_us,
            end_us=end_us,
            served=served,
            ordered=ordered,
            files=files,
            batch_rows=None,
        )
    )


def iter_log(
    config: RepoConfig,
    service: str,
    plan: FeaturePlan,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    files: list[str] | None = None,
    batch_rows: int = 65_536,
    served_only: bool = False,
) -> Iterator[pa.Table]:
    """`read_log`'s rows (every column, in file order) as tables of at most `batch_rows`.

    With `served_only`, only the served columns of each feature (value, status, event
    time) are read: a caller that holds the meta and key columns already.
    """
    return _log_parts(
        config,
        service,
        plan,
        start_us=start_us,
        end_us=end_us,
        served=True,
        ordered=False,
        files=files,
        batch_rows=batch_rows,
        served_only=served_only,
    )


def _log_parts(
    config: RepoConfig,
    service: str,
    plan: FeaturePlan,
    *,
    start_us: int | None,
    end_us: int | None,
    served: bool,
    ordered: bool,
    files: list[str] | None,
    batch_rows: int | None,
    served_only: bool = False,
) -> Iterator[pa.Table]:
    schema = log_schema(plan)
    first_served = len(LOG_META_SCHEMA) + len(plan.join_keys)
    if not served:
        schema = pa.schema(list(schema)[:first_served])
    elif served_only:
        schema = pa.schema(list(schema)[first_served:])
    if files is None:
        files = log_files(config, service, start_us=start_us, end_us=end_us)
    if not files:
        if batch_rows is None:
            yield schema.empty_table()
        return
    # Statuses and request ids repeat: read them as dictionaries (a third of the cost).
    repeated = [f.name for f in schema if f.name == "request_id" or f.name.endswith("__status")]
    read_schema = pa.schema(
        [pa.field(f.name, _DICTIONARY) if f.name in repeated else f for f in schema]
    )
    options = ds.ParquetReadOptions(dictionary_columns=repeated)
    condition = None
    time = ds.field("request_time")
    if start_us is not None:
        condition = time >= pa.scalar(start_us, pa.int64()).cast(_UTC_US)
    if end_us is not None:
        before = time < pa.scalar(end_us, pa.int64()).cast(_UTC_US)
        condition = before if condition is None else condition & before
    # Files in runs by which views they hold another generation of (those columns then
    # read as null, like a column no file holds): never an old type read as the new one.
    fs = config.storage.filesystem
    runs: list[tuple[frozenset[str], list[str]]] = []
    for path in files:
        stale = _other_generations(path, plan, fs) if served else frozenset()
        if runs and runs[-1][0] == stale:
            runs[-1][1].append(path)
        else:
            runs.append((stale, [path]))
    parts = []
    for stale, paths in runs:
        dropped = {
            name
            for c in log_columns(plan)
            if c.feature.view in stale
            for name in (c.value, c.status, c.event_time)
        }
        readable = pa.schema([f for f in read_schema if f.name not in dropped])
        fmt = ds.ParquetFileFormat(read_options=options)
        pieces: Iterable[pa.Table]
        if batch_rows is None:
            pieces = [
                ds.dataset(list(paths), filesystem=fs, schema=readable, format=fmt).to_table(
                    filter=condition
                )
            ]
        else:  # file by file, batch by batch: in file order, never whole
            pieces = (
                piece
                for path in paths
                for piece in _file_batches(
                    fs, path, readable, repeated, start_us, end_us, batch_rows
                )
            )
        for part in pieces:
            if dropped:
                part = pa.Table.from_arrays(
                    [
                        pa.nulls(part.num_rows, f.type)
                        if f.name in dropped
                        else part.column(f.name)
                        for f in read_schema
                    ],
                    schema=read_schema,
                )
            parts.append(part)
            if batch_rows is not None:
                yield part
                parts.clear()
    if batch_rows is not None:
        return
    table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    if ordered and table.num_rows:
        table = table.take(pc.sort_indices(table.column("request_time")))
    yield table


def _file_batches(
    fs: pafs.FileSystem,
    path: str,
    schema: pa.Schema,
    repeated: list[str],
    start_us: int | None,
    end_us: int | None,
    batch_rows: int,
) -> Iterator[pa.Table]:
    """One log file's rows in `schema` with request time in [start, end), batch by batch.

    Read with the Parquet reader itself, one thread (a dataset scan of the same columns
    costs 4 to 6 times its CPU); a column the file does not hold comes back null.
    """
    with fs.open_input_file(path) as source:
        reader = pq.ParquetFile(source, read_dictionary=repeated)
        held = set(reader.schema_arrow.names)
        wanted = [f.name for f in schema if f.name in held]
        if (start_us is not None or end_us is not None) and "request_time" not in wanted:
            wanted.append("request_time")  # to filter on, not returned
        for batch in reader.iter_batches(batch_rows, columns=wanted, use_threads=False):
            table = pa.Table.from_batches([batch])
            if start_us is not None or end_us is not None:
                times = pc.cast(table.column("request_time"), pa.int64())
                keep = None
                if start_us is not None:
                    keep = pc.greater_equal(times, start_us)
                if end_us is not None:
                    before = pc.less(times, end_us)
                    keep = before if keep is None else pc.and_(keep, before)
                table = table.filter(keep)
            yield pa.Table.from_arrays(
                [
                    table.column(f.name).cast(f.type)
                    if f.name in held
                    else pa.nulls(table.num_rows, f.type)
                    for f in schema
                ],
                schema=schema,
            )


def _other_generations(path: str, plan: FeaturePlan, fs: pafs.FileSystem) -> frozenset[str]:
    """The views whose served columns in a log file come from another generation.

    A column without the metadata (or of a file written before it was recorded) was
    served from generation 0, the view's own name.
    """
    schema = pq.read_schema(path, filesystem=fs)
    names = set(schema.names)
    stale = set()
    for c in log_columns(plan):
        view = c.feature.view
        if view in stale or c.value not in names:
            continue
        metadata = schema.field(c.value).metadata or {}
        stored = metadata.get(STORAGE_METADATA, view.encode()).decode()
        current = next((v.storage_name for v in plan.views if v.name == view), view)
        if stored != current:
            stale.add(view)
    return frozenset(stale)


#: Prefix of the served columns `log_entity_rows` adds when asked.
SERVED_PREFIX = "served__"


def log_entity_rows(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    service: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    include_served_values: bool = False,
) -> pa.Table:
    """A service's logged rows as entity rows for historical retrieval.

    Columns: `request_id`, `request_time`, `registry_version`, the join keys, and with
    `include_served_values` per feature `served__<view>__<feature>` (the value) and
    `served__<view>__<feature>__status`. Rows are in request-time order.

    Raises:
        NotFoundError: No such feature service.
        InvalidArgumentError: The end is before the start.
        FailedPreconditionError: The service has no log and logging is off.

    """
    if start_us is not None and end_us is not None and end_us < start_us:
        raise InvalidArgumentError(
            "feature_log.end_time is before its start_time; swap them",
            field="query.feature_log.end_time",
            reason="WINDOW_REVERSED",
        )
    plan = resolve_feature_service(registry, service, full_feature_names=True)
    require_log(config, registry, service)
    table = read_log(
        config,
        service,
        plan,
        start_us=start_us,
        end_us=end_us,
        served=include_served_values,
        ordered=True,
    )
    table = _plain_strings(table)
    if not include_served_values:
        return table
    keep = len(LOG_META_SCHEMA) + len(plan.join_keys)
    names = list(table.column_names[:keep])
    columns = [table.column(n) for n in names]
    for c in log_columns(plan):
        names += [SERVED_PREFIX + c.value, SERVED_PREFIX + c.status]
        columns += [table.column(c.value), table.column(c.status)]
    return pa.Table.from_arrays(columns, names=names)


def _plain_strings(table: pa.Table) -> pa.Table:
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def require_log(config: RepoConfig, registry: registry_pb2.Registry, service: str) -> None:
    """Refuses a service that has no log at all while its logging is off.

    Raises:
        FailedPreconditionError: `FEATURE_LOGGING_DISABLED`.

    """
    for s in registry.feature_services:
        if s.name == service and s.HasField("logging") and s.logging.sample_rate > 0:
            return
    if log_files(config, service):
        return
    raise FailedPreconditionError(
        f"feature service {service!r} has no feature log: set logging.sample_rate in its "
        "definition, apply, and serve some calls first",
        reason="FEATURE_LOGGING_DISABLED",
        metadata={"feature_service": service},
    )
