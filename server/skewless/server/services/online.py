"""`skewless.v1.OnlineService`: online lookups and pushes.

`GetOnlineFeatures` resolves nothing per request: the registry is compiled into lookup
plans (`skewless.online.plan.PlanCatalog`) every time a version loads, and the read
(`skewless.online.reader.OnlineReader`) costs one pipelined Redis round trip. The
response is assembled as wire bytes from the stored values. Registered with
`add_online_servicer`, those bytes go to the wire as they are; registered with the
generated `add_OnlineServiceServicer_to_server`, they are parsed into a message first
(which costs about as much again for wide responses).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import grpc

from skewless.online.plan import LookupPlan, PlanCatalog
from skewless.online.reader import OnlineReader, ReadStats
from skewless.server import metrics
from skewless.server.context import ServerContext
from skewless.server.errors import grpc_errors
from skewless.v1 import online_service_pb2, online_service_pb2_grpc

__all__ = ["OnlineServicer", "add_online_servicer"]

_PUSH_MODULE = "skewless.server.services.push"
_Response = online_service_pb2.GetOnlineFeaturesResponse


def _observe_read(stats: ReadStats) -> None:
    metrics.REDIS_ROUNDTRIP.observe(stats.redis_seconds)


class OnlineServicer(online_service_pb2_grpc.OnlineServiceServicer):
    """Serves `GetOnlineFeatures` and `PushFeatures`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state and compiles plans on load."""
        self.ctx = ctx
        self.plans = PlanCatalog(ctx.config.project)
        self.reader = OnlineReader(ctx.redis, observe=_observe_read)
        ctx.registry.subscribe(self.plans.load)

    def _plan(self, request: online_service_pb2.GetOnlineFeaturesRequest) -> LookupPlan:
        full = request.full_feature_names
        if request.HasField("feature_service"):
            return self.plans.for_service(request.feature_service, full_feature_names=full)
        return self.plans.for_features(request.features.features, full_feature_names=full)

    async def GetOnlineFeatures(
        self,
        request: online_service_pb2.GetOnlineFeaturesRequest,
        context: grpc.aio.ServicerContext[online_service_pb2.GetOnlineFeaturesRequest, Any],
    ) -> online_service_pb2.GetOnlineFeaturesResponse:
        """Returns the latest value, event time and status per feature and entity row."""
        return _Response.FromString(await self.get_online_features_bytes(request, context))

    @grpc_errors
    async def get_online_features_bytes(
        self,
        request: online_service_pb2.GetOnlineFeaturesRequest,
        context: grpc.aio.ServicerContext[online_service_pb2.GetOnlineFeaturesRequest, Any],
    ) -> bytes:
        """Like `GetOnlineFeatures`, returning the serialized response."""
        started = time.perf_counter()
        service = ""  # labelled only once known to exist: clients cannot add label values
        failure: BaseException | None = None
        try:
            plan = self._plan(request)
            service = request.feature_service
            return await self.reader.read(
                plan, request.entities, time_remaining=context.time_remaining()
            )
        except BaseException as exc:
            failure = exc
            raise
        finally:
            metrics.observe_request(
                "GetOnlineFeatures",
                service,
                metrics.status_code_name(failure),
                time.perf_counter() - started,
            )

    @grpc_errors
    async def PushFeatures(
        self,
        request: online_service_pb2.PushFeaturesRequest,
        context: grpc.aio.ServicerContext[
            online_service_pb2.PushFeaturesRequest, online_service_pb2.PushFeaturesResponse
        ],
    ) -> online_service_pb2.PushFeaturesResponse:
        """Writes pushed rows; delegates to `skewless.server.services.push`."""
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            try:
                push = importlib.import_module(_PUSH_MODULE)
            except ModuleNotFoundError as exc:
                if exc.name != _PUSH_MODULE:
                    raise
                failure = exc
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED, "PushFeatures is not available in this build"
                )
                raise AssertionError("unreachable") from exc
            response: online_service_pb2.PushFeaturesResponse = await push.push_features(
                self.ctx, request
            )
            return response
        except BaseException as exc:
            failure = failure or exc
            raise
        finally:
            code = "UNIMPLEMENTED" if isinstance(failure, ModuleNotFoundError) else None
            metrics.observe_request(
                "PushFeatures",
                "",
                code or metrics.status_code_name(failure),
                time.perf_counter() - started,
            )


def add_online_servicer(servicer: OnlineServicer, server: grpc.aio.Server) -> None:
    """Registers `OnlineService` so that `GetOnlineFeatures` sends pre-serialized bytes.

    Use instead of `online_service_pb2_grpc.add_OnlineServiceServicer_to_server`: the
    wire format is identical, without parsing the assembled response into a message.
    """
    service = online_service_pb2.DESCRIPTOR.services_by_name["OnlineService"].full_name
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.get_online_features_bytes,
            request_deserializer=online_service_pb2.GetOnlineFeaturesRequest.FromString,
            response_serializer=None,  # the handler returns the serialized bytes
        ),
        "PushFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.PushFeatures,
            request_deserializer=online_service_pb2.PushFeaturesRequest.FromString,
            response_serializer=online_service_pb2.PushFeaturesResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    # As the generated registration does: found by path, before the generic handlers.
    server.add_registered_method_handlers(service, handlers)
