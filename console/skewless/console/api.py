"""The console's view of the skewless API: one shared channel, calls made as a caller.

`Backend` owns the console's single asyncio channel and the generated stubs. Each
browser request gets an `Api` bound to that request's call metadata (`Backend.caller`),
so a user's identity travels with every call the page makes. A failed call raises the
client's typed `skewless.client.SkewlessClientError`, which keeps the status code and the
server's message; the pages show those two, never a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skewless.client.errors import SkewlessClientError, from_rpc_error
from skewless.console.settings import ConsoleSettings, Metadata
from skewless.v1 import (
    historical_service_pb2,
    materialization_service_pb2,
    materialization_service_pb2_grpc,
    monitoring_service_pb2,
    monitoring_service_pb2_grpc,
    online_service_pb2,
    online_service_pb2_grpc,
    registry_pb2,
    registry_service_pb2,
    registry_service_pb2_grpc,
)

__all__ = ["SERVICE_NAMES", "Api", "Backend", "Page"]

_T = TypeVar("_T")

#: The skewless services whose health the overview shows, named by their descriptors.
SERVICE_NAMES: tuple[str, ...] = (
    registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    online_service_pb2.DESCRIPTOR.services_by_name["OnlineService"].full_name,
    historical_service_pb2.DESCRIPTOR.services_by_name["HistoricalService"].full_name,
    materialization_service_pb2.DESCRIPTOR.services_by_name["MaterializationService"].full_name,
)

#: The largest page the list RPCs return (larger sizes are coerced to it).
MAX_PAGE_SIZE = 1000

_HEALTH_NAMES: dict[int, str] = {
    number: name for name, number in health_pb2.HealthCheckResponse.ServingStatus.items()
}

Page = tuple[list[_T], str]  # the items of one page and the next page token ("" when last)


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return stamp


class Backend:
    """The console's connection to the server, shared by every request.

    Attributes:
        settings: Where the server is and the channel credentials.
        channel: The asyncio channel (opened by `open`, on the serving event loop).
        auth_seen: Whether the server has refused a call as UNAUTHENTICATED: it checks
            identities, so the pages offer to sign in.

    """

    def __init__(self, settings: ConsoleSettings) -> None:
        """Prepares the backend; `open` connects it."""
        self.settings = settings
        self.channel: grpc.aio.Channel | None = None
        self.auth_seen = False
        self.registry: registry_service_pb2_grpc.RegistryServiceStub
        self.online: online_service_pb2_grpc.OnlineServiceStub
        self.materialization: materialization_service_pb2_grpc.MaterializationServiceStub
        self.monitoring: monitoring_service_pb2_grpc.MonitoringServiceStub
        self.health: health_pb2_grpc.HealthStub

    def open(self) -> None:
        """Opens the channel and the stubs (connects lazily, on the first call)."""
        self.channel = self.settings.open_channel()
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(self.channel)
        self.online = online_service_pb2_grpc.OnlineServiceStub(self.channel)
        self.materialization = materialization_service_pb2_grpc.MaterializationServiceStub(
            self.channel
        )
        self.monitoring = monitoring_service_pb2_grpc.MonitoringServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def close(self) -> None:
        """Closes the channel."""
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    def caller(self, metadata: Sequence[tuple[str, str]] = ()) -> Api:
        """Returns the API as seen by one caller: the console's metadata, then theirs."""
        return Api(self, (*self.settings.metadata, *metadata))


