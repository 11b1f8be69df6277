"""`Client`: one reused gRPC channel to a skewless server and a method per RPC."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import pyarrow as pa
from google.protobuf import timestamp_pb2

from skewless.client.credentials import Token, bearer_header, channel_credentials, check_metadata
from skewless.client.errors import UnavailableError, from_rpc_error
from skewless.client.online import (
    Entities,
    OnlineFeatures,
    build_online_request,
    entity_columns,
)
from skewless.v1 import (
    historical_service_pb2_grpc,
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

__all__ = ["DEFAULT_TIMEOUT", "RPC_METHODS", "Client"]

#: Default deadline of a call, in seconds.
DEFAULT_TIMEOUT = 10.0
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HISTORICAL_MODULE = "skewless.client.historical"

#: The `Client` method that calls each RPC, by full RPC name (`package.Service/Method`).
RPC_METHODS: dict[str, str] = {
    "skewless.v1.OnlineService/GetOnlineFeatures": "get_online_features",
    "skewless.v1.OnlineService/PushFeatures": "push_features",
    "skewless.v1.HistoricalService/GetHistoricalFeatures": "get_historical_features",
    "skewless.v1.RegistryService/GetRegistryInfo": "get_registry_info",
    "skewless.v1.RegistryService/GetEntity": "get_entity",
    "skewless.v1.RegistryService/ListEntities": "list_entities",
    "skewless.v1.RegistryService/GetDataSource": "get_data_source",
    "skewless.v1.RegistryService/ListDataSources": "list_data_sources",
    "skewless.v1.RegistryService/GetFeatureView": "get_feature_view",
    "skewless.v1.RegistryService/ListFeatureViews": "list_feature_views",
    "skewless.v1.RegistryService/GetFeatureService": "get_feature_service",
    "skewless.v1.RegistryService/ListFeatureServices": "list_feature_services",
    "skewless.v1.RegistryService/SearchFeatures": "search_features",
    "skewless.v1.RegistryService/PlanRepository": "plan_repository",
    "skewless.v1.MaterializationService/StartMaterialization": "start_materialization",
    "skewless.v1.MaterializationService/GetMaterializationJob": "get_materialization_job",
    "skewless.v1.MaterializationService/ListMaterializationJobs": "list_materialization_jobs",
    "skewless.v1.MaterializationService/GetFeatureViewFreshness": "get_feature_view_freshness",
    "skewless.v1.MonitoringService/GetSkewReport": "get_skew_report",
}


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:  # naive means UTC
        value = value.replace(tzinfo=dt.UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


class Client:
    """A skewless server connection: online lookups, registry, historical retrieval.

    One channel is opened per client and reused by every call; close it with `close`
    or use the client as a context manager. Every failed call raises a subclass of
    `skewless.client.errors.SkewlessClientError`.

    Over TLS with a client certificate and a refreshed token:
    `Client("features.internal:6566", root_certificates=ca_pem,
    client_cert=(cert_pem, key_pem), token=lambda: tokens.current())`.

    Example:
        >>> with Client("localhost:6566") as client:
        ...     result = client.get_online_features(
        ...         {"driver_id": [1001, 1002]}, feature_service="driver_ranking"
        ...     )
        ...     table = result.to_arrow()

    """

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_cert: tuple[bytes, bytes] | None = None,
        token: Token | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = DEFAULT_TIMEOUT,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Opens a channel (connects lazily, on the first call).

        Args:
            target: `host:port` of the server.
            tls: Use TLS; `root_certificates` (PEM) verifies the server, the system
                roots when None. Implied by `root_certificates` and `client_cert`.
            root_certificates: PEM-encoded root certificates for TLS.
            client_cert: `(certificate_chain_pem, private_key_pem)` presented to a
                server that requires client certificates (mutual TLS).
            token: A bearer token, or a zero-argument callable returning the current
                one (called for every RPC, so it can refresh an expiring token); sent
                as `authorization: Bearer <token>` on every call. A callable that
                raises fails the call with `UnavailableError`.
            metadata: Headers sent with every call.
            timeout: Default deadline of each call in seconds; None for no deadline.
            options: Extra gRPC channel options.

        Raises:
            ValueError: `metadata` carries an `authorization` header and `token` is set.

        """
        check_metadata(metadata, token)
        channel_options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            *options,
        ]
        self.tls = tls or root_certificates is not None or client_cert is not None
        if self.tls:
            credentials = channel_credentials(
                root_certificates=root_certificates, client_cert=client_cert, token=token
            )
            self.channel = grpc.secure_channel(target, credentials, options=channel_options)
        else:
            self.channel = grpc.insecure_channel(target, options=channel_options)
        self.target = target
        self.metadata = tuple(metadata)
        self.timeout = timeout
        # TLS channels carry the token as call credentials; plaintext ones per call.
        self._plaintext_token = None if self.tls else token
        self._online = online_service_pb2_grpc.OnlineServiceStub(self.channel)
        self._registry = registry_service_pb2_grpc.RegistryServiceStub(self.channel)
        self._historical = historical_service_pb2_grpc.HistoricalServiceStub(self.channel)
        self._materialization = materialization_service_pb2_grpc.MaterializationServiceStub(
            self.channel
        )
        self._monitoring = monitoring_service_pb2_grpc.MonitoringServiceStub(self.channel)

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; the client cannot be used afterwards."""
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _metadata(self, metadata: Sequence[tuple[str, str]] | None = None) -> tuple[Any, ...]:
        """A call's metadata: `metadata` (the client's when None) and, on plaintext, the token."""
        headers = tuple(self.metadata if metadata is None else metadata)
        if self._plaintext_token is None:
            return headers
        check_metadata(headers, self._plaintext_token)
        try:
            header = bearer_header(self._plaintext_token)
        except Exception as exc:  # as grpc reports a failing call credential on TLS
            raise UnavailableError(
                f"Getting metadata from plugin failed with error: {exc}"
            ) from exc
        return (*headers, header)

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # --- online ----------------------------------------------------------------------------

    def get_online_features(
        self,
        entities: Entities,
        *,
        feature_service: str | None = None,
        features: Sequence[str] | None = None,
        full_feature_names: bool = False,
        timeout: float | None = None,
    ) -> OnlineFeatures:
        """Looks up the latest feature values of entities.

        Args:
            entities: Join key columns (`{"driver_id": [1, 2]}`) or rows
                (`[{"driver_id": 1}, ...]`); at most 1,000 rows.
            feature_service: A feature service name; exclusive with `features`.
            features: `view:feature` / `view` references; exclusive with `feature_service`.
            full_feature_names: Name results `view__feature`.
            timeout: This call's deadline in seconds (the client default when None).

        Returns:
            The values, statuses and event times, convertible to dict, Arrow or rows.

        Raises:
            ValueError: Neither or both of `feature_service` and `features` were given.
            TypeError: An entity key value has no key type.
            SkewlessClientError: The call failed (typed by status code).

        """
        columns = entity_columns(entities)
        request = build_online_request(
            columns,
            feature_service=feature_service,
            features=features,
            full_feature_names=full_feature_names,
        )
        response: online_service_pb2.GetOnlineFeaturesResponse = self._call(
            self._online.GetOnlineFeatures, request, timeout
        )
        return OnlineFeatures(response, columns)

    def push_features(
        self,
        table: pa.Table,
        *,
        push_source: str | None = None,
        feature_view: str | None = None,
        destination: online_service_pb2.PushDestination.ValueType = (
            online_service_pb2.PUSH_DESTINATION_UNSPECIFIED
        ),
        timeout: float | None = None,
    ) -> online_service_pb2.PushFeaturesResponse:
        """Pushes rows to a push source or a feature view.

        Args:
            table: The rows: join keys, event timestamp, optional created timestamp, features.
            push_source: The push source's name; exclusive with `feature_view`.
            feature_view: A feature view's name; exclusive with `push_source`.
            destination: A `skewless.v1.PushDestination` (both stores when unset).
            timeout: This call's deadline in seconds.

        Returns:
            The number of rows accepted and online values replaced.

        Raises:
            ValueError: Neither or both of `push_source` and `feature_view` were given.
            SkewlessClientError: The call failed (typed by status code).

        """
        if (push_source is None) == (feature_view is None):
            raise ValueError("pass exactly one of push_source= or feature_view=")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        request = online_service_pb2.PushFeaturesRequest(
            arrow_ipc_stream=sink.getvalue().to_pybytes(), destination=destination
        )
        if push_source is not None:
            request.push_source = push_source
        else:
            request.feature_view = feature_view or ""
        response: online_service_pb2.PushFeaturesResponse = self._call(
            self._online.PushFeatures, request, timeout
        )
        return response

    # --- historical ------------------------------------------------------------------------

    def _historical_module(self) -> Any:
        return importlib.import_module(_HISTORICAL_MODULE)

    def get_historical_features(self, *args: Any, **kwargs: Any) -> pa.Table:
        """Retrieves point-in-time correct training data as a `pyarrow.Table`.

        Takes the arguments of `skewless.client.historical.get_historical_features`
        (without its channel) and converts failures to typed errors.

        Raises:
            SkewlessClientError: The call failed (typed by status code).

        """
        module = self._historical_module()
        kwargs["metadata"] = self._metadata(kwargs.get("metadata"))
        try:
            table: pa.Table = module.get_historical_features(self.channel, *args, **kwargs)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return table

    def iter_historical_batches(self, *args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        """Streams point-in-time correct training data as Arrow record batches.

        Takes the arguments of `skewless.client.historical.iter_historical_batches`
        (without its channel) and converts failures to typed errors.

        Raises:
            SkewlessClientError: The call failed (typed by status code).

        """
        module = self._historical_module()
        kwargs["metadata"] = self._metadata(kwargs.get("metadata"))
        try:
            yield from module.iter_historical_batches(self.channel, *args, **kwargs)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # --- registry --------------------------------------------------------------------------

    def get_registry_info(
        self, *, timeout: float | None = None
    ) -> registry_service_pb2.GetRegistryInfoResponse:
        """Returns the project, version, update time and digest of the served registry."""
        response: registry_service_pb2.GetRegistryInfoResponse = self._call(
            self._registry.GetRegistryInfo, registry_service_pb2.GetRegistryInfoRequest(), timeout
        )
        return response

    def get_entity(self, name: str, *, timeout: float | None = None) -> registry_pb2.Entity:
        """Returns one entity by name (raises `NotFoundError` when unknown)."""
        request = registry_service_pb2.GetEntityRequest(name=name)
        response: registry_service_pb2.GetEntityResponse = self._call(
            self._registry.GetEntity, request, timeout
        )
        return response.entity

    def get_data_source(
        self, name: str, *, timeout: float | None = None
    ) -> registry_pb2.DataSource:
        """Returns one data source by name."""
        request = registry_service_pb2.GetDataSourceRequest(name=name)
        response: registry_service_pb2.GetDataSourceResponse = self._call(
            self._registry.GetDataSource, request, timeout
        )
        return response.data_source

    def get_feature_view(
        self, name: str, *, timeout: float | None = None
    ) -> registry_pb2.FeatureView:
        """Returns one feature view by name."""
        request = registry_service_pb2.GetFeatureViewRequest(name=name)
        response: registry_service_pb2.GetFeatureViewResponse = self._call(
            self._registry.GetFeatureView, request, timeout
        )
        return response.feature_view

    def get_feature_service(
        self, name: str, *, timeout: float | None = None
    ) -> registry_pb2.FeatureService:
        """Returns one feature service by name."""
        request = registry_service_pb2.GetFeatureServiceRequest(name=name)
        response: registry_service_pb2.GetFeatureServiceResponse = self._call(
            self._registry.GetFeatureService, request, timeout
        )
        return response.feature_service

    def _pages(
        self,
        method: Callable[..., Any],
        make: Callable[[str], Any],
        items: str,
        timeout: float | None,
    ) -> list[Any]:
        out: list[Any] = []
        token = ""
        while True:
            response = self._call(method, make(token), timeout)
            out.extend(getattr(response, items))
            token = response.next_page_token
            if not token:
                return out

    def list_entities(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> list[registry_pb2.Entity]:
        """Returns every entity (all pages)."""
        return self._pages(
            self._registry.ListEntities,
            lambda t: registry_service_pb2.ListEntitiesRequest(page_size=page_size, page_token=t),
            "entities",
            timeout,
        )

    def list_data_sources(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> list[registry_pb2.DataSource]:
        """Returns every data source (all pages)."""
        return self._pages(
            self._registry.ListDataSources,
            lambda t: registry_service_pb2.ListDataSourcesRequest(
                page_size=page_size, page_token=t
            ),
            "data_sources",
            timeout,
        )

    def list_feature_views(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> list[registry_pb2.FeatureView]:
        """Returns every feature view (all pages)."""
        return self._pages(
            self._registry.ListFeatureViews,
            lambda t: registry_service_pb2.ListFeatureViewsRequest(
                page_size=page_size, page_token=t
            ),
            "feature_views",
            timeout,
        )

    def list_feature_services(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> list[registry_pb2.FeatureService]:
        """Returns every feature service (all pages)."""
        return self._pages(
            self._registry.ListFeatureServices,
            lambda t: registry_service_pb2.ListFeatureServicesRequest(
                page_size=page_size, page_token=t
            ),
            "feature_services",
            timeout,
        )

    def search_features(
        self, query: str, *, page_size: int = 0, timeout: float | None = None
    ) -> list[registry_service_pb2.FeatureMatch]:
        """Returns the features whose name, description, tags or owner match `query`."""
        return self._pages(
            self._registry.SearchFeatures,
            lambda t: registry_service_pb2.SearchFeaturesRequest(
                query=query, page_size=page_size, page_token=t
            ),
            "matches",
            timeout,
        )

    def plan_repository(
        self, files: Mapping[str, str], *, timeout: float | None = None
    ) -> registry_service_pb2.PlanRepositoryResponse:
        """Returns what applying these definition files would change (nothing is written).

        Args:
            files: Every definition file of the repository: its path relative to the
                repository (`features/drivers.yaml`) -> its YAML text.
            timeout: Seconds before the call is abandoned.

        Returns:
            The changes field by field, which are breaking, and which feature views would
            need to be materialized again.

        Raises:
            InvalidArgumentError: The definitions have problems (all listed in the message).

        """
        request = registry_service_pb2.PlanRepositoryRequest(
            files=[
                registry_service_pb2.DefinitionFile(path=path, content=content)
                for path, content in files.items()
            ]
        )
        response: registry_service_pb2.PlanRepositoryResponse = self._call(
            self._registry.PlanRepository, request, timeout
        )
        return response

    # --- materialization ---------------------------------------------------------------------

    def start_materialization(
        self,
        feature_views: Sequence[str] = (),
        *,
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
        incremental: bool = False,
        timeout: float | None = None,
    ) -> materialization_service_pb2.MaterializationJob:
        """Starts materializing views (all when empty) over [start_time, end_time)."""
        request = materialization_service_pb2.StartMaterializationRequest(
            feature_views=list(feature_views), incremental=incremental
        )
        if start_time is not None:
            request.start_time.CopyFrom(_timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(_timestamp(end_time))
        response: materialization_service_pb2.StartMaterializationResponse = self._call(
            self._materialization.StartMaterialization, request, timeout
        )
        return response.job

    def get_materialization_job(
        self, job_id: str, *, timeout: float | None = None
    ) -> materialization_service_pb2.MaterializationJob:
        """Returns one materialization job's state and progress."""
        request = materialization_service_pb2.GetMaterializationJobRequest(job_id=job_id)
        response: materialization_service_pb2.GetMaterializationJobResponse = self._call(
            self._materialization.GetMaterializationJob, request, timeout
        )
        return response.job

    def list_materialization_jobs(
        self, *, feature_view: str = "", page_size: int = 0, timeout: float | None = None
    ) -> list[materialization_service_pb2.MaterializationJob]:
        """Returns materialization jobs (all pages), optionally of one view."""
        return self._pages(
            self._materialization.ListMaterializationJobs,
            lambda t: materialization_service_pb2.ListMaterializationJobsRequest(
                feature_view=feature_view, page_size=page_size, page_token=t
            ),
            "jobs",
            timeout,
        )

    def get_feature_view_freshness(
        self, feature_view: str, *, timeout: float | None = None
    ) -> materialization_service_pb2.GetFeatureViewFreshnessResponse:
        """Returns a view's watermark and the newest event time in its offline history."""
        request = materialization_service_pb2.GetFeatureViewFreshnessRequest(
            feature_view=feature_view
        )
        response: materialization_service_pb2.GetFeatureViewFreshnessResponse = self._call(
            self._materialization.GetFeatureViewFreshness, request, timeout
        )
        return response

    # --- monitoring --------------------------------------------------------------------------

    def get_skew_report(
        self,
        feature_service: str,
        *,
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
        float_tolerance: float = 0.0,
        max_examples: int = 0,
        timeout: float | None = None,
    ) -> monitoring_service_pb2.GetSkewReportResponse:
        """Compares what a feature service served (its log) with the offline history.

        Args:
            feature_service: The feature service (its `logging` must be on).
            start_time: Only calls served at or after this instant (naive = UTC).
            end_time: Only calls served before this instant.
            float_tolerance: 0 compares floats bit for bit; else the largest difference
                that still matches.
            max_examples: Non-matching examples per feature (0: the server's default, 5).
            timeout: This call's deadline in seconds (the client default when None).

        Returns:
            Per feature the count and rate of each `SkewCategory`, the lag of stale rows
            and examples; per view the freshness; the overall mismatch rate.

        """
        request = monitoring_service_pb2.GetSkewReportRequest(
            feature_service=feature_service,
            float_tolerance=float_tolerance,
            max_examples=max_examples,
        )
        if start_time is not None:
            request.start_time.CopyFrom(_timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(_timestamp(end_time))
        response: monitoring_service_pb2.GetSkewReportResponse = self._call(
            self._monitoring.GetSkewReport, request, timeout
        )
        return response
