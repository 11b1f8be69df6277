"""The online read path: entity columns in, a serialized response out, one round trip.

`OnlineReader.read` takes a compiled `LookupPlan` and the request's entity columns,
builds one Redis key per (view, entity row), sends every `HMGET` in one pipeline and
assembles the `GetOnlineFeaturesResponse` wire bytes directly from the stored `Value`
bytes: the values are never decoded, only framed as length-delimited protobuf fields.

On a single Redis the pipeline is pre-encoded RESP written in one call on a pooled
socket and parsed by hiredis (`RespPipeline`, several times cheaper than
`redis.asyncio`'s per-command pipeline); on Redis Cluster the `redis.asyncio` cluster
pipeline splits it into one batch per node, sent concurrently (the entity key is the
hash tag, so one entity's views share a node). The wait is bounded by the caller's
deadline (less a margin, so the answer is UNAVAILABLE rather than DEADLINE_EXCEEDED).

Statuses: a row with no `_ts` is NOT_FOUND (event time unset: the epoch); a row whose
event time is older than `now - ttl` is OUTSIDE_MAX_AGE (value withheld, event time
kept; a TTL of 0 never expires); a stored empty value or an absent field is NULL_VALUE;
anything else is PRESENT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import hiredis
import redis.exceptions
from redis.asyncio import connection as aioredis_connection

from skewless.core.errors import (
    InvalidArgumentError,
    ResourceExhaustedError,
    StoreUnavailableError,
)
from skewless.core.types import value_type_name
from skewless.online.layout import encode_key_part
from skewless.online.plan import LookupPlan
from skewless.v1 import types_pb2

__all__ = [
    "DEFAULT_MAX_WAIT",
    "MAX_ENTITY_ROWS",
    "OnlineReader",
    "ReadStats",
    "RespPipeline",
    "encode_entity_keys",
    "encode_response",
    "pack_commands",
]

#: Most entity rows one `GetOnlineFeatures` call may ask for.
MAX_ENTITY_ROWS = 1000
#: Longest wait for Redis when the caller set no deadline, in seconds.
DEFAULT_MAX_WAIT = 2.0
# Time kept back from the caller's deadline to send UNAVAILABLE before it passes:
# a tenth of the time left, within [2 ms, 100 ms].
_MARGIN_SHARE, _MIN_MARGIN, _MAX_MARGIN = 0.1, 0.002, 0.1

# Plain ints: attribute access on the generated enum wrappers costs a Python call each.
_INT32 = int(types_pb2.VALUE_TYPE_INT32)
_INT64 = int(types_pb2.VALUE_TYPE_INT64)
_STRING = int(types_pb2.VALUE_TYPE_STRING)
_PRESENT = int(types_pb2.FEATURE_STATUS_PRESENT)
_NULL = int(types_pb2.FEATURE_STATUS_NULL_VALUE)
_NOT_FOUND = int(types_pb2.FEATURE_STATUS_NOT_FOUND)
_STALE = int(types_pb2.FEATURE_STATUS_OUTSIDE_MAX_AGE)

_UNAVAILABLE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    OSError,
    TimeoutError,
)


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # negative int64 values are ten-byte two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = tuple(_varint(n) for n in range(1 << 14))


def _len_prefix(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < 16384 else _varint(n)


# Field tags of the messages assembled here (field number << 3 | wire type 2 or 0).
_TAG_RESULTS = b"\x0a"  # GetOnlineFeaturesResponse.results
_TAG_NAME = b"\x0a"  # FeatureVector.name
_TAG_VALUES = b"\x12"  # FeatureVector.values
_TAG_STATUSES = b"\x1a"  # FeatureVector.statuses (packed)
_TAG_TIMES = b"\x22"  # FeatureVector.event_times
_NULL_VALUE_FIELD = b"\x12\x00"  # an empty Value: null
_UNSET_TIME_FIELD = b"\x22\x00"  # an empty Timestamp: the epoch, "unset"
# `FeatureVector.values` tag and length prefix, by value length.
_VALUE_HEADS = tuple(_TAG_VALUES + n for n in _SMALL_VARINTS)


def _timestamp_field(micros: int) -> bytes:
    """Frames a Timestamp for micros since the epoch as a FeatureVector.event_times entry."""
    seconds, rest = divmod(micros, 1_000_000)
    body = b"\x08" + _varint(seconds) if seconds else b""
    if rest:
        body += b"\x10" + _varint(rest * 1000)
    return _TAG_TIMES + _len_prefix(len(body)) + body


@functools.lru_cache(maxsize=8192)
def _stored_time(ts: bytes) -> tuple[int, bytes]:
    """Parses a stored `_ts` and frames it; cached, as rows often share event times."""
    micros = int(ts)
    return micros, _timestamp_field(micros)


def _frame_value(v: bytes | None) -> bytes:
    return _TAG_VALUES + _len_prefix(len(v)) + v if v else _NULL_VALUE_FIELD


# --- entity keys ------------------------------------------------------------------------


def _int_part(values: Sequence[types_pb2.Value], key: str, value_type: int) -> list[str]:
    # INT64 keys take int64 or int32 values. INT32 keys take int32 values, and int64 values
    # within the int32 range (clients in dynamically typed languages send int64).
    int32_key = value_type == _INT32
    parts: list[str] = []
    for i, value in enumerate(values):
        kind = value.WhichOneof("kind")
        if kind == "int64_value":
            number = value.int64_value
            if int32_key and not -(2**31) <= number < 2**31:
                raise _wrong_key_type(key, value_type, f"int64_value {number} (out of range)", i)
            parts.append(str(number))
        elif kind == "int32_value":
            parts.append(str(value.int32_value))
        else:
            raise _wrong_key_type(key, value_type, kind, i)
    return parts


def _wrong_key_type(key: str, value_type: int, kind: str | None, row: int) -> InvalidArgumentError:
    got = "null" if kind in (None, "null_value") else kind
    return InvalidArgumentError(
        f"entity row {row} of join key {key!r} is {got}, but {key!r} is declared "
        f"{value_type_name(value_type)}; send values of that type (no nulls)",
        field=f"entities[{key}]",
        reason="WRONG_KEY_TYPE",
        metadata={
            "join_key": key,
            "row": str(row),
            "expected": value_type_name(value_type),
            "got": str(got),
        },
    )


def _key_parts(values: Sequence[types_pb2.Value], key: str, value_type: int) -> list[str]:
    if value_type in (_INT64, _INT32):
        return _int_part(values, key, value_type)
    wanted = "string_value" if value_type == _STRING else "bytes_value"
    parts: list[str] = []
    for i, value in enumerate(values):
        kind = value.WhichOneof("kind")
        if kind != wanted:
            raise _wrong_key_type(key, value_type, kind, i)
        parts.append(encode_key_part(getattr(value, wanted)))
    return parts


def _int64_tags(values: Sequence[types_pb2.Value]) -> list[bytes] | None:
    """The `{<decimal>}` key suffixes of an INT64 column whose values are all int64.

    Returns:
        None when some value is of another kind (the general path validates those).

    """
    tags: list[bytes] = []
    append = tags.append
    for value in values:
        if value.WhichOneof("kind") != "int64_value":
            return None
        append(b"{%d}" % value.int64_value)
    return tags


def _int64_keys_fast(
    names: tuple[str, ...], entities: Mapping[str, types_pb2.RepeatedValue]
) -> tuple[int, list[list[bytes]]] | None:
    """`encode_entity_keys` for INT64 join keys with valid int64 columns only.

    Returns:
        None for anything else (the general path then validates and words the error).

    """
    encoded: list[list[bytes]] = []
    n = -1
    for name in names:
        if name not in entities:
            return None
        values = entities[name].values
        if len(values) != n:
            if n != -1 or not 0 < len(values) <= MAX_ENTITY_ROWS:
                return None
            n = len(values)
        if n == 1:  # indexing is cheaper than iterating a repeated field
            value = values[0]
            if value.WhichOneof("kind") != "int64_value":
                return None
            encoded.append([b"{%d}" % value.int64_value])
            continue
        tags = _int64_tags(values)
        if tags is None:
            return None
        encoded.append(tags)
    return n, encoded


def encode_entity_keys(
    plan: LookupPlan, entities: Mapping[str, types_pb2.RepeatedValue]
) -> tuple[int, list[list[bytes]]]:
    """Validates the entity columns and encodes the entity keys of every key set.

    Args:
        plan: The compiled plan of the request.
        entities: The request's `entities` map (join key name to a column of values).

    Returns:
        The number of entity rows and, per `plan.key_sets` entry, the `{entity key}`
        suffix of every row's Redis key, in row order.

    Raises:
        InvalidArgumentError: No rows, unequal column lengths, a missing join key or a
            value of the wrong type (the field names `entities[<key>]`).
        ResourceExhaustedError: More than `MAX_ENTITY_ROWS` rows.

    """
    simple = plan.int64_keys
    if simple is not None and len(entities) == len(simple):
        fast = _int64_keys_fast(simple, entities)
        if fast is not None:
            return fast
    if not entities:
        raise InvalidArgumentError(
            "no entities: send one column per join key ("
            + ", ".join(sorted(plan.join_keys))
            + ") with one value per entity row",
            field="entities",
            reason="NO_ENTITIES",
            metadata={"join_keys": ",".join(sorted(plan.join_keys))},
        )
    columns = {name: column.values for name, column in entities.items()}
    lengths = {name: len(values) for name, values in columns.items()}
    n = max(lengths.values())
    for name, length in lengths.items():
        if length != n:
            raise InvalidArgumentError(
                f"entity column {name!r} has {length} values but another has {n}; every "
                "column must have one value per entity row",
                field=f"entities[{name}]",
                reason="UNEQUAL_ENTITY_COLUMNS",
                metadata={"join_key": name, "length": str(length), "expected": str(n)},
            )
    if n == 0:
        raise InvalidArgumentError(
            "no entity rows: the entity columns are empty",
            field="entities",
            reason="NO_ENTITIES",
        )
    if n > MAX_ENTITY_ROWS:
        raise ResourceExhaustedError(
            f"{n} entity rows exceed the limit of {MAX_ENTITY_ROWS} per GetOnlineFeatures "
            "call; split the request",
            reason="TOO_MANY_ENTITY_ROWS",
            metadata={"limit": str(MAX_ENTITY_ROWS), "rows": str(n)},
        )
    for name in plan.join_keys:
        if name not in columns:
            raise InvalidArgumentError(
                f"missing join key {name!r}: the requested features need the entity "
                f"columns {', '.join(sorted(plan.join_keys))}",
                field=f"entities[{name}]",
                reason="MISSING_JOIN_KEY",
                metadata={"join_key": name},
            )
    parts: dict[str, list[str]] = {}

    def key_parts(name: str) -> list[str]:
        found = parts.get(name)
        if found is None:
            found = parts[name] = _key_parts(columns[name], name, plan.join_keys[name])
        return found

    encoded: list[list[bytes]] = []
    for key_set in plan.key_sets:
        if len(key_set.names) == 1:
            name = key_set.names[0]
            tags = _int64_tags(columns[name]) if key_set.value_types[0] == _INT64 else None
            if tags is None:
                tags = [("{" + p + "}").encode() for p in key_parts(name)]
            encoded.append(tags)
        else:
            rows = zip(*(key_parts(name) for name in key_set.names), strict=True)
            encoded.append([("{" + ",".join(row) + "}").encode() for row in rows])
    return n, encoded


# --- response assembly -------------------------------------------------------------------


def _frame_column(column: Sequence[bytes | None], *, all_set: bool = False) -> bytes:
    """Frames stored `Value` bytes as repeated `FeatureVector.values` (null: empty).

    Args:
        column: The stored values of one feature, one per entity row.
        all_set: Every value is non-empty and of a fixed-width type: if all lengths are
            indeed equal, the column is framed with one `join`.

    """
    lengths = _SMALL_VARINTS
    if all_set:
        present = cast("Sequence[bytes]", column)  # the caller's promise: no None
        sizes = set(map(len, present))
        if len(sizes) == 1:
            size = sizes.pop()
            if size < 16384:
                separator = _TAG_VALUES + lengths[size]
                return separator + separator.join(present)
    heads = _VALUE_HEADS
    try:
        return b"".join([heads[len(v)] + v if v else _NULL_VALUE_FIELD for v in column])
    except IndexError:  # a value of 16 KiB or more
        return b"".join([_frame_value(v) for v in column])


def _encode_single(
    plan: LookupPlan, replies: Sequence[Sequence[bytes | None]], now_micros: int
) -> bytes | None:
    """`encode_response` for one entity row: no per-row loops, one `extend` per feature.

    Returns None when a value or vector is 16 KiB or more (the general path frames those).
    """
    lengths, heads = _SMALL_VARINTS, _VALUE_HEADS
    rows: list[Sequence[bytes | None]] = []  # a lookup that is not PRESENT: no values
    tails: list[bytes] = []
    tail_sizes: list[int] = []
    null_tails: list[bytes] = []
    for lookup, row in zip(plan.lookups, replies, strict=True):
        ts = row[0]
        if ts is None:
            status, framed = _NOT_FOUND, _UNSET_TIME_FIELD
        else:
            micros, framed = _stored_time(ts)
            stale = lookup.ttl_micros and micros < now_micros - lookup.ttl_micros
            status = _STALE if stale else _PRESENT
        tail = b"\x1a\x01\x01" + framed
        tails.append(tail)
        tail_sizes.append(len(tail))
        if status == _PRESENT:
            rows.append(row)
            null_tails.append(_NULL_VALUE_FIELD + b"\x1a\x01" + bytes([_NULL]) + framed)
        else:
            rows.append([None] * len(row))
            null_tails.append(_NULL_VALUE_FIELD + b"\x1a\x01" + bytes([status]) + framed)
    out: list[bytes] = []
    extend = out.extend
    try:
        for index, column, name, name_size in plan.single_layout:
            v = rows[index][column]
            if v:
                size = len(v)
                head = heads[size]
                size += name_size + len(head) + tail_sizes[index]
                extend((_TAG_RESULTS, lengths[size], name, head, v, tails[index]))
            else:
                tail = null_tails[index]
                extend((_TAG_RESULTS, lengths[name_size + len(tail)], name, tail))
    except IndexError:  # a value or vector of 16 KiB or more
        return None
    return b"".join(out)


def _lookup_rows(
    rows: Sequence[Sequence[bytes | None]], n: int, ttl_micros: int, now_micros: int
) -> tuple[list[int] | None, bytes]:
    """Returns the row statuses (None when all PRESENT) and the framed event times."""
    times = [row[0] for row in rows]
    distinct = set(times)
    if None not in distinct and len(distinct) <= 8:  # rows often share event times
        stored = {ts: _stored_time(cast("bytes", ts)) for ts in distinct}
        if not ttl_micros or min(m for m, _ in stored.values()) >= now_micros - ttl_micros:
            frames = {ts: frame for ts, (_, frame) in stored.items()}
            return None, b"".join(map(frames.__getitem__, times))
    statuses: list[int] | None = None
    framed: list[bytes] = []
    oldest = now_micros - ttl_micros if ttl_micros else None
    for i, row in enumerate(rows):
        ts = row[0]
        if ts is None:
            framed.append(_UNSET_TIME_FIELD)
            status = _NOT_FOUND
        else:
            micros, frame = _stored_time(ts)
            framed.append(frame)
            status = _STALE if oldest is not None and micros < oldest else _PRESENT
        if status != _PRESENT:
            if statuses is None:
                statuses = [_PRESENT] * n
            statuses[i] = status
    return statuses, b"".join(framed)


def encode_response(
    plan: LookupPlan,
    n: int,
    replies: Sequence[Sequence[bytes | None]],
    *,
    now_micros: int,
) -> bytes:
    """Assembles `GetOnlineFeaturesResponse` wire bytes from HMGET replies.

    Args:
        plan: The plan the replies were read with.
        n: The number of entity rows.
        replies: The HMGET replies, lookup by lookup, `n` rows each, each row holding
            `_ts` then the lookup's features.
        now_micros: The request time, for TTL checks.

    Returns:
        The serialized response.

    """
    if n == 1:
        single = _encode_single(plan, replies, now_micros)
        if single is not None:
            return single
    columns: list[Any] = []  # per lookup: the transposed columns
    row_status: list[list[int] | None] = []
    times: list[bytes] = []
    for index, lookup in enumerate(plan.lookups):
        rows = replies[index * n : (index + 1) * n]
        statuses, framed = _lookup_rows(rows, n, lookup.ttl_micros, now_micros)
        row_status.append(statuses)
        times.append(framed)
        columns.append(list(zip(*rows, strict=True)))
    header = _TAG_STATUSES + _len_prefix(n)
    all_present = header + bytes([_PRESENT]) * n
    lengths = _SMALL_VARINTS
    out: list[bytes] = []
    for feature in plan.outputs:
        statuses = row_status[feature.lookup]
        column: Sequence[bytes | None] = columns[feature.lookup][feature.column]
        if statuses is None:
            if all(column):
                body = _frame_column(column, all_set=feature.fixed_width) + all_present
            else:
                codes = header + bytes([_PRESENT if v else _NULL for v in column])
                body = _frame_column(column) + codes
        else:
            column = [v if s == _PRESENT else None for v, s in zip(column, statuses, strict=True)]
            codes = header + bytes(
                [
                    s if s != _PRESENT else (_PRESENT if v else _NULL)
                    for v, s in zip(column, statuses, strict=True)
                ]
            )
            body = _frame_column(column) + codes
        vector = feature.name_field + body + times[feature.lookup]
        size = len(vector)
        out.append(_TAG_RESULTS + (lengths[size] if size < 16384 else _varint(size)))
        out.append(vector)
    return b"".join(out)


# --- the transport -------------------------------------------------------------------------


@dataclass
class _RespConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: hiredis.Reader

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class RespPipeline:
    """Pipelined commands to one Redis node over plain sockets, replies parsed by hiredis.

    The read path sends many HMGETs at once and needs nothing of a general client but
    connection reuse: this writes the pre-encoded commands in one `write` and parses the
    replies in C, which costs a fraction of `redis.asyncio`'s per-command pipeline work.
    A connection that fails, or whose call is cancelled, is closed, never reused.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        max_idle: int = 64,
    ) -> None:
        """Configures the target node; connections are opened on demand."""
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.max_idle = max_idle
        self._idle: list[_RespConnection] = []

    @classmethod
    def from_client(cls, client: Any) -> RespPipeline | None:
        """Builds a pipeline to the node of a `redis.asyncio.Redis` client.

        Returns:
            None for clients this cannot serve (Redis Cluster, TLS): use the client then.

        """
        pool = getattr(client, "connection_pool", None)
        if pool is None or pool.connection_class not in (
            aioredis_connection.Connection,
            aioredis_connection.UnixDomainSocketConnection,
        ):
            return None
        kw = pool.connection_kwargs
        return cls(
            host=kw.get("host", "127.0.0.1"),
            port=int(kw.get("port", 6379)),
            path=kw.get("path"),
            db=int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password"),
        )

    async def _connect(self) -> _RespConnection:
        if self.path:
            reader, writer = await asyncio.open_unix_connection(self.path)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _RespConnection(reader, writer, hiredis.Reader())
        setup: list[list[bytes]] = []
        if self.username or self.password:  # an ACL user may have no password (nopass)
            auth = [b"AUTH", (self.password or "").encode()]
            if self.username:
                auth.insert(1, self.username.encode())
            setup.append(auth)
        if self.db:
            setup.append([b"SELECT", str(self.db).encode()])
        if setup:
            try:
                for reply in await self._roundtrip(conn, pack_commands(setup), len(setup)):
                    if isinstance(reply, Exception):
                        raise redis.exceptions.ConnectionError(f"Redis refused setup: {reply}")
            except BaseException:
                conn.close()
                raise
        return conn

    @staticmethod
    async def _roundtrip(conn: _RespConnection, packed: bytes, count: int) -> list[Any]:
        conn.writer.write(packed)
        parser, reader = conn.parser, conn.reader
        replies: list[Any] = []
        while len(replies) < count:
            reply = parser.gets()
            if reply is False:
                data = await reader.read(1 << 17)
                if not data:
                    raise redis.exceptions.ConnectionError("Redis closed the connection")
                parser.feed(data)
            else:
                replies.append(reply)
        return replies

    async def execute(self, packed: bytes, count: int) -> list[Any]:
        """Sends pre-encoded commands and returns their `count` replies, in order.

        A reused connection that turns out dead (Redis restarted) is dropped with every
        other idle one, and the commands are sent once more on a new connection; only
        use this for idempotent commands.

        Raises:
            redis.exceptions.ConnectionError: Redis is unreachable or closed the connection.
            redis.exceptions.ResponseError: Redis answered a command with an error.

        """
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else await self._connect()
        try:
            replies = await self._roundtrip(conn, packed, count)
        except (redis.exceptions.ConnectionError, OSError):
            conn.close()
            if not reused:
                raise
            self.close()
            conn = await self._connect()
            try:
                replies = await self._roundtrip(conn, packed, count)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        for reply in replies:
            if isinstance(reply, Exception):
                raise redis.exceptions.ResponseError(str(reply))
        return replies

    def close(self) -> None:
        """Closes the idle connections."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def pack_commands(commands: Sequence[Sequence[bytes]]) -> bytes:
    """Encodes commands in RESP (arrays of bulk strings)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


