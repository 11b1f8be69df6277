"""Protobuf wire-format primitives for the fast paths that write or read bytes directly.

The server assembles `GetOnlineFeaturesResponse` and historical result messages from
stored bytes, and the client reads historical batches in place, without building
message objects. Everything they need of the wire format is here: varints, and field
tags *computed from the generated descriptors*, so that a field renumbered or retyped
in the contract changes these bytes too (a hard-coded tag byte would not). Shared by
the server, the client and the benchmarks; the Python client distribution holds it
because both sides install that distribution.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "SMALL_VARINTS",
    "WIRE_FIXED32",
    "WIRE_FIXED64",
    "WIRE_LENGTH_DELIMITED",
    "WIRE_VARINT",
    "decode_varint",
    "encode_varint",
    "field_tag",
    "length_delimited",
    "length_prefix",
    "skip_field",
]

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LENGTH_DELIMITED = 2
WIRE_FIXED32 = 5

_FD = FieldDescriptor
_VARINT_TYPES = frozenset(
    {
        _FD.TYPE_INT32,
        _FD.TYPE_INT64,
        _FD.TYPE_UINT32,
        _FD.TYPE_UINT64,
        _FD.TYPE_SINT32,
        _FD.TYPE_SINT64,
        _FD.TYPE_BOOL,
        _FD.TYPE_ENUM,
    }
)
_FIXED64_TYPES = frozenset({_FD.TYPE_FIXED64, _FD.TYPE_SFIXED64, _FD.TYPE_DOUBLE})
_FIXED32_TYPES = frozenset({_FD.TYPE_FIXED32, _FD.TYPE_SFIXED32, _FD.TYPE_FLOAT})


def encode_varint(value: int, width: int = 0) -> bytes:
    """Returns `value` as a protobuf varint, padded to `width` bytes with continuation bytes.

    Negative values are written as 64-bit two's complement (ten bytes), as protobuf does
    for int32/int64. Parsers accept varints longer than needed: up to 10 bytes for
    values and, in upb (Python), up to 5 bytes for lengths.
    """
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value or len(out) + 1 < width:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


#: `encode_varint(n)` for every n below 2**14 (two bytes at most), by index.
SMALL_VARINTS: tuple[bytes, ...] = tuple(encode_varint(n) for n in range(1 << 14))


def length_prefix(n: int) -> bytes:
    """The varint of a length (a table lookup below 16 KiB)."""
    return SMALL_VARINTS[n] if n < 16384 else encode_varint(n)


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decodes the varint at `pos`; returns it and the position after it.

    Raises:
        ValueError: The varint is longer than ten bytes or runs past the data.

    """
    value = shift = 0
    end = len(data)
    while shift < 70:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("varint longer than ten bytes")


def skip_field(data: bytes | memoryview, pos: int, wire_type: int) -> int:
    """Returns the position after a field's value of `wire_type` starting at `pos`.

    Raises:
        ValueError: An unknown wire type, or a value that runs past the data.

    """
    if wire_type == WIRE_VARINT:
        return decode_varint(data, pos)[1]
    if wire_type == WIRE_FIXED64:
        pos += 8
    elif wire_type == WIRE_LENGTH_DELIMITED:
        size, pos = decode_varint(data, pos)
        pos += size
    elif wire_type == WIRE_FIXED32:
        pos += 4
    else:
        raise ValueError(f"unsupported wire type {wire_type}")
    if pos > len(data):
        raise ValueError("truncated field")
    return pos


def _wire_type(field: Any) -> int:
    if field.type in (_FD.TYPE_MESSAGE, _FD.TYPE_STRING, _FD.TYPE_BYTES):
        return WIRE_LENGTH_DELIMITED
    if field.is_repeated and field.is_packed:  # proto3 packs repeated scalars
        return WIRE_LENGTH_DELIMITED
    if field.type in _VARINT_TYPES:
        return WIRE_VARINT
    if field.type in _FIXED64_TYPES:
        return WIRE_FIXED64
    if field.type in _FIXED32_TYPES:
        return WIRE_FIXED32
    raise ValueError(f"no wire type for field {field.full_name}")


def field_tag(message: type[Message] | Descriptor, field: str) -> bytes:
    """The key bytes (field number << 3 | wire type) of `field` of a message, as written.

    Args:
        message: A generated message class or its descriptor.
        field: The field's name in the .proto.

    Raises:
        KeyError: The message has no such field.

    """
    descriptor = message if isinstance(message, Descriptor) else message.DESCRIPTOR
    found = descriptor.fields_by_name[field]
    return encode_varint(found.number << 3 | _wire_type(found))


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + length_prefix(len(payload)) + payload
