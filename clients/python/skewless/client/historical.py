"""Historical retrieval: point-in-time-correct training data over `GetHistoricalFeatures`.

`get_historical_features` returns a `pyarrow.Table` (`.to_pandas()` is one call away);
`iter_historical_batches` yields record batches without building the whole table.
Entity rows may be a pyarrow Table/RecordBatch/RecordBatchReader, a pandas or polars
DataFrame (detected by duck typing; neither is a dependency), any object exporting an
Arrow stream, or a path string that the server reads itself (Parquet or CSV, a glob is
fine) so that large inputs never cross the wire. Inline rows are uploaded as a stream
of record batches while the server validates them.

Requests and responses skip the message classes: each entity batch request is written in
the protobuf wire format around the batch's IPC message (its columns copied once), and
each response arrives as raw bytes in which the record batch is located by its protobuf
framing, so that Arrow reads the columns in place.

These functions raise `grpc.RpcError` unchanged; `skewless.client.Client` calls them and
turns failures into the typed exceptions of `skewless.client.errors`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import pyarrow as pa

from skewless.client.feature_log import FeatureLog
from skewless.client.ipc_framing import IpcBatchWriter, encode_varint
from skewless.v1 import historical_service_pb2 as pb
from skewless.v1 import types_pb2

__all__ = [
    "DEFAULT_UPLOAD_ROWS",
    "OFFLINE_VERSIONS_KEY",
    "HistoricalBatches",
    "get_historical_features",
    "iter_historical_batches",
    "offline_versions",
]

#: Rows per uploaded entity batch unless the caller asks otherwise.
DEFAULT_UPLOAD_ROWS = 65_536
#: Uploaded batches are cut to stay under this size (the server accepts 64 MiB).
_UPLOAD_BYTES = 8 * 1024 * 1024

#: The full method name, called with raw response bytes (no response deserializer).
_METHOD = "/skewless.v1.HistoricalService/GetHistoricalFeatures"

_COMPRESSION = {
    None: pb.ARROW_COMPRESSION_UNSPECIFIED,
    "none": pb.ARROW_COMPRESSION_NONE,
    "lz4": pb.ARROW_COMPRESSION_LZ4_FRAME,
    "zstd": pb.ARROW_COMPRESSION_ZSTD,
}


def _plain(schema: pa.Schema) -> pa.Schema:
    """The schema with dictionary columns decoded (batches are sent self-contained)."""
    return pa.schema(
        [
            pa.field(f.name, f.type.value_type, f.nullable, f.metadata)
            if pa.types.is_dictionary(f.type)
            else f
            for f in schema
        ],
        metadata=schema.metadata,
    )


def _as_table(entity_rows: Any) -> pa.Table | None:
    """The entity rows as a table when they are already in memory, else None."""
    if isinstance(entity_rows, pa.Table):
        return entity_rows
    if isinstance(entity_rows, pa.RecordBatch):
        return pa.Table.from_batches([entity_rows])
    module = type(entity_rows).__module__ or ""
    if module.startswith("pandas"):
        return pa.Table.from_pandas(entity_rows, preserve_index=False)
    if module.startswith("polars") and hasattr(entity_rows, "to_arrow"):
        table: pa.Table = entity_rows.to_arrow()
        return table
    return None


def _as_stream(entity_rows: Any) -> pa.RecordBatchReader:
    """Entity rows that are not in memory as one table: a reader or an Arrow stream."""
    if isinstance(entity_rows, pa.RecordBatchReader):
        return entity_rows
    if hasattr(entity_rows, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(entity_rows)
    raise TypeError(
        "entity_rows must be a pyarrow Table, RecordBatch or RecordBatchReader, a pandas "
        "or polars DataFrame, an object exporting an Arrow stream, or a path string; got "
        f"{type(entity_rows).__name__}"
    )


def _upload_batches(reader: pa.RecordBatchReader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    schema = _plain(reader.schema)
    for batch in reader:
        if batch.schema != schema:
            batch = batch.cast(schema)
        if batch.num_rows == 0:
            continue
        rows = batch_rows
        if batch.nbytes > _UPLOAD_BYTES:
            rows = max(1, min(rows, batch.num_rows * _UPLOAD_BYTES // batch.nbytes))
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _entity_batch_request(prefix: bytes, parts: list[Any], size: int, rows: int) -> bytes:
    """A serialized request: `prefix` (other fields), then `entity_batch` (field 3).

    Written directly in the wire format, so that the batch's columns are copied once,
    into the request bytes, rather than into an IPC buffer, bytes, a message and its
    serialization.
    """
    trailer = b"\x10" + encode_varint(rows)  # row_count (2, varint)
    inner = 1 + len(encode_varint(size)) + size + len(trailer)
    header = b"\x1a" + encode_varint(inner) + b"\x0a" + encode_varint(size)
    return b"".join((prefix, header, *parts, trailer))


def _requests(
    query: pb.HistoricalQuery,
    reader: pa.RecordBatchReader | None,
    batch_rows: int,
    stop: threading.Event,
) -> Iterator[bytes]:
    """The serialized requests: the query, then the entity batches with the schema."""
    yield pb.GetHistoricalFeaturesRequest(query=query).SerializeToString()
    if reader is None:
        return
    plain = _plain(reader.schema)
    schema = pb.GetHistoricalFeaturesRequest(
        arrow_schema=pb.ArrowSchema(serialized_schema=plain.serialize().to_pybytes())
    ).SerializeToString()
    writer = IpcBatchWriter(plain)
    prefix = schema
    for batch in _upload_batches(reader, batch_rows):
        if stop.is_set():
            return
        parts, size = writer.write(batch)
        yield _entity_batch_request(prefix, parts, size, batch.num_rows)
        prefix = b""
    if prefix:
        yield schema


def _identity(data: bytes) -> bytes:
    return data


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decodes the protobuf varint at `pos`; returns it and the position after it."""
    value = shift = 0
    while shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("malformed varint")


