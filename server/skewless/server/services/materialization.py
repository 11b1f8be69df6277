"""`skewless.v1.MaterializationService`: materialization jobs.

`StartMaterialization` validates the request, takes the views' job locks (so a second
job for a view fails at once with FAILED_PRECONDITION), records the job and runs it in
a worker thread; the call returns immediately. Job records live under the data dir
(`skewless.materialization.jobs`), so jobs started by the CLI are listed too.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, NotFoundError, quoted
from skewless.core.names import storage_name
from skewless.materialization.jobs import JobRecord, JobState, JobStore, Trigger, run_job, start_job
from skewless.materialization.pipeline import materializable_views
from skewless.materialization.view_state import read_watermark
from skewless.offline.delta_log import read_snapshot
from skewless.server.auth.permissions import Action, Resource
from skewless.server.context import ServerContext
from skewless.server.errors import ERROR_DOMAIN
from skewless.server.pagination import paginate
from skewless.server.request_fields import timestamp_argument
from skewless.server.rpc import UnaryHandler
from skewless.v1 import materialization_service_pb2 as pb

__all__ = ["MaterializationServicer", "job_to_proto"]

_STATES = {
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    # Until the wire has a state of its own: failed, its error_status code CANCELLED.
    JobState.CANCELLED: pb.JOB_STATE_FAILED,
}


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _error_status(record: JobRecord) -> status_pb2.Status | None:
    """A failed job's error as the status its work ended with (ErrorInfo included)."""
    if record.error is None:
        return None
    error = record.error
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    details = any_pb2.Any()
    details.Pack(info)
    return status_pb2.Status(
        code=code_pb2.Code.Value(error.code), message=error.message, details=[details]
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _freshness(config: RepoConfig, view: str, storage: str) -> pb.GetFeatureViewFreshnessResponse:
    """A view generation's watermark and the newest event time of its committed history."""
    response = pb.GetFeatureViewFreshnessResponse(feature_view=view)
    watermark = read_watermark(config, storage)
    if watermark is not None:
        response.watermark_time.FromDatetime(watermark)
    snapshot = read_snapshot(config, storage)
    files = [] if snapshot is None else [f for f in snapshot.files if f.rows > 0]
    if files:
        newest = max(f.max_event_us for f in files)
        response.newest_event_time.FromDatetime(_EPOCH + timedelta(microseconds=newest))
        response.history_rows = sum(f.rows for f in files)
    return response


def job_to_proto(record: JobRecord) -> pb.MaterializationJob:
    """Converts a job record to its wire form."""
    return pb.MaterializationJob(
        job_id=record.job_id,
        feature_views=list(record.feature_views),
        window_start_time=_timestamp(record.window_start),
        window_end_time=_timestamp(record.window_end),
        state=_STATES[record.state],
        rows_read=record.rows_read,
        rows_written=record.rows_written,
        progress=record.progress,
        error=record.error.message if record.error else "",  # deprecated: error_status
        error_status=_error_status(record),
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
        spark=_spark_progress(record),
    )


def _spark_progress(record: JobRecord) -> pb.SparkJobProgress | None:
    if not record.spark_application_id and not record.spark_stages_total:
        return None
    return pb.SparkJobProgress(
        application_id=record.spark_application_id,
        stages_completed=record.spark_stages_completed,
        stages_total=record.spark_stages_total,
        tasks_completed=record.spark_tasks_completed,
        tasks_total=record.spark_tasks_total,
    )


class MaterializationServicer:
    """Starts materialization jobs and reports their progress."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx
        self.jobs = JobStore(ctx.config)
        self._threads: list[threading.Thread] = []

    def handlers(self) -> dict[str, UnaryHandler]:
        """The handler of each RPC, for `skewless.server.rpc.register_service`."""
        return {
            "StartMaterialization": self.StartMaterialization,
            "GetMaterializationJob": self.GetMaterializationJob,
            "ListMaterializationJobs": self.ListMaterializationJobs,
            "GetFeatureViewFreshness": self.GetFeatureViewFreshness,
        }

    async def StartMaterialization(
        self,
        request: pb.StartMaterializationRequest,
        context: grpc.aio.ServicerContext[
            pb.StartMaterializationRequest, pb.StartMaterializationResponse
        ],
    ) -> pb.StartMaterializationResponse:
        """Validates the request, locks the views and starts the job in a worker thread."""
        registry = self.ctx.registry.current
        access = self.ctx.access
        if access.enabled:  # every view it would run; all of them when none is named
            names = list(request.feature_views) or materializable_views(registry)
            access.require(
                Action.MATERIALIZE,
                [Resource.view(n) for n in names] or (Resource.project(),),
                named=None if request.feature_views else Resource.project(),
            )
        if not request.HasField("end_time"):
            raise InvalidArgumentError(
                "end_time is required", field="end_time", reason="MISSING_END_TIME"
            )
        end = timestamp_argument(request.end_time, "end_time")
        start: datetime | None = None
        if not request.incremental:
            if not request.HasField("start_time"):
                raise InvalidArgumentError(
                    "start_time is required unless incremental is set",
                    field="start_time",
                    reason="MISSING_START_TIME",
                )
            start = timestamp_argument(request.start_time, "start_time")
            if end < start:
                raise InvalidArgumentError(
                    f"end_time {end.isoformat()} is before start_time {start.isoformat()}",
                    field="end_time",
                    reason="WINDOW_REVERSED",
                    metadata={"start_time": start.isoformat(), "end_time": end.isoformat()},
                )
        started = start_job(
            self.ctx.config,
            registry,
            request.feature_views,
            window_start=start,
            window_end=end,
            incremental=request.incremental,
            trigger=Trigger.API,
        )
        record = started.record
        thread = threading.Thread(
            target=run_job,
            args=(self.ctx.config, registry, self.jobs, record),
            kwargs={"locks": started.locks},
            name=f"materialize-{record.job_id}",
            daemon=True,
        )
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return pb.StartMaterializationResponse(job=job_to_proto(record))

    async def GetMaterializationJob(
        self,
        request: pb.GetMaterializationJobRequest,
        context: grpc.aio.ServicerContext[
            pb.GetMaterializationJobRequest, pb.GetMaterializationJobResponse
        ],
    ) -> pb.GetMaterializationJobResponse:
        """Returns one job; NOT_FOUND for an unknown ID."""
        return pb.GetMaterializationJobResponse(job=job_to_proto(self.jobs.get(request.job_id)))

    async def ListMaterializationJobs(
        self,
        request: pb.ListMaterializationJobsRequest,
        context: grpc.aio.ServicerContext[
            pb.ListMaterializationJobsRequest, pb.ListMaterializationJobsResponse
        ],
    ) -> pb.ListMaterializationJobsResponse:
        """Lists jobs newest first, a page at a time."""
        records = self.jobs.list(request.feature_view)
        page, token = paginate(
            records, request.page_size, request.page_token, scope=request.feature_view
        )
        return pb.ListMaterializationJobsResponse(
            jobs=[job_to_proto(r) for r in page], next_page_token=token
        )

    async def GetFeatureViewFreshness(
        self,
        request: pb.GetFeatureViewFreshnessRequest,
        context: grpc.aio.ServicerContext[
            pb.GetFeatureViewFreshnessRequest, pb.GetFeatureViewFreshnessResponse
        ],
    ) -> pb.GetFeatureViewFreshnessResponse:
        """Returns a view's watermark and the newest event time of its offline history."""
        name = request.feature_view
        if not name:
            raise InvalidArgumentError(
                "feature_view is required", field="feature_view", reason="MISSING_FEATURE_VIEW"
            )
        view = next((v for v in self.ctx.registry.current.feature_views if v.name == name), None)
        if view is None:
            raise NotFoundError(
                f"no feature view named {quoted(name)} in the registry; "
                "see ListFeatureViews for what exists",
                reason="FEATURE_VIEW_NOT_FOUND",
                metadata={"feature_view": name},
            )
        storage = storage_name(view.name, view.generation)
        return await asyncio.to_thread(_freshness, self.ctx.config, view.name, storage)
