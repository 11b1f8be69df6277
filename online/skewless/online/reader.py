"""The online read path: entity columns in, a serialized response out, one round trip.

`OnlineReader.read` takes a compiled `LookupPlan` and the request's entity columns,
builds one Redis key per (view, entity row) (`skewless.online.entity_keys`), sends
every `HMGET` in one pipeline and assembles the `GetOnlineFeaturesResponse` wire bytes
directly from the stored `Value` bytes (`skewless.online.response_encoding`).

On a single Redis the pipeline is pre-encoded RESP written in one call on a pooled
socket and parsed by hiredis (`skewless.online.resp.RespPipeline`, several times
cheaper than `redis.asyncio`'s per-command pipeline); on Redis Cluster the
`redis.asyncio` cluster pipeline splits it into one batch per node, sent concurrently
(the entity key is the hash tag, so one entity's views share a node). The wait is
bounded by the caller's deadline (less a margin, so the answer is UNAVAILABLE rather
than DEADLINE_EXCEEDED) with one shared timer (`skewless.online.deadlines`). Any
moment Redis cannot answer (`skewless.online.resp.is_transient`) is UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from skewless.core.errors import StoreUnavailableError
from skewless.online.deadlines import Deadlines
from skewless.online.entity_keys import encode_entity_keys
from skewless.online.plan import LookupPlan
from skewless.online.resp import (
    ONLINE_STORE_UNAVAILABLE,
    RespPipeline,
    is_transient,
    store_unavailable,
)
from skewless.online.response_encoding import encode_response
from skewless.v1 import types_pb2

__all__ = ["DEFAULT_MAX_WAIT", "OnlineReader", "ReadStats"]

#: Longest wait for Redis when the caller set no deadline, in seconds.
DEFAULT_MAX_WAIT = 2.0
# Time kept back from the caller's deadline to send UNAVAILABLE before it passes:
# a tenth of the time left, within [2 ms, 100 ms].
_MARGIN_SHARE, _MIN_MARGIN, _MAX_MARGIN = 0.1, 0.002, 0.1


class ReadStats(NamedTuple):
    """Timings of one read, for metrics (a tuple: built on every read, it must be cheap).

    Attributes:
        redis_seconds: Time spent in the Redis round trip.
        commands: Number of HMGET commands sent.

    """

    redis_seconds: float
    commands: int


def _pack_hmgets(plan: LookupPlan, keys: list[list[bytes]]) -> tuple[bytes, int]:
    """Every HMGET of a read in RESP, with one `join` per view (no Python work per key).

    Each command is the view's `resp_starts` entry for the suffix's length, the suffix,
    CRLF and the view's `resp_fields`; a suffix too long for the table is packed
    by formatting.
    """
    parts: list[bytes] = []
    count = 0
    for lookup in plan.lookups:
        suffixes = keys[lookup.key_set]
        count += len(suffixes)
        tail = b"\r\n" + lookup.resp_fields
        try:
            starts = map(lookup.resp_starts.__getitem__, map(len, suffixes))
            parts.append(tail.join(map(bytes.__add__, starts, suffixes)))
        except IndexError:  # a long key (strings): formatted one by one
            head, prefix = lookup.resp_head, lookup.key_prefix
            parts.append(
                tail.join(
                    [b"%s$%d\r\n%s%s" % (head, len(prefix) + len(s), prefix, s) for s in suffixes]
                )
            )
        parts.append(tail)
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
        self._deadlines = Deadlines()

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
        keys = encode_entity_keys(plan, entities)
        budget = self.max_wait
        if time_remaining is not None:
            margin = min(max(time_remaining * _MARGIN_SHARE, _MIN_MARGIN), _MAX_MARGIN)
            budget = min(budget, time_remaining - margin)
        now_micros = time.time_ns() // 1000
        started = time.perf_counter()
        replies = await self._fetch(plan, keys.suffixes, budget)
        elapsed = time.perf_counter() - started
        if self.observe is not None:
            self.observe(ReadStats(redis_seconds=elapsed, commands=len(replies)))
        return encode_response(plan, keys.rows, replies, now_micros=now_micros)

    async def _fetch(
        self, plan: LookupPlan, keys: list[list[bytes]], budget: float
    ) -> list[list[bytes | None]]:
        if budget <= 0:
            raise StoreUnavailableError(
                "the caller's deadline left no time to reach the online store (Redis); "
                "retry with a longer deadline",
                reason=ONLINE_STORE_UNAVAILABLE,
                metadata={"budget_ms": "0"},
            )
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("OnlineReader.read must run in an asyncio task")
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
        except Exception as exc:
            if not is_transient(exc):
                raise
            error = store_unavailable(
                exc,
                doing=f"did not answer within {budget * 1000:.0f} ms",
                retry="retry with backoff",
            )
            error.metadata["budget_ms"] = f"{budget * 1000:.0f}"
            raise error from exc
        return replies
