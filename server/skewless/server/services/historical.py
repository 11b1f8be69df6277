"""`skewless.v1.HistoricalService`: point-in-time-correct training data.

One call: the first request carries the `HistoricalQuery`; the features are resolved
and every requested view is checked for history before any entity row is read. Inline
entity rows then arrive as `arrow_schema` + `entity_batch` messages (the schema is
validated as soon as it arrives); `path` and `sql` sources are read by the server with
DuckDB. The join runs in worker threads; the response stream carries the schema first,
then one record batch per response, pulled from the join only as fast as gRPC sends
them (flow control), so the server holds the result a few batches at a time. When the
client cancels, the DuckDB query is interrupted and its memory released.

Responses go to the wire as pre-serialized bytes (registered by `add_historical_servicer`
with an identity serializer): each record batch response is written directly in the
protobuf wire format around the IPC message, whose column buffers are copied once, into
the response bytes, instead of into an IPC buffer, a message and its serialization.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pyarrow as pa

from skewless.client.ipc_framing import IpcBatchWriter, encode_varint
from skewless.core.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
)
from skewless.offline.entity_rows import read_path, read_sql
from skewless.offline.offline_store import EVENT_TIMESTAMP, history_files
from skewless.offline.point_in_time import (
    DEFAULT_BATCH_ROWS,
    PointInTimeJoin,
    ViewHistory,
    label_time_range,
    point_in_time_join,
    validate_entity_schema,
)
from skewless.registry.feature_refs import (
    FeaturePlan,
    resolve_feature_refs,
    resolve_feature_service,
)
from skewless.server import metrics
from skewless.server.context import ServerContext
from skewless.server.errors import grpc_stream_errors
from skewless.v1 import historical_service_pb2, historical_service_pb2_grpc, registry_pb2

__all__ = [
    "JOIN_MEMORY_LIMIT",
    "MAX_BATCH_ROWS",
    "SOFT_MESSAGE_BYTES",
    "HistoricalServicer",
    "add_historical_servicer",
]

_log = logging.getLogger(__name__)
_pb = historical_service_pb2

#: DuckDB memory per retrieval; past it the join spills to `<data_dir>/tmp/duckdb`.
JOIN_MEMORY_LIMIT = "1GB"
#: History feature bytes a retrieval holds in memory; past it they are memory-mapped
#: from a file under `<data_dir>/tmp/duckdb` (removed from the directory at once).
HISTORY_MEMORY_LIMIT = 512 * 2**20
#: Largest `batch_size` a query may ask for.
MAX_BATCH_ROWS = 1_048_576
#: With the default batch size, batches are cut so a response stays under this size
#: (gRPC clients accept 4 MiB messages by default).
SOFT_MESSAGE_BYTES = 3 * 1024 * 1024

_COMPRESSION: dict[int, str | None] = {
    _pb.ARROW_COMPRESSION_UNSPECIFIED: None,
    _pb.ARROW_COMPRESSION_NONE: None,
    _pb.ARROW_COMPRESSION_LZ4_FRAME: "lz4",
    _pb.ARROW_COMPRESSION_ZSTD: "zstd",
}

T = TypeVar("T")

#: Threads that run the joins (DuckDB parallelizes each query itself).
_WORKERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="historical")


#: Tags of `GetHistoricalFeaturesResponse.arrow_record_batch` (field 2, length-delimited)
#: and of `ArrowRecordBatch.row_count` (2, varint) and `.serialized_record_batch` (1,
#: length-delimited).
_TAG_RECORD_BATCH = b"\x12"
_TAG_ROW_COUNT = b"\x10"
_TAG_SERIALIZED = b"\x0a"
#: The header before the IPC message is 16 bytes: the tags, both lengths as 5-byte
#: varints and the row count as a 3-byte one (`MAX_BATCH_ROWS` < 2**21). The IPC message
#: (whose buffers are 8-byte aligned within it) then starts 8-byte aligned in the
#: received bytes, and the client reads the columns in place.
_HEADER_BYTES = 16
_LENGTH_WIDTH = 5
_ROWS_WIDTH = 3


def record_batch_response(parts: Sequence[Any], ipc_size: int, row_count: int) -> bytes:
    """A serialized `GetHistoricalFeaturesResponse` carrying one IPC record batch message.

    Args:
        parts: The IPC message as consecutive buffers (anything `bytes.join` takes).
        ipc_size: Their total length.
        row_count: The batch's row count.

    Returns:
        The message's wire bytes, copying `parts` once: `arrow_record_batch` with
        `row_count` then `serialized_record_batch` (any field order is valid protobuf),
        behind a 16-byte header.

    """
    rows = encode_varint(row_count, _ROWS_WIDTH)
    size = encode_varint(ipc_size, _LENGTH_WIDTH)
    fields = _TAG_ROW_COUNT + rows + _TAG_SERIALIZED + size
    inner = encode_varint(len(fields) + ipc_size, _LENGTH_WIDTH)
    header = _TAG_RECORD_BATCH + inner + fields
    if len(header) != _HEADER_BYTES:  # a row count past 2**21 or a message past 32 GiB
        raise ValueError(f"cannot frame a batch of {row_count} rows and {ipc_size} bytes")
    return b"".join((header, *parts))


class _BatchEncoder:
    """Encodes record batches as serialized responses, with the query's compression."""

    def __init__(self, schema: pa.Schema, compression: str | None) -> None:
        options = pa.ipc.IpcWriteOptions(compression=compression)
        self.writer = IpcBatchWriter(schema, options)

    def encode(self, batch: pa.RecordBatch) -> bytes:
        parts, size = self.writer.write(batch)
        return record_batch_response(parts, size, batch.num_rows)


