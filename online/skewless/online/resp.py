"""RESP, the Redis protocol: encoding commands, a lean pipeline, and what replies mean.

Everything skewless writes to Redis by hand is encoded here (`bulk`, `pack_commands`,
and `bulk_strings` for whole Arrow columns), the read path's `RespPipeline` lives here,
and so does the one rule for Redis failures: `is_transient` says which errors are a
moment in which Redis cannot answer (unreachable, timed out, LOADING its dataset after a
restart, BUSY running a script, MASTERDOWN, CLUSTERDOWN, TRYAGAIN, MOVED/ASK while a
cluster reshards, READONLY after a failover), and `store_unavailable` turns one into
the UNAVAILABLE error the caller gets, with a short cause and never Redis's own text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis
import pyarrow as pa
import pyarrow.compute as pc
import redis.exceptions
from redis.asyncio import connection as aioredis_connection

from skewless.core.errors import StoreUnavailableError

__all__ = [
    "ONLINE_STORE_UNAVAILABLE",
    "RespPipeline",
    "bulk",
    "bulk_parts",
    "bulk_strings",
    "is_transient",
    "pack_commands",
    "reply_error",
    "store_unavailable",
]

#: The reason of every error that means "the online store cannot answer right now".
ONLINE_STORE_UNAVAILABLE = "ONLINE_STORE_UNAVAILABLE"


def bulk(value: bytes | str | int) -> bytes:
    """One RESP bulk string: `$<length>`, CRLF, the bytes, CRLF."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack_commands(commands: Sequence[Sequence[bytes]]) -> bytes:
    """Encodes commands in RESP (arrays of bulk strings)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        out.extend(bulk(arg) for arg in command)
    return b"".join(out)


_CRLF = pa.scalar(b"\r\n", pa.binary())
_DOLLAR = pa.scalar(b"$", pa.binary())
_NOSEP = pa.scalar(b"", pa.binary())


def bulk_parts(values: pa.Array) -> list[pa.Array | pa.Scalar]:
    """Pieces whose element-wise concatenation is `bulk` of every value (a null is empty).

    A column whose values all have one length (fixed-width encodings, timestamps of one
    magnitude) gets its `$<length>` header as one scalar instead of a column of them.
    """
    if values.null_count:
        values = pc.fill_null(values, b"")
    lengths = pc.binary_length(values)
    bounds = pc.min_max(lengths).as_py()
    if len(values) and bounds["min"] == bounds["max"]:
        header: pa.Array | pa.Scalar = pa.scalar(b"$%d\r\n" % bounds["min"], pa.binary())
    else:
        digits = pc.cast(pc.cast(lengths, pa.string()), pa.binary())
        header = pc.binary_join_element_wise(_DOLLAR, digits, _CRLF, _NOSEP)
    return [header, values, _CRLF]


def bulk_strings(values: pa.Array) -> pa.Array:
    """`bulk` of every value of a binary array, with Arrow kernels (a null is empty)."""
    return pc.binary_join_element_wise(*bulk_parts(values), _NOSEP)


# --- what a failure means ------------------------------------------------------------------

#: Error replies that mean Redis cannot serve the command *now*, and what to tell a person.
_TRANSIENT_REPLIES = {
    "LOADING": "loading its dataset after a restart",
    "BUSY": "busy running a script",
    "MASTERDOWN": "without a reachable primary",
    "CLUSTERDOWN": "a cluster that is down",
    "TRYAGAIN": "resharding",
    "MOVED": "resharding",
    "ASK": "resharding",
    "READONLY": "failing over (a replica answered)",
    "NOREPLICAS": "waiting for its replicas",
}

#: redis-py's class for each error reply, as its own parser maps them.
_REPLY_CLASSES: dict[str, type[redis.exceptions.ResponseError]] = {
    "LOADING": redis.exceptions.BusyLoadingError,  # type: ignore[dict-item]  # a ConnectionError
    "NOSCRIPT": redis.exceptions.NoScriptError,
    "READONLY": redis.exceptions.ReadOnlyError,
    "TRYAGAIN": redis.exceptions.TryAgainError,
    "CLUSTERDOWN": redis.exceptions.ClusterDownError,
    "MASTERDOWN": redis.exceptions.MasterDownError,
    "MOVED": redis.exceptions.MovedError,
    "ASK": redis.exceptions.AskError,
    "EXECABORT": redis.exceptions.ExecAbortError,
}


def _prefix(text: str) -> str:
    return text.split(" ", 1)[0].upper() if text else ""


def reply_error(reply: Exception) -> Exception:
    """The redis-py exception for an error reply parsed by hiredis (`hiredis.ReplyError`)."""
    text = str(reply)
    cls: type[Exception] = _REPLY_CLASSES.get(_prefix(text), redis.exceptions.ResponseError)
    if cls in (redis.exceptions.MovedError, redis.exceptions.AskError):
        return redis.exceptions.ResponseError(text)  # their constructors parse a slot
    return cls(text)


def _transient_cause(exc: BaseException) -> str | None:
    """A short, fixed phrase for a transient failure; None when `exc` is not one."""
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return _TRANSIENT_REPLIES["LOADING"]
    if isinstance(exc, redis.exceptions.ResponseError):
        return _TRANSIENT_REPLIES.get(_prefix(str(exc)))
    if isinstance(exc, redis.exceptions.ClusterError):  # redis-py gave up on a cluster
        return "a cluster that is down or resharding"
    if isinstance(exc, (redis.exceptions.TimeoutError, TimeoutError)):
        return "not answering in time"
    if isinstance(exc, (redis.exceptions.ConnectionError, OSError)):
        return "not reachable"
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means Redis cannot answer right now (retrying later may work)."""
    return _transient_cause(exc) is not None


