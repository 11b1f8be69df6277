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

A view tagged `skewless.online_expiry: "true"` with a TTL also gets Redis key expiry:
each key expires `ttl` after its row's event time (`online_expiry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import quote

from skewless.v1 import registry_pb2

__all__ = [
    "CREATED_TIME_FIELD",
    "EVENT_TIME_FIELD",
    "ONLINE_EXPIRY_TAG",
    "encode_key_part",
    "entity_key",
    "online_expiry",
    "redis_key",
    "view_key_prefix",
]

EVENT_TIME_FIELD = b"_ts"
CREATED_TIME_FIELD = b"_ct"
#: View tag that, set to "true", makes online keys expire `ttl` after their event time.
ONLINE_EXPIRY_TAG = "skewless.online_expiry"


def online_expiry(view: registry_pb2.FeatureView) -> timedelta | None:
    """How long after its event time a view's online key expires (None: never).

    Keys expire only when the view has a TTL and the tag `skewless.online_expiry` is
    "true"; expired keys read as NOT_FOUND rather than OUTSIDE_MAX_AGE, so the tag
    trades that status for memory.
    """
    if view.tags.get(ONLINE_EXPIRY_TAG, "").lower() == "true" and view.ttl.ToTimedelta():
        return view.ttl.ToTimedelta()
    return None


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
