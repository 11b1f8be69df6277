"""`skewless.v1.MaterializationService`: materialization jobs."""

from __future__ import annotations

import grpc

from skewless.server.context import ServerContext
from skewless.v1 import materialization_service_pb2 as pb
from skewless.v1 import materialization_service_pb2_grpc

__all__ = ["MaterializationServicer"]


class MaterializationServicer(materialization_service_pb2_grpc.MaterializationServiceServicer):
    """Starts materialization jobs and reports their progress."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    async def StartMaterialization(
        self, request: pb.StartMaterializationRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartMaterializationResponse:
        """Not implemented yet."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "materialization is not implemented yet")
        raise AssertionError("unreachable")

    async def GetMaterializationJob(
        self, request: pb.GetMaterializationJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMaterializationJobResponse:
        """Not implemented yet."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "materialization is not implemented yet")
        raise AssertionError("unreachable")

    async def ListMaterializationJobs(
        self, request: pb.ListMaterializationJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMaterializationJobsResponse:
        """Not implemented yet."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "materialization is not implemented yet")
        raise AssertionError("unreachable")
