"""Reading Arrow IPC data that callers send: validated before any value is used.

Uploaded entity rows and pushed rows arrive as Arrow IPC bytes. Bytes that do not parse,
that are truncated, of another schema, or corrupted inside a buffer (offsets pointing
past the data, lengths that disagree) are refused here with INVALID_ARGUMENT: every
batch is validated in full (`validate(full=True)`) before a kernel reads it, so no
corrupt buffer ever reaches a join, a cast or a store.
"""

from __future__ import annotations

import pyarrow as pa

from skewless.core.errors import InvalidArgumentError, shown

__all__ = ["read_ipc_batch", "read_ipc_schema", "read_ipc_stream"]

#: Most characters of Arrow's own explanation that a message repeats.
_DETAIL = 160


def _bad(what: str, field: str, exc: BaseException, **metadata: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{what}: {shown(exc, _DETAIL)}",
        field=field,
        reason="BAD_ARROW_DATA",
        metadata=metadata,
    )


#: What a malformed buffer makes pyarrow raise (no other exception is expected here).
_ARROW_ERRORS = (pa.ArrowException, ValueError, OSError, IndexError, OverflowError)


def _validated(batch: pa.RecordBatch, what: str, field: str) -> pa.RecordBatch:
    try:
        batch.validate(full=True)
    except _ARROW_ERRORS as exc:
        raise _bad(f"{what} is corrupt", field, exc) from exc
    return batch


def read_ipc_stream(data: bytes, *, field: str) -> pa.Table:
    """Parses and validates an Arrow IPC stream (schema, then record batches).

    Args:
        data: The stream's bytes.
        field: The request field they came in, for the error.

    Raises:
        InvalidArgumentError: Empty, not an IPC stream, truncated or corrupt.

    """
    if not data:
        raise InvalidArgumentError(
            f"{field} is empty; send an Arrow IPC stream (schema, then record batches)",
            field=field,
            reason="BAD_ARROW_DATA",
        )
    source = pa.BufferReader(pa.py_buffer(data))
    try:
        with pa.ipc.open_stream(source) as reader:
            batches = [
                _validated(b, f"record batch {i} of {field}", field) for i, b in enumerate(reader)
            ]
            schema = reader.schema
    except InvalidArgumentError:
        raise
    except _ARROW_ERRORS as exc:
        raise _bad(f"{field} is not a valid Arrow IPC stream", field, exc) from exc
    if source.tell() != len(data):  # bytes after the end-of-stream marker: not one stream
        raise InvalidArgumentError(
            f"{field} holds {len(data) - source.tell():,} bytes after the end of its Arrow IPC "
            "stream; send exactly one stream",
            field=field,
            reason="BAD_ARROW_DATA",
            metadata={"trailing_bytes": str(len(data) - source.tell())},
        )
    return pa.Table.from_batches(batches, schema=schema)


def read_ipc_schema(data: bytes, *, field: str) -> pa.Schema:
    """Parses an IPC-serialized Arrow schema message.

    Raises:
        InvalidArgumentError: The bytes are not one.

    """
    try:
        return pa.ipc.read_schema(pa.py_buffer(data))
    except _ARROW_ERRORS as exc:
        raise _bad(f"{field} is not an Arrow IPC schema", field, exc) from exc


def read_ipc_batch(data: bytes, schema: pa.Schema, *, field: str, index: int) -> pa.RecordBatch:
    """Parses and validates an IPC-serialized record batch message of `schema`.

    Args:
        data: The message's bytes.
        schema: The schema the batch must have (sent earlier in the stream).
        field: The request field it came in, for the error.
        index: Its position in the stream, for the error.

    Raises:
        InvalidArgumentError: Not a record batch of that schema, truncated or corrupt.

    """
    what = f"{field} {index}"
    try:
        batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema)
    except _ARROW_ERRORS as exc:
        raise _bad(
            f"{what} is not an Arrow IPC record batch of the sent schema",
            field,
            exc,
            batch=str(index),
        ) from exc
    return _validated(batch, what, field)
