"""Arrow IPC record batch messages framed as protobuf fields without extra copies.

Shared by the client (entity batches it uploads) and the server (result batches it
streams): both write each record batch as one IPC message whose body buffers are kept
uncopied, then put a small protobuf header in front of them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["IpcBatchWriter", "encode_varint"]


def encode_varint(value: int, width: int = 0) -> bytes:
    """Returns `value` as a protobuf varint, padded to `width` bytes with continuation bytes.

    Protobuf parsers accept varints longer than needed: up to 10 bytes for values and,
    in upb (Python), up to 5 bytes for lengths.
    """
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value or len(out) + 1 < width:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Parts:
    """A file-like sink that keeps what the IPC writer hands it, without copying.

    The writer passes each body buffer as a `pa.Buffer` over the batch's own memory (and
    the metadata and padding as small `bytes`), so holding the parts copies nothing.
    """

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> tuple[list[Any], int]:
        parts, size = self.parts, self.size
        self.parts, self.size = [], 0
        return parts, size


class IpcBatchWriter:
    """Turns record batches into IPC record batch messages, one message per batch."""

    def __init__(self, schema: pa.Schema, options: pa.ipc.IpcWriteOptions | None = None) -> None:
        """Starts a stream for `schema` (with optional IPC write options)."""
        self._sink = _Parts()
        self._writer = pa.ipc.new_stream(self._sink, schema, options=options)
        # The writer emits the schema with its first batch: flush both with an empty
        # batch, so that every later `write` returns exactly one record batch message.
        self._writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema))
        self._sink.take()

    def write(self, batch: pa.RecordBatch) -> tuple[list[Any], int]:
        """Returns the IPC message of `batch` as consecutive buffers, and their total size."""
        self._writer.write_batch(batch)
        return self._sink.take()
