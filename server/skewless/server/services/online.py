"""`skewless.v1.OnlineService`: online lookups and pushes.

`GetOnlineFeatures` resolves nothing per request: the registry is compiled into lookup
plans (`skewless.online.plan.PlanCatalog`) every time a version loads, and the read
(`skewless.online.reader.OnlineReader`) costs one pipelined Redis round trip. The
response is assembled as wire bytes from the stored values, and those bytes go to the
wire as they are (`skewless.server.rpc` sends bytes a handler returns untouched).

`PushFeatures` validates the rows against every target view, then writes Redis and the
history (`skewless.materialization.push`): a refused push writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeAlias

import grpc

from skewless.materialization.push import push_rows
from skewless.offline.arrow_ipc import read_ipc_stream
from skewless.online.plan import LookupPlan, PlanCatalog
from skewless.online.reader import OnlineReader, ReadStats
from skewless.server import metrics
from skewless.server.auth.permissions import Action, Resource
from skewless.server.context import ServerContext
from skewless.server.feature_logger import REQUEST_ID_KEY, FeatureLogger
from skewless.server.rpc import UnaryHandler, label_call, request_bytes
from skewless.v1 import online_service_pb2, registry_pb2

__all__ = ["OnlineServicer"]

_pb = online_service_pb2
_Dest = _pb.PushDestination
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _observe_read(stats: ReadStats) -> None:
    metrics.REDIS_ROUNDTRIP.observe(stats.redis_seconds)


def _caller_request_id(context: Ctx) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


def _require_push(
    ctx: ServerContext,
    registry: registry_pb2.Registry,
    request: _pb.PushFeaturesRequest,
    target: str | None,
) -> None:
    """`push` on the view named, or on every view the push source feeds."""
    if target == "feature_view":
        ctx.access.require(Action.PUSH, (Resource.view(request.feature_view),))
        return
    source = request.push_source if target == "push_source" else ""
    named = Resource("push_source", source)
    views = [Resource.view(v.name) for v in registry.feature_views if v.source == source]
    ctx.access.require(Action.PUSH, views or (Resource.project(),), named=named)


class OnlineServicer:
    """Serves `GetOnlineFeatures` and `PushFeatures`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state and compiles plans on load."""
        self.ctx = ctx
        self.plans = PlanCatalog(ctx.config.project)
        self.reader = OnlineReader(ctx.redis, observe=_observe_read)
        self.logger = FeatureLogger(ctx.config)
        ctx.registry.subscribe(self.plans.load)
        ctx.registry.subscribe(self.logger.load)

    def handlers(self) -> dict[str, UnaryHandler]:
        """The handler of each RPC, for `skewless.server.rpc.register_service`."""
        return {"GetOnlineFeatures": self.get_online_features, "PushFeatures": self.push_features}

    def _plan(self, request: _pb.GetOnlineFeaturesRequest) -> LookupPlan:
        full = request.full_feature_names
        access = self.ctx.access
        if request.HasField("feature_service"):
            if access.enabled:  # before the lookup: no grant, no hint whether it exists
                access.require(Action.READ_ONLINE, (Resource.service(request.feature_service),))
            plan = self.plans.for_service(request.feature_service, full_feature_names=full)
            label_call(request.feature_service)  # known to exist: a safe metrics label
            return plan
        plan = self.plans.for_features(request.features.features, full_feature_names=full)
        if access.enabled:
            access.require(Action.READ_ONLINE, [Resource.view(v.view) for v in plan.lookups])
        return plan

    async def get_online_features(
        self, request: _pb.GetOnlineFeaturesRequest, context: Ctx
    ) -> bytes:
        """Returns the serialized response: value, event time and status per feature and row.

        A sampled call of a logged feature service is handed to the feature logger as it
        is (request object, response bytes), with its request id echoed in the trailing
        metadata.
        """
        plan = self._plan(request)
        logger = self.logger
        if not logger.rates or not request.feature_service:
            return await self.reader.read(
                plan, request.entities, time_remaining=context.time_remaining()
            )
        service = request.feature_service
        if not logger.sampled(service):
            return await self.reader.read(
                plan, request.entities, time_remaining=context.time_remaining()
            )
        version = self.plans.version
        request_time_us = time.time_ns() // 1000
        response = await self.reader.read(
            plan, request.entities, time_remaining=context.time_remaining()
        )
        request_id = logger.offer(
            service,
            request,
            response,
            request_time_us=request_time_us,
            registry_version=version,
            request_id=_caller_request_id(context),
            request_bytes=request_bytes(),
        )
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        return response

    async def push_features(
        self, request: _pb.PushFeaturesRequest, context: Ctx
    ) -> _pb.PushFeaturesResponse:
        """Validates pushed rows, then writes them to the stores the request names."""
        registry = self.ctx.registry.current
        target = request.WhichOneof("target")
        if self.ctx.access.enabled:  # before the rows are read
            _require_push(self.ctx, registry, request, target)
        table = await asyncio.to_thread(
            read_ipc_stream, request.arrow_ipc_stream, field="arrow_ipc_stream"
        )
        result = await push_rows(
            self.ctx.config,
            registry,
            self.ctx.writer,
            table,
            push_source=request.push_source if target == "push_source" else "",
            feature_view=request.feature_view if target == "feature_view" else "",
            online=request.destination != _Dest.PUSH_DESTINATION_OFFLINE,
            offline=request.destination != _Dest.PUSH_DESTINATION_ONLINE,
        )
        return _pb.PushFeaturesResponse(
            row_count=result.row_count, online_rows_written=result.online_rows_written
        )
