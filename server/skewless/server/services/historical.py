"""`skewless.v1.HistoricalService`: point-in-time-correct training data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from skewless.server.context import ServerContext
from skewless.v1 import historical_service_pb2, historical_service_pb2_grpc

__all__ = ["HistoricalServicer"]


class HistoricalServicer(historical_service_pb2_grpc.HistoricalServiceServicer):
    """Serves `GetHistoricalFeatures`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    async def GetHistoricalFeatures(
        self,
        request_iterator: AsyncIterator[historical_service_pb2.GetHistoricalFeaturesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[historical_service_pb2.GetHistoricalFeaturesResponse]:
        """Not implemented yet."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "GetHistoricalFeatures is not implemented yet"
        )
        yield historical_service_pb2.GetHistoricalFeaturesResponse()  # pragma: no cover