def store_unavailable(exc: BaseException, *, doing: str, retry: str) -> StoreUnavailableError:
    """The UNAVAILABLE error for a transient Redis failure (see `is_transient`).

    Args:
        exc: The failure.
        doing: What failed, e.g. "did not answer within 50 ms".
        retry: What the caller may do, e.g. "retry with backoff".

    """
    cause = _transient_cause(exc) or "failing"
    return StoreUnavailableError(
        f"the online store (Redis) {doing}: it is {cause}; {retry}",
        reason=ONLINE_STORE_UNAVAILABLE,
        metadata={"cause": cause},
    )


# --- the read path's pipeline --------------------------------------------------------------


#: What the parser returns when no complete reply is buffered (no reply is this object).
_INCOMPLETE = object()


class _RespProtocol(asyncio.Protocol):
    """One Redis connection: replies parsed by hiredis as the bytes arrive.

    A round trip registers how many replies it waits for and a future; `data_received`
    feeds the parser and resolves the future once they are all there, so that the
    caller wakes up once per round trip, not once per read of the socket.
    """

    def __init__(self) -> None:
        self.parser = hiredis.Reader(notEnoughData=_INCOMPLETE)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[list[Any]] | None = None
        self._replies: list[Any] = []
        self._count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        waiter = self._waiter
        if waiter is None or waiter.done():  # nothing asked: never reuse this connection
            self.close()
            return
        replies = self._replies
        try:
            replies.extend(iter(parser.gets, _INCOMPLETE))  # every complete reply, in C
        except hiredis.ProtocolError:  # not Redis speaking: fail the call, drop the socket
            self._waiter = None
            waiter.set_exception(redis.exceptions.ConnectionError("Redis sent an invalid reply"))
            self.close()
            return
        if len(replies) < self._count:
            return
        self._waiter = None
        if len(replies) > self._count:  # more than was asked: never reuse this connection
            self.close()
            waiter.set_exception(redis.exceptions.ConnectionError("Redis sent extra replies"))
            return
        waiter.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(redis.exceptions.ConnectionError("Redis closed the connection"))

    def roundtrip(self, packed: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Sends pre-encoded commands; the future gets their `count` replies."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise redis.exceptions.ConnectionError("Redis closed the connection")
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiter, self._replies, self._count = waiter, [], count
        transport.write(packed)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()


class RespPipeline:
    """Pipelined commands to one Redis node over plain sockets, replies parsed by hiredis.

    The read path sends many HMGETs at once and needs nothing of a general client but
    connection reuse: this writes the pre-encoded commands in one `write` and parses the
    replies in C as they arrive (`asyncio.Protocol`, no stream reader in between), which
    costs a fraction of `redis.asyncio`'s per-command pipeline work. A connection that
    fails, or whose call is cancelled, is closed, never reused.
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
        self._idle: list[_RespProtocol] = []

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

    async def _connect(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        conn: _RespProtocol
        if self.path:
            _, conn = await loop.create_unix_connection(_RespProtocol, self.path)
        else:
            _, conn = await loop.create_connection(_RespProtocol, self.host, self.port)
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
                for reply in await conn.roundtrip(pack_commands(setup), len(setup)):
                    if isinstance(reply, Exception):
                        raise redis.exceptions.AuthenticationError(
                            "Redis refused the connection's AUTH or SELECT"
                        )
            except BaseException:
                conn.close()
                raise
        return conn

    async def execute(self, packed: bytes, count: int) -> list[Any]:
        """Sends pre-encoded commands and returns their `count` replies, in order.

        A reused connection that turns out dead (Redis restarted) is dropped with every
        other idle one, and the commands are sent once more on a new connection; only
        use this for idempotent commands.

        Raises:
            redis.exceptions.ConnectionError: Redis is unreachable or closed the connection.
            redis.exceptions.ResponseError: Redis answered a command with an error (the
                subclass redis-py uses for that reply: `BusyLoadingError` for LOADING, ...).

        """
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else await self._connect()
        try:
            replies = await conn.roundtrip(packed, count)
        except (redis.exceptions.ConnectionError, OSError):
            conn.close()
            if not reused:
                raise
            self.close()
            conn = await self._connect()
            try:
                replies = await conn.roundtrip(packed, count)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if len(self._idle) < self.max_idle and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply_error(reply)
        return replies

    def close(self) -> None:
        """Closes the idle connections."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