def _skip(data: bytes, pos: int, wire_type: int) -> int:
    """The position after a field's value of `wire_type` starting at `pos`."""
    if wire_type == 0:
        return _varint(data, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == 2:
        size, pos = _varint(data, pos)
        return pos + size
    if wire_type == 5:
        return pos + 4
    raise ValueError(f"unsupported wire type {wire_type}")


def _record_batch_span(data: bytes) -> tuple[int, int, int] | None:
    """Where a serialized `GetHistoricalFeaturesResponse` holds its record batch.

    Returns (start, end, row_count) of `arrow_record_batch.serialized_record_batch`
    within `data`, or None when the response carries no record batch. Repeated
    occurrences merge as the protobuf rules say (the last value of a field wins).
    """
    span: tuple[int, int, int] | None = None
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        if key != 0x12:  # not field 2 (arrow_record_batch), length-delimited
            pos = _skip(data, pos, key & 7)
            continue
        size, pos = _varint(data, pos)
        stop = pos + size
        start, finish, rows = span or (0, 0, 0)
        while pos < stop:
            key, pos = _varint(data, pos)
            if key == 0x0A:  # serialized_record_batch
                size, pos = _varint(data, pos)
                start, finish = pos, pos + size
                pos = finish
            elif key == 0x10:  # row_count
                rows, pos = _varint(data, pos)
            else:
                pos = _skip(data, pos, key & 7)
        if pos != stop:
            raise ValueError("malformed arrow_record_batch")
        span = (start, finish, rows)
    if pos != end:
        raise ValueError("truncated response")
    return span


def _read_batch(data: bytes, schema: pa.Schema) -> pa.RecordBatch:
    """Reads the record batch of a serialized response, in place when aligned."""
    try:
        span = _record_batch_span(data)
    except (IndexError, ValueError):  # let the generated parser say what is wrong
        message = pb.GetHistoricalFeaturesResponse.FromString(data).arrow_record_batch
        span = None
        if message.serialized_record_batch:
            data = message.serialized_record_batch
            span = (0, len(data), message.row_count)
    if span is None:
        raise RuntimeError("a response after the schema carried no arrow_record_batch")
    start, end, rows = span
    buffer = pa.py_buffer(data).slice(start, end - start)
    if buffer.address % 8:  # Arrow expects 8-byte aligned columns: copy this one
        buffer = pa.py_buffer(data[start:end])
    batch = pa.ipc.read_record_batch(buffer, schema)
    if batch.num_rows != rows:
        raise RuntimeError(f"a response says row_count={rows} but holds {batch.num_rows} rows")
    return batch


class HistoricalBatches(Iterator[pa.RecordBatch]):
    """The result stream of one call: iterate for record batches; `schema` comes first.

    Closing it (or leaving a `with` block, or dropping it) cancels the call, which stops
    the server's query.
    """

    def __init__(
        self,
        responses: Any,
        stop: threading.Event,
        progress: Any = None,
        entity_rows: pa.Table | None = None,
    ) -> None:
        self._responses = responses  # serialized GetHistoricalFeaturesResponse messages
        self._stop = stop
        self._progress = progress
        # Set when the server sends only the features (`features_only`): the entity row
        # columns are attached here, by position, from the rows that were uploaded.
        self._entity_rows = entity_rows
        self._offset = 0
        self._wire_schema: pa.Schema | None = None
        self._schema: pa.Schema | None = None
        self._versions: dict[str, int] = {}
        self._done = False

    @property
    def schema(self) -> pa.Schema:
        """The result schema (entity row columns, then the features); waits for it."""
        if self._schema is None:
            data = next(self._responses, None)
            first = None if data is None else pb.GetHistoricalFeaturesResponse.FromString(data)
            if first is None or not first.HasField("arrow_schema"):
                self.close()
                raise RuntimeError("the server's first response carried no arrow_schema")
            wire = pa.ipc.read_schema(pa.py_buffer(first.arrow_schema.serialized_schema))
            self._wire_schema = wire
            self._versions = {v.feature_view: int(v.version) for v in first.offline_versions}
            if self._entity_rows is None:
                schema = wire
            else:
                schema = pa.schema([*self._entity_rows.schema, *wire])
            self._schema = schema.with_metadata(
                {**(schema.metadata or {}), OFFLINE_VERSIONS_KEY: json.dumps(self._versions)}
            )
        return self._schema

    @property
    def offline_versions(self) -> dict[str, int]:
        """The offline table version the server read for each view (see `offline_versions`)."""
        _ = self.schema
        return dict(self._versions)

    def __iter__(self) -> HistoricalBatches:
        return self

    def __next__(self) -> pa.RecordBatch:
        schema = self.schema
        if self._done:
            raise StopIteration
        try:
            data = next(self._responses)
        except StopIteration:
            self._finish()
            raise
        assert self._wire_schema is not None
        batch = _read_batch(data, self._wire_schema)
        if self._entity_rows is not None:
            batch = self._with_entity_columns(batch, schema)
        if self._progress is not None:
            self._progress.update(batch.num_rows)
        return batch

    def _with_entity_columns(self, features: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        assert self._entity_rows is not None
        rows = self._entity_rows.slice(self._offset, features.num_rows)
        if rows.num_rows != features.num_rows:
            self.close()
            raise RuntimeError(
                f"the server returned more result rows than the {self._entity_rows.num_rows} "
                "entity rows sent"
            )
        self._offset += features.num_rows
        entity = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in rows.columns]
        return pa.RecordBatch.from_arrays([*entity, *features.columns], schema=schema)

    def _finish(self) -> None:
        self._done = True
        self._stop.set()
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def close(self) -> None:
        """Cancels the call if it is still running."""
        if not self._done:
            self._responses.cancel()
        self._finish()

    def __enter__(self) -> HistoricalBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._done:
            self._responses.cancel()


#: The schema metadata key of a result's offline versions: JSON `{"view": version}`.
OFFLINE_VERSIONS_KEY = "skewless.offline_versions"


def offline_versions(result: pa.Table | pa.Schema) -> dict[str, int]:
    """The offline table version read per view for a result of `get_historical_features`.

    Pass it as `offline_versions=` to get the same result again.

    Raises:
        ValueError: The table does not come from `get_historical_features`.

    """
    schema = result if isinstance(result, pa.Schema) else result.schema
    raw = (schema.metadata or {}).get(OFFLINE_VERSIONS_KEY.encode())
    if raw is None:
        raise ValueError("this table carries no skewless offline versions")
    return {str(k): int(v) for k, v in json.loads(raw).items()}


def _progress_bar(enabled: bool, total: int | None) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is optional; retrieval works without it
        return None
    return tqdm(total=total, unit="rows", unit_scale=True, desc="historical features")


def iter_historical_batches(
    channel: grpc.Channel,
    entity_rows: Any,
    *,
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
    label_time_column: str = "event_timestamp",
    full_feature_names: bool = False,
    progress: bool = False,
    batch_rows: int = DEFAULT_UPLOAD_ROWS,
    result_batch_rows: int = 0,
    compression: str | None = None,
    sql: str | None = None,
    offline_versions: Mapping[str, int] | None = None,
    offline_as_of: datetime | None = None,
    timeout: float | None = None,
    metadata: Sequence[tuple[str, str]] = (),
) -> HistoricalBatches:
    """Starts a retrieval and returns its result as a stream of record batches.

    Args:
        channel: A channel to the skewless server.
        entity_rows: The entity rows (join keys, the label time column, any other
            columns), a path/glob of a Parquet or CSV file the server reads, or a
            `FeatureLog` (the calls a feature service served, labelled with their
            request time). None when `sql` is given.
        feature_service: The feature service to retrieve; or give `features`.
        features: Feature references `view:feature` or `view`, in output order.
        label_time_column: The column with each row's label time (naive = UTC).
        full_feature_names: Name feature columns `view__feature`.
        progress: Show a tqdm progress bar (when tqdm is installed).
        batch_rows: Rows per uploaded entity batch.
        result_batch_rows: Rows per result batch; 0 lets the server choose.
        compression: Compression of result batches on the wire: "lz4", "zstd", "none".
        sql: A DuckDB SELECT over registered data sources producing the entity rows,
            run by the server (instead of `entity_rows`).
        offline_versions: Read these views' offline tables at these versions, e.g.
            `offline_versions(earlier_result)`: the result is then byte-identical to that
            earlier one (a training set reproduced), until vacuum removes those files.
        offline_as_of: Read every view not pinned as its offline table was at this time
            (naive = UTC).
        timeout: Deadline of the whole call in seconds.
        metadata: gRPC metadata sent with the call.

    Returns:
        The result stream; iterate it, read `.schema` (whose metadata holds the versions
        read, see `offline_versions`), and `close()` it to cancel.

    Raises:
        ValueError: Neither or both of `feature_service` and `features`, both
            `entity_rows` and `sql`, or an unknown compression.
        grpc.RpcError: The call failed.

    """
    if (feature_service is None) == (features is None):
        raise ValueError("give exactly one of feature_service or features")
    if sql is not None and entity_rows is not None:
        raise ValueError("give entity_rows or sql, not both (pass None as entity_rows)")
    if compression not in _COMPRESSION:
        raise ValueError(f"compression must be one of lz4, zstd, none; got {compression!r}")
    query = pb.HistoricalQuery(
        label_time_column=label_time_column,
        full_feature_names=full_feature_names,
        compression=_COMPRESSION[compression],
        batch_size=result_batch_rows,
        offline_versions=[
            pb.OfflineVersion(feature_view=view, version=int(version))
            for view, version in (offline_versions or {}).items()
        ],
    )
    if offline_as_of is not None:
        when = offline_as_of if offline_as_of.tzinfo else offline_as_of.replace(tzinfo=UTC)
        query.offline_as_of_time.FromDatetime(when.astimezone(UTC))
    if feature_service is not None:
        query.feature_service = feature_service
    else:
        query.features.CopyFrom(types_pb2.FeatureList(features=list(features or ())))
    reader: pa.RecordBatchReader | None = None
    kept: pa.Table | None = None
    total: int | None = None
    if sql is not None:
        query.sql = sql
    elif isinstance(entity_rows, FeatureLog):
        query.feature_log.CopyFrom(entity_rows.to_proto())
        if label_time_column == "event_timestamp":  # the default: the log's request time
            query.label_time_column = "request_time"
    elif isinstance(entity_rows, str | os.PathLike):
        query.path = os.fspath(entity_rows)
    else:
        kept = _as_table(entity_rows)
        if kept is not None:
            # The rows are in memory already: the server need not send them back.
            plain = _plain(kept.schema)
            kept = kept if kept.schema == plain else kept.cast(plain)
            query.features_only = True
            reader = kept.to_reader()
            total = kept.num_rows
        else:
            reader = _as_stream(entity_rows)
            rows = getattr(entity_rows, "num_rows", None)
            total = rows if isinstance(rows, int) else None
        query.inline.SetInParent()
    stop = threading.Event()
    call = channel.stream_stream(
        _METHOD,
        request_serializer=_identity,  # `_requests` serializes them
        response_deserializer=None,  # raw bytes: batches are read from them in place
    )
    responses = call(
        _requests(query, reader, batch_rows, stop), timeout=timeout, metadata=tuple(metadata)
    )
    return HistoricalBatches(responses, stop, _progress_bar(progress, total), kept)


def get_historical_features(
    channel: grpc.Channel,
    entity_rows: Any,
    *,
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
    label_time_column: str = "event_timestamp",
    full_feature_names: bool = False,
    progress: bool = False,
    batch_rows: int = DEFAULT_UPLOAD_ROWS,
    result_batch_rows: int = 0,
    compression: str | None = None,
    sql: str | None = None,
    offline_versions: Mapping[str, int] | None = None,
    offline_as_of: datetime | None = None,
    timeout: float | None = None,
    metadata: Sequence[tuple[str, str]] = (),
) -> pa.Table:
    """Retrieves point-in-time-correct features for entity rows as a `pyarrow.Table`.

    One output row per entity row, in input order, with every input column, then the
    features in request order. Takes the arguments of `iter_historical_batches`. The
    table's schema metadata records the offline version read per view: pass
    `offline_versions(table)` back to reproduce it.

    Raises:
        ValueError: Neither or both of `feature_service` and `features`.
        grpc.RpcError: The call failed.

    """
    with iter_historical_batches(
        channel,
        entity_rows,
        feature_service=feature_service,
        features=features,
        label_time_column=label_time_column,
        full_feature_names=full_feature_names,
        progress=progress,
        batch_rows=batch_rows,
        result_batch_rows=result_batch_rows,
        compression=compression,
        sql=sql,
        offline_versions=offline_versions,
        offline_as_of=offline_as_of,
        timeout=timeout,
        metadata=metadata,
    ) as stream:
        schema = stream.schema
        return pa.Table.from_batches(list(stream), schema=schema)