# --- the reader ----------------------------------------------------------------------------


class ReadStats(NamedTuple):
    """Timings of one read, for metrics (a tuple: built on every read, it must be cheap).

    Attributes:
        redis_seconds: Time spent in the Redis round trip.
        commands: Number of HMGET commands sent.

    """

    redis_seconds: float
    commands: int


class _Deadlines:
    """Cancels reads that outlive their budget, with one timer for all reads in flight.

    What `asyncio.timeout` does per read, without a timer per read: under load every
    new read's deadline is later than the armed one, so arming costs a dict insert.
    When the timer fires it cancels every read that is due and re-arms for the next.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, task: asyncio.Task[Any], budget: float) -> None:
        """Cancels `task` once `budget` seconds have passed, unless disarmed first."""
        loop = task.get_loop()
        when = loop.time() + budget
        self._due[task] = when
        if when < self._timer_at or loop is not self._loop:
            self._schedule(loop, when)

    def disarm(self, task: asyncio.Task[Any]) -> bool:
        """Forgets `task`; returns whether its deadline passed (and it was cancelled)."""
        self._due.pop(task, None)
        if self._expired and task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_at, self._loop = when, loop

    def _fire(self) -> None:
        loop, self._timer, self._timer_at = self._loop, None, float("inf")
        assert loop is not None
        now, following = loop.time(), float("inf")
        for task, when in list(self._due.items()):
            if task.get_loop() is not loop:
                continue
            if when <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
            elif when < following:
                following = when
        if following != float("inf"):
            self._schedule(loop, following)


def _pack_hmgets(plan: LookupPlan, keys: list[list[bytes]]) -> tuple[bytes, int]:
    parts: list[bytes] = []
    count = 0
    for lookup in plan.lookups:
        head, fields, prefix = lookup.resp_head, lookup.resp_fields, lookup.key_prefix
        suffixes = keys[lookup.key_set]
        count += len(suffixes)
        for suffix in suffixes:
            parts.append(
                b"%s$%d\r\n%s%s\r\n%s" % (head, len(prefix) + len(suffix), prefix, suffix, fields)
            )
    return b"".join(parts), count


class OnlineReader:
    """Reads online features from Redis (single node or cluster) in one round trip."""

    def __init__(
        self,
        redis: Any,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        observe: Callable[[ReadStats], None] | None = None,
    ) -> None:
        """Binds the reader to a `redis.asyncio` client.

        Args:
            redis: A `redis.asyncio.Redis` or `RedisCluster` client.
            max_wait: Longest wait for Redis, in seconds, when the caller has no deadline.
            observe: Called with the timings of every successful read.

        """
        self.redis = redis
        self.max_wait = max_wait
        self.observe = observe
        self.resp = RespPipeline.from_client(redis)
        self._deadlines = _Deadlines()

    def close(self) -> None:
        """Closes the reader's idle Redis connections (the client is closed by its owner)."""
        if self.resp is not None:
            self.resp.close()

    async def read(
        self,
        plan: LookupPlan,
        entities: Mapping[str, types_pb2.RepeatedValue],
        *,
        time_remaining: float | None = None,
    ) -> bytes:
        """Looks up every feature of a plan for every entity row.

        Args:
            plan: The compiled plan.
            entities: The request's entity columns.
            time_remaining: Seconds left before the caller's deadline, if it set one.

        Returns:
            The serialized `GetOnlineFeaturesResponse`.

        Raises:
            InvalidArgumentError: The entity columns are invalid.
            ResourceExhaustedError: Too many entity rows.
            StoreUnavailableError: Redis did not answer in time or is unreachable.

        """
        n, keys = encode_entity_keys(plan, entities)
        budget = self.max_wait
        if time_remaining is not None:
            margin = min(max(time_remaining * _MARGIN_SHARE, _MIN_MARGIN), _MAX_MARGIN)
            budget = min(budget, time_remaining - margin)
        now_micros = time.time_ns() // 1000
        started = time.perf_counter()
        replies = await self._fetch(plan, keys, budget)
        elapsed = time.perf_counter() - started
        if self.observe is not None:
            self.observe(ReadStats(redis_seconds=elapsed, commands=len(replies)))
        return encode_response(plan, n, replies, now_micros=now_micros)

    async def _fetch(
        self, plan: LookupPlan, keys: list[list[bytes]], budget: float
    ) -> list[list[bytes | None]]:
        if budget <= 0:
            raise self._unavailable("the caller's deadline left no time to reach Redis", budget)
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadlines.arm(task, budget)
        try:
            try:
                if self.resp is not None:
                    return await self.resp.execute(*_pack_hmgets(plan, keys))
                pipe = self.redis.pipeline(transaction=False)
                for lookup in plan.lookups:
                    prefix, fields = lookup.key_prefix, lookup.fields
                    for suffix in keys[lookup.key_set]:
                        pipe.hmget(prefix + suffix, fields)
                replies: list[list[bytes | None]] = await pipe.execute()
            except asyncio.CancelledError:
                # Our deadline, unless the caller cancelled too (as `asyncio.timeout`).
                if deadlines.disarm(task) and task.uncancel() == 0:
                    raise TimeoutError from None
                raise
            finally:
                deadlines.disarm(task)
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(f"{type(exc).__name__}: {exc}", budget) from exc
        return replies

    @staticmethod
    def _unavailable(cause: str, budget: float) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"the online store (Redis) did not answer within {max(budget, 0) * 1000:.0f} ms "
            f"({cause}); retry with backoff",
            reason="ONLINE_STORE_UNAVAILABLE",
            metadata={"cause": cause[:200], "budget_ms": f"{max(budget, 0) * 1000:.0f}"},
        )
