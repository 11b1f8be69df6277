"""The Redis key layout and value encoding of the online store.

One Redis hash per (feature view, entity key) holds the latest row of that view for
that entity:

    key    = <project> ":" <view> ":{" <entity key> "}"
    fields = "_ts"  -> event time, integer microseconds since the Unix epoch (ASCII)
             "_ct"  -> created time, same encoding (absent when the source has none)
             <feature name> -> the value as a serialized `skewless.v1.Value`
                               (a null value is the empty string)

The entity key is the view's join key values in the order of its entities' join keys,
each encoded by `encode_key_part` and joined with ",". It sits inside a Redis Cluster
hash tag (`{...}`), so every view of the same entity key lands on the same cluster
node and one request for one entity touches one node.

A write replaces the hash only when its (event time, created time) is not older than
the stored one; the comparison and the write happen atomically in a Lua script.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

__all__ = [
    "CREATED_TIME_FIELD",
    "EVENT_TIME_FIELD",
    "encode_key_part",
    "entity_key",
    "redis_key",
    "view_key_prefix",
]

EVENT_TIME_FIELD = b"_ts"
CREATED_TIME_FIELD = b"_ct"


def encode_key_part(value: int | str | bytes) -> str:
    """Encodes one join key value for use inside a Redis key.

    Integers are written in decimal; strings are percent-encoded (so that `,`, `{`, `}`
    and `:` never appear raw); bytes are written as `0x` plus lowercase hex.
    """
    if isinstance(value, bool):
        raise TypeError("booleans are not valid join key values")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value, safe="")
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    raise TypeError(f"unsupported join key value type {type(value).__name__}")


def entity_key(values: Sequence[int | str | bytes]) -> str:
    """Encodes a (possibly composite) entity key: the parts joined with ','."""
    return ",".join(encode_key_part(v) for v in values)


def view_key_prefix(project: str, view: str) -> bytes:
    """Returns the key prefix shared by every entity of one view."""
    return f"{project}:{view}:".encode()


def redis_key(project: str, view: str, values: Sequence[int | str | bytes]) -> bytes:
    """Returns the Redis key of one view's row for one entity key."""
    return view_key_prefix(project, view) + b"{" + entity_key(values).encode() + b"}"
