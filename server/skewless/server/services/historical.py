"""`skewless.v1.HistoricalService`: point-in-time-correct training data.

One call: the first request carries the `HistoricalQuery`; the features are resolved
and every requested view is checked for history before any entity row is read. Inline
entity rows then arrive as `arrow_schema` + `entity_batch` messages (the schema is
validated as soon as it arrives, every batch in full: `skewless.offline.arrow_ipc`);
`path` and `sql` sources are read by the server in a DuckDB sandbox
(`skewless.offline.entity_rows`). The join (`skewless.offline.retrieval`) runs in worker
threads; the response stream carries the schema first, then one record batch per
response, pulled from the join only as fast as gRPC sends them (flow control), so the
server holds the result a few batches at a time. When the client cancels, the DuckDB
query is interrupted and its memory released.

Each record batch response is written directly in the protobuf wire format around the
IPC message (field tags from the descriptors, `skewless.client._wire`), whose column
buffers are copied once, into the response bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import grpc
import pyarrow as pa

from skewless.client._wire import encode_varint, field_tag
from skewless.client.ipc_framing import IpcBatchWriter
from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, quoted
from skewless.core.heap import release_free_memory_soon
from skewless.core.names import EVENT_TIMESTAMP
from skewless.offline.arrow_ipc import read_ipc_batch, read_ipc_schema
from skewless.offline.entity_rows import plain_types, read_path, read_sql, validate_entity_schema
from skewless.offline.feature_log import log_entity_rows
from skewless.offline.point_in_time import OUTPUT_BATCH_ROWS
from skewless.offline.retrieval import HistoricalJoin, read_snapshots, start_retrieval
from skewless.registry.feature_refs import (
    FeaturePlan,
    resolve_feature_refs,
    resolve_feature_service,
)
from skewless.server.auth.permissions import Access, Action, Resource
from skewless.server.context import ServerContext
from skewless.server.errors import code_name
from skewless.server.request_fields import timestamp_argument
from skewless.server.rpc import BidiHandler, label_call
from skewless.v1 import historical_service_pb2, registry_pb2

__all__ = ["MAX_BATCH_ROWS", "SOFT_MESSAGE_BYTES", "HistoricalServicer"]

_log = logging.getLogger(__name__)
_pb = historical_service_pb2

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

_TAG_RECORD_BATCH = field_tag(_pb.GetHistoricalFeaturesResponse, "arrow_record_batch")
_TAG_ROW_COUNT = field_tag(_pb.ArrowRecordBatch, "row_count")
_TAG_SERIALIZED = field_tag(_pb.ArrowRecordBatch, "serialized_record_batch")
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
        plan = resolve_feature_service(
            registry, query.feature_service, full_feature_names=query.full_feature_names
        )
        label_call(query.feature_service)  # known to exist: a safe metrics label
        return plan
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
            f"{OUTPUT_BATCH_ROWS}) up to {MAX_BATCH_ROWS}",
            field="query.batch_size",
            reason="OUT_OF_RANGE",
            metadata={"batch_size": str(query.batch_size), "max": str(MAX_BATCH_ROWS)},
        )
    return query.batch_size or OUTPUT_BATCH_ROWS


def _compression(query: _pb.HistoricalQuery) -> str | None:
    if query.compression not in _COMPRESSION:
        raise InvalidArgumentError(
            f"compression {query.compression} is not an ArrowCompression value",
            field="query.compression",
            reason="OUT_OF_RANGE",
            metadata={"compression": str(query.compression)},
        )
    return _COMPRESSION[query.compression]


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
            schema = read_ipc_schema(request.arrow_schema.serialized_schema, field="arrow_schema")
            validate_entity_schema(
                plain_types(schema.empty_table()).schema, plan, label_time_column
            )
        if request.HasField("entity_batch"):
            if schema is None:
                raise InvalidArgumentError(
                    "an entity_batch came before arrow_schema; send the schema first",
                    field="arrow_schema",
                    reason="MISSING_SCHEMA",
                )
            message = request.entity_batch
            batch = read_ipc_batch(
                message.serialized_record_batch, schema, field="entity_batch", index=len(batches)
            )
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


REQUEST_TIME = "request_time"


def _feature_log_rows(
    config: RepoConfig, registry: registry_pb2.Registry, query: _pb.HistoricalQuery
) -> pa.Table:
    source = query.feature_log
    if not source.feature_service:
        raise InvalidArgumentError(
            "feature_log.feature_service is required: name the service whose log to read",
            field="query.feature_log.feature_service",
            reason="MISSING_FEATURE_SERVICE",
        )
    start = end = None
    if source.HasField("start_time"):
        timestamp_argument(source.start_time, "query.feature_log.start_time")
        start = source.start_time.seconds * 1_000_000 + source.start_time.nanos // 1000
    if source.HasField("end_time"):
        timestamp_argument(source.end_time, "query.feature_log.end_time")
        end = source.end_time.seconds * 1_000_000 + source.end_time.nanos // 1000
    return log_entity_rows(
        config,
        registry,
        source.feature_service,
        start_us=start,
        end_us=end,
        include_served_values=source.include_served_values,
    )


def _require_rows(access: Access, query: _pb.HistoricalQuery, plan: FeaturePlan) -> None:
    """Checks the permissions the query's features and entity rows need.

    `read_historical` on each view of a feature list and on a logged service whose log
    gives the rows; `server_entity_rows` on the project for path or sql.
    """
    if query.WhichOneof("kind") != "feature_service":
        access.require(Action.READ_HISTORICAL, [Resource.view(v.name) for v in plan.views])
    source = query.WhichOneof("entity_rows")
    if source in ("path", "sql"):
        access.require(Action.SERVER_ENTITY_ROWS, (Resource.project(),))
    elif source == "feature_log":
        access.require(
            Action.READ_HISTORICAL, (Resource.service(query.feature_log.feature_service),)
        )


class HistoricalServicer:
    """Serves `GetHistoricalFeatures`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    def handlers(self) -> dict[str, BidiHandler]:
        """The handler of each RPC, for `skewless.server.rpc.register_service`."""
        return {"GetHistoricalFeatures": self.get_historical_features}

    async def get_historical_features(
        self,
        requests: AsyncIterator[_pb.GetHistoricalFeaturesRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        """Streams the point-in-time join of the entity rows (see the proto); logs one line."""
        started = time.perf_counter()
        rows: list[int] = []
        failure: BaseException | None = None
        try:
            async for response in self._retrieve(requests, context, rows):
                yield response
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _log.info(
                "historical retrieval %s: %d entity rows in %.2f s",
                code_name(failure),
                rows[0] if rows else 0,
                time.perf_counter() - started,
            )

    async def _retrieve(
        self,
        requests: AsyncIterator[_pb.GetHistoricalFeaturesRequest],
        context: grpc.aio.ServicerContext[Any, Any],
        rows: list[int],
    ) -> AsyncIterator[bytes]:
        config = self.ctx.config
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("query"):
            raise InvalidArgumentError(
                "the first request must carry the query", field="query", reason="MISSING_QUERY"
            )
        query = first.query
        registry = self.ctx.registry.current
        access = self.ctx.access
        if access.enabled and query.WhichOneof("kind") == "feature_service":
            access.require(Action.READ_HISTORICAL, (Resource.service(query.feature_service),))
        plan = _plan(registry, query)
        if access.enabled:
            _require_rows(access, query, plan)
        pins, as_of = _offline_pins(query)
        snapshots = await asyncio.to_thread(
            read_snapshots, config, plan, versions=pins, as_of=as_of
        )
        batch_rows = _batch_rows(query)
        compression = _compression(query)
        source = query.WhichOneof("entity_rows")
        default_label = REQUEST_TIME if source == "feature_log" else EVENT_TIMESTAMP
        label = query.label_time_column or default_label
        if source == "inline":
            table = await _receive_inline(first, requests, plan, label)
        elif source in ("path", "sql"):
            # The read runs in a thread; a cancelled call or a passed deadline interrupts
            # its DuckDB query instead of leaving it to run (and hold memory) to the end.
            reading = _Interruptible()
            context.add_done_callback(lambda _: reading.interrupt())
            if source == "path":
                read = functools.partial(
                    read_path, config, query.path, on_connection=reading.attach
                )
            else:
                read = functools.partial(
                    read_sql, config, registry, query.sql, on_connection=reading.attach
                )
            table = await asyncio.to_thread(read)
        elif source == "feature_log":
            table = await asyncio.to_thread(_feature_log_rows, config, registry, query)
        else:
            raise InvalidArgumentError(
                "the query names no entity rows; set inline, path, sql or feature_log",
                field="query.entity_rows",
                reason="NO_ENTITY_ROWS",
            )
        join = await asyncio.to_thread(
            start_retrieval,
            config,
            plan,
            plain_types(table),
            label_time_column=label,
            batch_rows=batch_rows,
            entity_columns=not query.features_only,
            snapshots=snapshots,
        )
        del table
        rows.append(join.num_rows)
        running = _Running(join)
        # A cancelled call may leave this generator suspended at a `yield` that is never
        # resumed; the done callback stops DuckDB and frees the join in every case.
        context.add_done_callback(lambda _: running.release())
        versions = [
            _pb.OfflineVersion(feature_view=view.name, version=snapshots[view.name].version)
            for view in plan.views
        ]
        async for response in _stream(
            running, compression, split=query.batch_size == 0, versions=versions
        ):
            yield response


class _Interruptible:
    """The DuckDB connection of an entity-row read, interrupted when the call ends."""

    def __init__(self) -> None:
        self.con: Any = None
        self.done = False

    def attach(self, con: Any) -> None:
        self.con = con
        if self.done:
            self.interrupt()

    def interrupt(self) -> None:
        self.done = True
        if self.con is not None:
            with contextlib.suppress(Exception):
                self.con.interrupt()


class _Running:
    """A join being streamed: runs its blocking steps in worker threads, releases once."""

    def __init__(self, join: HistoricalJoin) -> None:
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


def _offline_pins(query: _pb.HistoricalQuery) -> tuple[dict[str, int], datetime | None]:
    """The query's pinned offline versions per view and its `offline_as_of_time`."""
    pins: dict[str, int] = {}
    for pin in query.offline_versions:
        if pin.feature_view in pins:
            raise InvalidArgumentError(
                f"feature view {quoted(pin.feature_view)} is pinned twice",
                field="query.offline_versions",
                reason="BAD_OFFLINE_VERSION",
                metadata={"feature_view": pin.feature_view},
            )
        pins[pin.feature_view] = pin.version
    as_of = None
    if query.HasField("offline_as_of_time"):
        as_of = timestamp_argument(query.offline_as_of_time, "query.offline_as_of_time")
    return pins, as_of


async def _stream(
    running: _Running,
    compression: str | None,
    *,
    split: bool,
    versions: Sequence[_pb.OfflineVersion] = (),
) -> AsyncIterator[bytes]:
    """Yields the serialized schema response, then one per batch; releases the join on exit."""
    join = running.join
    try:
        encoder = _BatchEncoder(join.schema, compression)
        yield _pb.GetHistoricalFeaturesResponse(
            arrow_schema=_pb.ArrowSchema(serialized_schema=join.schema.serialize().to_pybytes()),
            offline_versions=versions,
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


def _close_quietly(join: HistoricalJoin) -> None:
    with contextlib.suppress(Exception):
        join.close()
    release_free_memory_soon()  # the join's freed memory back to the system