class Api:
    """The calls the console makes, each sent with one caller's metadata.

    Every method raises `SkewlessClientError` (typed by status code) when the call fails.
    """

    def __init__(self, backend: Backend, metadata: Metadata) -> None:
        """Binds the backend's stubs to a caller's metadata."""
        self._backend = backend
        self.metadata = metadata

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        try:
            return await method(
                request, timeout=self._backend.settings.timeout, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                self._backend.auth_seen = True
            raise error from None

    async def _all_pages(
        self, method: Callable[..., Awaitable[Any]], make: Callable[[str], Any], items: str
    ) -> list[Any]:
        out: list[Any] = []
        token = ""
        while True:
            response = await self._call(method, make(token))
            out.extend(getattr(response, items))
            token = response.next_page_token
            if not token:
                return out

    # --- health and registry ---------------------------------------------------------------

    async def health(self) -> dict[str, str]:
        """Returns the serving status of the server ("") and of each skewless service.

        A service the health servicer does not know is `SERVICE_UNKNOWN`.
        """

        async def check(service: str) -> str:
            request = health_pb2.HealthCheckRequest(service=service)
            try:
                response = await self._call(self._backend.health.Check, request)
            except SkewlessClientError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    return "SERVICE_UNKNOWN"
                raise
            status = int(response.status)
            return _HEALTH_NAMES.get(status, str(status))

        names = ("", *SERVICE_NAMES)
        statuses = await asyncio.gather(*(check(name) for name in names))
        return dict(zip(names, statuses, strict=True))

    async def registry_info(self) -> registry_service_pb2.GetRegistryInfoResponse:
        """Returns the project, version, update time and digest of the served registry."""
        request = registry_service_pb2.GetRegistryInfoRequest()
        response: registry_service_pb2.GetRegistryInfoResponse = await self._call(
            self._backend.registry.GetRegistryInfo, request
        )
        return response

    async def entities(self) -> list[registry_pb2.Entity]:
        """Returns every entity, sorted by name."""
        rpc = registry_service_pb2.ListEntitiesRequest
        return await self._all_pages(
            self._backend.registry.ListEntities,
            lambda t: rpc(page_size=MAX_PAGE_SIZE, page_token=t),
            "entities",
        )

    async def data_sources(self) -> list[registry_pb2.DataSource]:
        """Returns every data source, sorted by name."""
        rpc = registry_service_pb2.ListDataSourcesRequest
        return await self._all_pages(
            self._backend.registry.ListDataSources,
            lambda t: rpc(page_size=MAX_PAGE_SIZE, page_token=t),
            "data_sources",
        )

    async def feature_views(self) -> list[registry_pb2.FeatureView]:
        """Returns every feature view, sorted by name."""
        rpc = registry_service_pb2.ListFeatureViewsRequest
        return await self._all_pages(
            self._backend.registry.ListFeatureViews,
            lambda t: rpc(page_size=MAX_PAGE_SIZE, page_token=t),
            "feature_views",
        )

    async def feature_services(self) -> list[registry_pb2.FeatureService]:
        """Returns every feature service, sorted by name."""
        rpc = registry_service_pb2.ListFeatureServicesRequest
        return await self._all_pages(
            self._backend.registry.ListFeatureServices,
            lambda t: rpc(page_size=MAX_PAGE_SIZE, page_token=t),
            "feature_services",
        )

    async def entity(self, name: str) -> registry_pb2.Entity:
        """Returns one entity (NOT_FOUND when unknown)."""
        request = registry_service_pb2.GetEntityRequest(name=name)
        response = await self._call(self._backend.registry.GetEntity, request)
        entity: registry_pb2.Entity = response.entity
        return entity

    async def data_source(self, name: str) -> registry_pb2.DataSource:
        """Returns one data source (NOT_FOUND when unknown)."""
        request = registry_service_pb2.GetDataSourceRequest(name=name)
        response = await self._call(self._backend.registry.GetDataSource, request)
        source: registry_pb2.DataSource = response.data_source
        return source

    async def feature_view(self, name: str) -> registry_pb2.FeatureView:
        """Returns one feature view (NOT_FOUND when unknown)."""
        request = registry_service_pb2.GetFeatureViewRequest(name=name)
        response = await self._call(self._backend.registry.GetFeatureView, request)
        view: registry_pb2.FeatureView = response.feature_view
        return view

    async def feature_service(self, name: str) -> registry_pb2.FeatureService:
        """Returns one feature service (NOT_FOUND when unknown)."""
        request = registry_service_pb2.GetFeatureServiceRequest(name=name)
        response = await self._call(self._backend.registry.GetFeatureService, request)
        service: registry_pb2.FeatureService = response.feature_service
        return service

    async def search(
        self, query: str, *, page_size: int = 0, page_token: str = ""
    ) -> Page[registry_service_pb2.FeatureMatch]:
        """Returns one page of `SearchFeatures` matches and the next page token."""
        request = registry_service_pb2.SearchFeaturesRequest(
            query=query, page_size=page_size, page_token=page_token
        )
        response = await self._call(self._backend.registry.SearchFeatures, request)
        return list(response.matches), response.next_page_token

    # --- materialization -------------------------------------------------------------------

    async def jobs(
        self, *, feature_view: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[materialization_service_pb2.MaterializationJob]:
        """Returns one page of materialization jobs, newest first, and the next token."""
        request = materialization_service_pb2.ListMaterializationJobsRequest(
            feature_view=feature_view, page_size=page_size, page_token=page_token
        )
        response = await self._call(self._backend.materialization.ListMaterializationJobs, request)
        return list(response.jobs), response.next_page_token

    async def job(self, job_id: str) -> materialization_service_pb2.MaterializationJob:
        """Returns one job (NOT_FOUND when unknown)."""
        request = materialization_service_pb2.GetMaterializationJobRequest(job_id=job_id)
        response = await self._call(self._backend.materialization.GetMaterializationJob, request)
        job: materialization_service_pb2.MaterializationJob = response.job
        return job

    async def start_materialization(
        self,
        feature_views: Sequence[str],
        *,
        start_time: dt.datetime | None,
        end_time: dt.datetime | None,
        incremental: bool,
    ) -> materialization_service_pb2.MaterializationJob:
        """Starts a job over [start_time, end_time), or from each watermark if incremental."""
        request = materialization_service_pb2.StartMaterializationRequest(
            feature_views=list(feature_views), incremental=incremental
        )
        if start_time is not None:
            request.start_time.CopyFrom(_timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(_timestamp(end_time))
        response = await self._call(self._backend.materialization.StartMaterialization, request)
        job: materialization_service_pb2.MaterializationJob = response.job
        return job

    async def view_freshness(
        self, feature_view: str
    ) -> materialization_service_pb2.GetFeatureViewFreshnessResponse:
        """A view's watermark and the newest event time in its offline history."""
        request = materialization_service_pb2.GetFeatureViewFreshnessRequest(
            feature_view=feature_view
        )
        response: materialization_service_pb2.GetFeatureViewFreshnessResponse = await self._call(
            self._backend.materialization.GetFeatureViewFreshness, request
        )
        return response

    # --- online ----------------------------------------------------------------------------

    async def online_features(
        self, request: online_service_pb2.GetOnlineFeaturesRequest
    ) -> online_service_pb2.GetOnlineFeaturesResponse:
        """Looks up the latest feature values of entity rows."""
        response: online_service_pb2.GetOnlineFeaturesResponse = await self._call(
            self._backend.online.GetOnlineFeatures, request
        )
        return response

    # --- monitoring ------------------------------------------------------------------------

    async def skew_report(
        self,
        feature_service: str,
        *,
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
        float_tolerance: float = 0.0,
        max_examples: int = 0,
    ) -> monitoring_service_pb2.GetSkewReportResponse:
        """The skew report of a feature service's log over [start_time, end_time)."""
        request = monitoring_service_pb2.GetSkewReportRequest(
            feature_service=feature_service,
            float_tolerance=float_tolerance,
            max_examples=max_examples,
        )
        if start_time is not None:
            request.start_time.CopyFrom(_timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(_timestamp(end_time))
        response: monitoring_service_pb2.GetSkewReportResponse = await self._call(
            self._backend.monitoring.GetSkewReport, request
        )
        return response
