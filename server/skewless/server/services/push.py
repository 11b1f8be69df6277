"""`OnlineService.PushFeatures`: validate pushed rows, write Redis, append history.

The online servicer delegates `PushFeatures` to `push_features`. A refused push writes
nothing; an accepted one writes Redis (compare-and-set, so older rows never replace
newer ones) and then the offline history, so that a retry after a failure is safe.
"""

from __future__ import annotations

import asyncio

from skewless.materialization.pipeline import online_expiry
from skewless.offline.push import append_history, prepare_push, read_ipc_stream
from skewless.online.writer import AsyncOnlineWriter, prepare_rows
from skewless.server.context import ServerContext
from skewless.v1 import online_service_pb2

__all__ = ["push_features"]

_WRITERS: dict[int, tuple[object, AsyncOnlineWriter]] = {}


def _writer(ctx: ServerContext) -> AsyncOnlineWriter:
    cached = _WRITERS.get(id(ctx))
    if cached is None or cached[0] is not ctx.redis:
        cached = (ctx.redis, AsyncOnlineWriter(ctx.redis))
        _WRITERS[id(ctx)] = cached
    return cached[1]


async def push_features(
    ctx: ServerContext, request: online_service_pb2.PushFeaturesRequest
) -> online_service_pb2.PushFeaturesResponse:
    """Handles one `PushFeatures` call.

    Raises:
        InvalidArgumentError: Malformed stream or rows (names the row and column).
        NotFoundError: Unknown push source or feature view.
        FailedPreconditionError: No registry applied yet.
        StoreUnavailableError: Redis is unreachable (nothing was appended offline).

    """
    registry = ctx.registry.current
    table = await asyncio.to_thread(read_ipc_stream, request.arrow_ipc_stream)
    target = request.WhichOneof("target")
    prepared = await asyncio.to_thread(
        prepare_push,
        registry,
        table,
        push_source=request.push_source if target == "push_source" else "",
        feature_view=request.feature_view if target == "feature_view" else "",
    )
    destination = request.destination
    dest = online_service_pb2.PushDestination
    to_online = destination != dest.PUSH_DESTINATION_OFFLINE
    to_offline = destination != dest.PUSH_DESTINATION_ONLINE
    online_written = 0
    if to_online:
        writer = _writer(ctx)
        for item in prepared.views:
            if not item.plan.view.online:
                continue
            rows = prepare_rows(
                ctx.config.project,
                item.plan.name,
                item.table,
                join_keys=item.plan.key_names,
                features=item.plan.features,
            )
            online_written += await writer.write(rows, expire_after=online_expiry(item.plan.view))
    if to_offline:
        await asyncio.to_thread(append_history, ctx.config, prepared)
    return online_service_pb2.PushFeaturesResponse(
        row_count=prepared.row_count, online_rows_written=online_written
    )
