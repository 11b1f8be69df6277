"""`skewless.v1.RegistryService`: discovery of registered definitions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import PurePosixPath
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc

from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, NotFoundError, quoted, shown
from skewless.materialization.view_state import has_stored_values
from skewless.registry.registry_diff import Action, RegistryPlan, plan_changes
from skewless.registry.repo_loader import DEFINITIONS_DIR, load_definition_texts
from skewless.registry.search import SearchIndex
from skewless.registry.validation import validate_definitions
from skewless.server.context import ServerContext
from skewless.server.pagination import paginate
from skewless.server.rpc import UnaryHandler
from skewless.v1 import registry_pb2
from skewless.v1 import registry_service_pb2 as pb

__all__ = ["RegistryServicer", "plan_files", "plan_response"]


#: Most definition files one `PlanRepository` call may send, and most bytes per file.
MAX_DEFINITION_FILES = 1000
MAX_DEFINITION_FILE_BYTES = 1 << 20
_SHOWN_PROBLEMS = 20
_KINDS = {
    "entity": pb.OBJECT_KIND_ENTITY,
    "data source": pb.OBJECT_KIND_DATA_SOURCE,
    "feature view": pb.OBJECT_KIND_FEATURE_VIEW,
    "feature service": pb.OBJECT_KIND_FEATURE_SERVICE,
}
_ACTIONS = {
    Action.ADDED: pb.CHANGE_ACTION_ADDED,
    Action.REMOVED: pb.CHANGE_ACTION_REMOVED,
    Action.CHANGED: pb.CHANGE_ACTION_CHANGED,
}


def _definition_files(files: Sequence[pb.DefinitionFile]) -> dict[str, str]:
    """The request's files by path, checked: count, size and where each path points."""
    if len(files) > MAX_DEFINITION_FILES:
        raise InvalidArgumentError(
            f"{len(files):,} definition files exceed the limit of {MAX_DEFINITION_FILES:,}",
            field="files",
            reason="DEFINITION_FILES_TOO_LARGE",
            metadata={"limit": str(MAX_DEFINITION_FILES), "count": str(len(files))},
        )
    out: dict[str, str] = {}
    for i, item in enumerate(files):
        path = PurePosixPath(item.path)
        if (
            path.is_absolute()
            or len(path.parts) < 2
            or path.parts[0] != DEFINITIONS_DIR
            or ".." in path.parts
            or "\\" in item.path
            or path.suffix not in (".yaml", ".yml")
            or item.path in out
        ):
            raise InvalidArgumentError(
                f"files[{i}].path {quoted(item.path)} is not a definition file path: give "
                f"each file once, relative to the repository, under {DEFINITIONS_DIR}/ and "
                "ending in .yaml or .yml",
                field=f"files[{i}].path",
                reason="INVALID_DEFINITION_PATH",
                metadata={"path": item.path},
            )
        if len(item.content.encode()) > MAX_DEFINITION_FILE_BYTES:
            raise InvalidArgumentError(
                f"files[{i}] ({quoted(item.path)}) is over {MAX_DEFINITION_FILE_BYTES:,} bytes",
                field=f"files[{i}].content",
                reason="DEFINITION_FILES_TOO_LARGE",
                metadata={"limit": str(MAX_DEFINITION_FILE_BYTES), "path": item.path},
            )
        out[item.path] = item.content
    return out


def plan_files(
    config: RepoConfig, current: registry_pb2.Registry | None, files: dict[str, str]
) -> RegistryPlan:
    """Validates definition files against the server's repository and plans their apply.

    Raises:
        InvalidArgumentError: `DEFINITIONS_INVALID`, the message listing the problems.

    """
    loaded = load_definition_texts(files)
    problems = list(loaded.problems)
    problems += validate_definitions(loaded.definitions, root=config.root)
    if problems:
        unique = sorted(dict.fromkeys(problems), key=lambda p: p.file)
        shown_lines = "\n".join(
            f"  - {shown(config.redacted(str(p)), 300)}" for p in unique[:_SHOWN_PROBLEMS]
        )
        more = len(unique) - _SHOWN_PROBLEMS
        tail = f"\n  and {more:,} more" if more > 0 else ""
        raise InvalidArgumentError(
            f"{len(unique)} problem(s) in the definition files:\n{shown_lines}{tail}",
            field="files",
            reason="DEFINITIONS_INVALID",
            metadata={"problem_count": str(len(unique))},
        )
    proposed = loaded.definitions.to_registry(config.project)
    return plan_changes(current, proposed, has_values=partial(has_stored_values, config))


def plan_response(plan: RegistryPlan) -> pb.PlanRepositoryResponse:
    """A plan as its wire message."""
    return pb.PlanRepositoryResponse(
        registry_version=plan.current_version,
        changes=[
            pb.ObjectChange(
                kind=_KINDS[c.kind],
                name=c.name,
                action=_ACTIONS[c.action],
                field_changes=[
                    pb.FieldChange(field=f.field, before=f.before, after=f.after) for f in c.fields
                ],
                breaking_reasons=c.breaking,
                notes=c.notes,
            )
            for c in plan.changes
        ],
        breaking=bool(plan.breaking),
        rematerialize_feature_views=plan.rematerialize,
    )


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
        self._search_index: SearchIndex | None = None
        # Index each version as it is loaded, before it is served, so no search waits for it.
        ctx.registry.subscribe(self._index_registry)

    def _index_registry(self, registry: registry_pb2.Registry) -> None:
        self._search_index = SearchIndex(registry)

    def _index(self) -> SearchIndex:
        reg = self._reg
        index = self._search_index
        if index is None or index.registry is not reg:
            index = self._search_index = SearchIndex(reg)
        return index

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
        index = self._index()
        # Page the positions of the matches, then build messages for that page only.
        positions, token = paginate(
            index.positions(words), request.page_size, request.page_token, " ".join(words)
        )
        page: list[pb.FeatureMatch] = []
        for position in positions:
            hit = index.hit(position)
            page.append(
                pb.FeatureMatch(
                    feature_view=hit.view.name,
                    feature=hit.feature,
                    reference=hit.reference,
                    entities=hit.view.entities,
                    owner=hit.view.owner,
                )
            )
        return pb.SearchFeaturesResponse(matches=page, next_page_token=token)

    async def PlanRepository(
        self, request: pb.PlanRepositoryRequest, context: Ctx
    ) -> pb.PlanRepositoryResponse:
        """Compares definition files with the registry being served (writes nothing)."""
        files = _definition_files(request.files)
        holder = self.ctx.registry
        current = holder.current if holder.loaded else None
        plan = await asyncio.to_thread(plan_files, self.ctx.config, current, files)
        return plan_response(plan)
