"""`skewless.v1.RegistryService`: discovery of registered definitions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc

from skewless.core.errors import InvalidArgumentError, NotFoundError, quoted
from skewless.registry.search import search_features
from skewless.server.context import ServerContext
from skewless.server.pagination import paginate
from skewless.server.rpc import UnaryHandler
from skewless.v1 import registry_pb2
from skewless.v1 import registry_service_pb2 as pb

__all__ = ["RegistryServicer"]


class _Named(Protocol):
    """A registry message with a `name` field."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _find(items: Iterable[T], name: str, kind: str, *, reason: str, key: str) -> T:
    """The item named `name`; NOT_FOUND with `reason` (and `key` in the metadata) if none."""
    if not name:
        raise InvalidArgumentError(
            f"name is required: the {kind}'s name", field="name", reason="EMPTY_NAME"
        )
    for item in items:
        if item.name == name:
            return item
    raise NotFoundError(
        f"no {kind} named {quoted(name)} in the registry; see the List RPCs for what exists",
        reason=reason,
        metadata={key: name},
    )


class RegistryServicer:
    """Answers Get, List and Search over the registry being served."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    def handlers(self) -> dict[str, UnaryHandler]:
        """The handler of each RPC, for `skewless.server.rpc.register_service`."""
        names = [m.name for m in pb.DESCRIPTOR.services_by_name["RegistryService"].methods]
        return {name: getattr(self, name) for name in names}

    @property
    def _reg(self) -> registry_pb2.Registry:
        return self.ctx.registry.current

    async def GetRegistryInfo(
        self, request: pb.GetRegistryInfoRequest, context: Ctx
    ) -> pb.GetRegistryInfoResponse:
        """Returns the version being served."""
        reg = self._reg
        return pb.GetRegistryInfoResponse(
            project=reg.project, version=reg.version, update_time=reg.update_time, digest=reg.digest
        )

    async def GetEntity(self, request: pb.GetEntityRequest, context: Ctx) -> pb.GetEntityResponse:
        """Returns one entity."""
        return pb.GetEntityResponse(
            entity=_find(
                self._reg.entities, request.name, "entity", reason="ENTITY_NOT_FOUND", key="entity"
            )
        )

    async def ListEntities(
        self, request: pb.ListEntitiesRequest, context: Ctx
    ) -> pb.ListEntitiesResponse:
        """Lists entities."""
        page, token = paginate(
            self._reg.entities, request.page_size, request.page_token, "entities"
        )
        return pb.ListEntitiesResponse(entities=page, next_page_token=token)

    async def GetDataSource(
        self, request: pb.GetDataSourceRequest, context: Ctx
    ) -> pb.GetDataSourceResponse:
        """Returns one data source."""
        return pb.GetDataSourceResponse(
            data_source=_find(
                self._reg.data_sources,
                request.name,
                "data source",
                reason="DATA_SOURCE_NOT_FOUND",
                key="data_source",
            )
        )

    async def ListDataSources(
        self, request: pb.ListDataSourcesRequest, context: Ctx
    ) -> pb.ListDataSourcesResponse:
        """Lists data sources."""
        page, token = paginate(
            self._reg.data_sources, request.page_size, request.page_token, "sources"
        )
        return pb.ListDataSourcesResponse(data_sources=page, next_page_token=token)

    async def GetFeatureView(
        self, request: pb.GetFeatureViewRequest, context: Ctx
    ) -> pb.GetFeatureViewResponse:
        """Returns one feature view."""
        return pb.GetFeatureViewResponse(
            feature_view=_find(
                self._reg.feature_views,
                request.name,
                "feature view",
                reason="FEATURE_VIEW_NOT_FOUND",
                key="feature_view",
            )
        )

    async def ListFeatureViews(
        self, request: pb.ListFeatureViewsRequest, context: Ctx
    ) -> pb.ListFeatureViewsResponse:
        """Lists feature views."""
        page, token = paginate(
            self._reg.feature_views, request.page_size, request.page_token, "views"
        )
        return pb.ListFeatureViewsResponse(feature_views=page, next_page_token=token)

    async def GetFeatureService(
        self, request: pb.GetFeatureServiceRequest, context: Ctx
    ) -> pb.GetFeatureServiceResponse:
        """Returns one feature service."""
        return pb.GetFeatureServiceResponse(
            feature_service=_find(
                self._reg.feature_services,
                request.name,
                "feature service",
                reason="FEATURE_SERVICE_NOT_FOUND",
                key="feature_service",
            )
        )

    async def ListFeatureServices(
        self, request: pb.ListFeatureServicesRequest, context: Ctx
    ) -> pb.ListFeatureServicesResponse:
        """Lists feature services."""
        page, token = paginate(
            self._reg.feature_services, request.page_size, request.page_token, "services"
        )
        return pb.ListFeatureServicesResponse(feature_services=page, next_page_token=token)

    async def SearchFeatures(
        self, request: pb.SearchFeaturesRequest, context: Ctx
    ) -> pb.SearchFeaturesResponse:
        """Finds features by words in their names, descriptions, owners and tags."""
        words = request.query.lower().split()
        if not words:
            raise InvalidArgumentError(
                "query is required: one or more words to look for",
                field="query",
                reason="EMPTY_QUERY",
            )
        matches = [
            pb.FeatureMatch(
                feature_view=hit.view.name,
                feature=hit.feature,
                reference=hit.reference,
                entities=hit.view.entities,
                owner=hit.view.owner,
            )
            for hit in search_features(self._reg, words)
        ]
        page, token = paginate(matches, request.page_size, request.page_token, " ".join(words))
        return pb.SearchFeaturesResponse(matches=page, next_page_token=token)
