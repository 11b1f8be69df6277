"""`skewless.v1.OnlineService`: online lookups and pushes."""

from __future__ import annotations

import grpc

from skewless.server.context import ServerContext
from skewless.v1 import online_service_pb2, online_service_pb2_grpc

__all__ = ["OnlineServicer"]


class OnlineServicer(online_service_pb2_grpc.OnlineServiceServicer):
    """Serves `GetOnlineFeatures` and `PushFeatures`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    async def GetOnlineFeatures(
        self,
        request: online_service_pb2.GetOnlineFeaturesRequest,
        context: grpc.aio.ServicerContext,
    ) -> online_service_pb2.GetOnlineFeaturesResponse:
        """Not implemented yet."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "GetOnlineFeatures is not implemented yet"
        )
        raise AssertionError("unreachable")

    async def PushFeatures(
        self, request: online_service_pb2.PushFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> online_service_pb2.PushFeaturesResponse:
        """Not implemented yet."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "PushFeatures is not implemented yet")
        raise AssertionError("unreachable")