def _plan(registry: registry_pb2.Registry, query: _pb.HistoricalQuery) -> FeaturePlan:
    kind = query.WhichOneof("kind")
    if kind == "feature_service":
        return resolve_feature_service(
            registry, query.feature_service, full_feature_names=query.full_feature_names
        )
    if kind == "features":
        return resolve_feature_refs(
            registry, list(query.features.features), full_feature_names=query.full_feature_names
        )
    raise InvalidArgumentError(
        "the query names no features; set feature_service or features",
        field="query.kind",
        reason="NO_FEATURES",
    )


def _batch_rows(query: _pb.HistoricalQuery) -> int:
    if query.batch_size < 0 or query.batch_size > MAX_BATCH_ROWS:
        raise InvalidArgumentError(
            f"batch_size {query.batch_size} is out of range; use 0 (default "
            f"{DEFAULT_BATCH_ROWS}) up to {MAX_BATCH_ROWS}",
            field="query.batch_size",
            reason="OUT_OF_RANGE",
            metadata={"batch_size": str(query.batch_size), "max": str(MAX_BATCH_ROWS)},
        )
    return query.batch_size or DEFAULT_BATCH_ROWS


def _plain_types(table: pa.Table) -> pa.Table:
    """Decodes dictionary columns: each response carries one self-contained batch."""
    if not any(pa.types.is_dictionary(f.type) for f in table.schema):
        return table
    fields = [
        pa.field(f.name, f.type.value_type, f.nullable, f.metadata)
        if pa.types.is_dictionary(f.type)
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


async def _receive_inline(
    first: _pb.GetHistoricalFeaturesRequest,
    requests: AsyncIterator[_pb.GetHistoricalFeaturesRequest],
    plan: FeaturePlan,
    label_time_column: str,
) -> pa.Table:
    schema: pa.Schema | None = None
    batches: list[pa.RecordBatch] = []

    def take(request: _pb.GetHistoricalFeaturesRequest) -> None:
        nonlocal schema
        if request.HasField("arrow_schema"):
            if schema is not None:
                raise InvalidArgumentError(
                    "arrow_schema was sent twice; send it once, with the first entity batch",
                    field="arrow_schema",
                    reason="DUPLICATE_SCHEMA",
                )
            try:
                schema = pa.ipc.read_schema(pa.py_buffer(request.arrow_schema.serialized_schema))
            except (pa.ArrowException, ValueError) as exc:
                raise InvalidArgumentError(
                    f"arrow_schema is not an Arrow IPC schema: {exc}",
                    field="arrow_schema",
                    reason="BAD_ARROW_DATA",
                ) from exc
            validate_entity_schema(schema, plan, label_time_column)
        if request.HasField("entity_batch"):
            if schema is None:
                raise InvalidArgumentError(
                    "an entity_batch came before arrow_schema; send the schema first",
                    field="arrow_schema",
                    reason="MISSING_SCHEMA",
                )
            message = request.entity_batch
            try:
                batch = pa.ipc.read_record_batch(
                    pa.py_buffer(message.serialized_record_batch), schema
                )
            except (pa.ArrowException, ValueError) as exc:
                raise InvalidArgumentError(
                    f"entity_batch {len(batches)} is not an Arrow IPC record batch of the "
                    f"sent schema: {exc}",
                    field="entity_batch",
                    reason="BAD_ARROW_DATA",
                    metadata={"batch": str(len(batches))},
                ) from exc
            if message.row_count != batch.num_rows:
                raise InvalidArgumentError(
                    f"entity_batch {len(batches)} says row_count={message.row_count} but "
                    f"holds {batch.num_rows} rows",
                    field="entity_batch.row_count",
                    reason="BAD_ARROW_DATA",
                    metadata={"batch": str(len(batches))},
                )
            batches.append(batch)
        if request.HasField("query") and request is not first:
            raise InvalidArgumentError(
                "query was sent twice; send it in the first request only",
                field="query",
                reason="DUPLICATE_QUERY",
            )

    take(first)
    async for request in requests:
        take(request)
    if schema is None:
        raise InvalidArgumentError(
            "no entity rows arrived: an inline query needs arrow_schema and entity_batch "
            "messages after the query",
            field="arrow_schema",
            reason="MISSING_SCHEMA",
        )
    return pa.Table.from_batches(batches, schema=schema)


class HistoricalServicer(historical_service_pb2_grpc.HistoricalServiceServicer):
    """Serves `GetHistoricalFeatures`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    def _check_history(self, plan: FeaturePlan) -> None:
        for view in plan.views:
            if not history_files(self.ctx.config, view.name):
                raise FailedPreconditionError(
                    f"feature view {view.name!r} has no offline history yet; run "
                    f"`skewless materialize` (or push rows) for it first",
                    reason="NOT_MATERIALIZED",
                    metadata={"feature_view": view.name},
                )

    def _histories(self, plan: FeaturePlan, table: pa.Table, label: str) -> list[ViewHistory]:
        """Lists each view's files that may hold candidates for the entity rows."""
        span = label_time_range(table, label)
        histories = []
        for view in plan.views:
            if span is None:
                files: list[Path] = []
            else:
                start = span[0] - dt.timedelta(microseconds=view.ttl_micros)
                end = span[1] + dt.timedelta(microseconds=1)
                files = history_files(
                    self.ctx.config, view.name, start=start if view.ttl_micros else None, end=end
                )
            histories.append(ViewHistory(view, tuple(files)))
        return histories

    async def GetHistoricalFeatures(
        self,
        request_iterator: AsyncIterator[_pb.GetHistoricalFeaturesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[_pb.GetHistoricalFeaturesResponse]:
        """Streams the point-in-time join of the client's entity rows (see the proto)."""
        async for data in self.get_historical_features_bytes(request_iterator, context):
            yield _pb.GetHistoricalFeaturesResponse.FromString(data)

    @grpc_stream_errors
    async def get_historical_features_bytes(
        self,
        request_iterator: AsyncIterator[_pb.GetHistoricalFeaturesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        """Like `GetHistoricalFeatures`, yielding each response serialized."""
        started = time.perf_counter()
        seen = _Seen()
        failure: BaseException | None = None
        try:
            async with contextlib.aclosing(self._retrieve(request_iterator, context, seen)) as out:
                async for response in out:
                    yield response
        except BaseException as exc:
            failure = exc
            raise
        finally:
            seconds = time.perf_counter() - started
            code = metrics.status_code_name(failure)
            metrics.observe_request("GetHistoricalFeatures", seen.feature_service, code, seconds)
            _log.info(
                "historical retrieval %s: %d entity rows in %.2f s (%s)",
                code,
                seen.rows,
                seconds,
                seen.feature_service or "feature list",
            )

    async def _retrieve(
        self,
        request_iterator: AsyncIterator[_pb.GetHistoricalFeaturesRequest],
        context: grpc.aio.ServicerContext,
        seen: _Seen,
    ) -> AsyncGenerator[bytes, None]:
        """Yields the serialized responses; notes the feature service and row count."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or not first.HasField("query"):
            raise InvalidArgumentError(
                "the first request must carry the query", field="query", reason="MISSING_QUERY"
            )
        query = first.query
        registry = self.ctx.registry.current
        plan = _plan(registry, query)
        if query.WhichOneof("kind") == "feature_service":
            seen.feature_service = query.feature_service  # known to exist: a safe label
        self._check_history(plan)
        batch_rows = _batch_rows(query)
        compression = _COMPRESSION.get(query.compression)
        label = query.label_time_column or EVENT_TIMESTAMP
        source = query.WhichOneof("entity_rows")
        root = self.ctx.config.root
        roots = self.ctx.config.entity_roots
        if source == "inline":
            table = await _receive_inline(first, requests, plan, label)
        elif source == "path":
            table = await asyncio.to_thread(read_path, roots, root, query.path)
        elif source == "sql":
            table = await asyncio.to_thread(read_sql, roots, root, registry, query.sql)
        else:
            raise InvalidArgumentError(
                "the query names no entity rows; set inline, path or sql",
                field="query.entity_rows",
                reason="NO_ENTITY_ROWS",
            )
        table = _plain_types(table)
        validate_entity_schema(table.schema, plan, label)
        histories = await asyncio.to_thread(self._histories, plan, table, label)
        join = await asyncio.to_thread(
            point_in_time_join,
            table,
            plan,
            histories,
            label_time_column=label,
            batch_rows=batch_rows,
            memory_limit=JOIN_MEMORY_LIMIT,
            history_memory_limit=HISTORY_MEMORY_LIMIT,
            entity_columns=not query.features_only,
            temp_directory=self.ctx.config.data_dir / "tmp" / "duckdb",
        )
        del table
        seen.rows = join.num_rows
        running = _Running(join)
        # A cancelled call may leave this generator suspended at a `yield` that is never
        # resumed; the done callback stops DuckDB and frees the join in every case.
        context.add_done_callback(lambda _: running.release())
        async for response in _stream(running, compression, split=query.batch_size == 0):
            yield response


@dataclass
class _Seen:
    """What a retrieval has learnt about itself, for its metrics and log line."""

    feature_service: str = ""
    rows: int = 0


class _Running:
    """A join being streamed: runs its blocking steps in worker threads, releases once."""

    def __init__(self, join: PointInTimeJoin) -> None:
        self.join = join
        # The thread's own future: an awaiting task that is cancelled marks its asyncio
        # wrapper done at once, while the thread may still be inside DuckDB.
        self.in_flight: Future[Any] | None = None
        self.released = False

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future = _WORKERS.submit(fn)
        self.in_flight = future
        return asyncio.wrap_future(future)

    def next_batch(self) -> pa.RecordBatch | None:
        try:
            return self.join.reader.read_next_batch()
        except StopIteration:
            return None

    def release(self) -> None:
        """Interrupts DuckDB and closes the join (after a worker still inside it returns)."""
        if self.released:
            return
        self.released = True
        self.join.cancel()
        pending = self.in_flight
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _: _close_quietly(self.join))
        else:
            _close_quietly(self.join)


async def _stream(
    running: _Running, compression: str | None, *, split: bool
) -> AsyncIterator[bytes]:
    """Yields the serialized schema response, then one per batch; releases the join on exit."""
    join = running.join
    try:
        encoder = _BatchEncoder(join.schema, compression)
        yield _pb.GetHistoricalFeaturesResponse(
            arrow_schema=_pb.ArrowSchema(serialized_schema=join.schema.serialize().to_pybytes())
        ).SerializeToString()
        while True:
            batch = await running.run(running.next_batch)
            if batch is None:
                break
            for part in _split(batch) if split else (batch,):
                yield await running.run(functools.partial(encoder.encode, part))
    finally:
        running.release()


def _split(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    size = batch.nbytes
    if size <= SOFT_MESSAGE_BYTES or batch.num_rows <= 1:
        return [batch]
    rows = max(1, batch.num_rows * SOFT_MESSAGE_BYTES // size)
    return [batch.slice(start, rows) for start in range(0, batch.num_rows, rows)]


def _close_quietly(join: PointInTimeJoin) -> None:
    with contextlib.suppress(Exception):
        join.close()


def _identity(data: bytes) -> bytes:
    return data


def add_historical_servicer(servicer: HistoricalServicer, server: grpc.aio.Server) -> None:
    """Registers `HistoricalService` so that its responses go out as pre-serialized bytes.

    Use instead of `historical_service_pb2_grpc.add_HistoricalServiceServicer_to_server`:
    the wire format is the same, without building and serializing a message per batch.
    """
    service = _pb.DESCRIPTOR.services_by_name["HistoricalService"].full_name
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "GetHistoricalFeatures": grpc.stream_stream_rpc_method_handler(
            servicer.get_historical_features_bytes,
            request_deserializer=_pb.GetHistoricalFeaturesRequest.FromString,
            response_serializer=_identity,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
