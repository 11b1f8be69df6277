"""Pages that read the registry: overview, search, lists, and one page per object."""

from __future__ import annotations

import asyncio

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skewless.client.errors import SkewlessClientError
from skewless.console.lineage import layout, service_lineage, source_lineage, view_lineage
from skewless.console.web import api, http_status, render, settle
from skewless.v1 import registry_pb2

__all__ = ["SEARCH_PAGE_SIZE", "routes"]

#: Matches per search page.
SEARCH_PAGE_SIZE = 50
#: Jobs a feature view's page lists.
RECENT_JOBS = 5


async def overview(request: Request) -> Response:
    """Project, registry version, server health and how many of each object there are."""
    caller = api(request)
    info, health, entities, sources, views, services = await asyncio.gather(
        settle(caller.registry_info()),
        settle(caller.health()),
        settle(caller.entities()),
        settle(caller.data_sources()),
        settle(caller.feature_views()),
        settle(caller.feature_services()),
    )
    counts = {
        "entities": (entities, "Entities"),
        "sources": (sources, "Data sources"),
        "views": (views, "Feature views"),
        "services": (services, "Feature services"),
    }
    return render(
        request,
        "overview.html",
        {"info": info, "health": health, "counts": counts},
        status_code=200 if info.error is None else http_status(info.error.code),
    )


async def search(request: Request) -> Response:
    """`SearchFeatures`, a page at a time, with owners and tags."""
    query = request.query_params.get("q", "").strip()
    token = request.query_params.get("page_token", "")
    context: dict[str, object] = {"query": query, "matches": None, "next_token": ""}
    if not query:
        return render(request, "search.html", context)
    try:
        matches, next_token = await api(request).search(
            query, page_size=SEARCH_PAGE_SIZE, page_token=token
        )
    except SkewlessClientError as exc:
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            raise  # the sign-in form, in place of the page
        context["error"] = exc
        return render(request, "search.html", context, status_code=http_status(exc.code))
    context.update(matches=matches, next_token=next_token, first_page=not token)
    return render(request, "search.html", context)


async def entity_list(request: Request) -> Response:
    """Every entity."""
    return render(request, "list_entities.html", {"entities": await api(request).entities()})


async def source_list(request: Request) -> Response:
    """Every data source."""
    return render(request, "list_sources.html", {"sources": await api(request).data_sources()})


async def view_list(request: Request) -> Response:
    """Every feature view."""
    return render(request, "list_views.html", {"views": await api(request).feature_views()})


async def service_list(request: Request) -> Response:
    """Every feature service."""
    services = await api(request).feature_services()
    return render(request, "list_services.html", {"services": services})


async def entity_page(request: Request) -> Response:
    """An entity: its join keys and the views it keys."""
    name = request.path_params["name"]
    caller = api(request)
    entity, views = await asyncio.gather(caller.entity(name), settle(caller.feature_views()))
    keyed = [v for v in views.value or [] if name in v.entities]
    return render(
        request, "entity.html", {"entity": entity, "views": keyed, "views_error": views.error}
    )


async def source_page(request: Request) -> Response:
    """A data source: where its rows come from, and what reads it."""
    name = request.path_params["name"]
    caller = api(request)
    source, views, services = await asyncio.gather(
        caller.data_source(name),
        settle(caller.feature_views()),
        settle(caller.feature_services()),
    )
    graph = source_lineage(source, views.value or [], services.value or [])
    return render(
        request,
        "source.html",
        {
            "source": source,
            "graph": layout(graph),
            "lineage_error": views.error or services.error,
        },
    )


async def view_page(request: Request) -> Response:
    """A feature view: schema, TTL, schedule, SQL, lineage and recent jobs."""
    name = request.path_params["name"]
    caller = api(request)
    view, services, jobs = await asyncio.gather(
        caller.feature_view(name),
        settle(caller.feature_services()),
        settle(caller.jobs(feature_view=name, page_size=RECENT_JOBS)),
    )
    entities = await asyncio.gather(*(settle(caller.entity(e)) for e in view.entities))
    return render(
        request,
        "view.html",
        {
            "view": view,
            "entities": list(zip(view.entities, entities, strict=True)),
            "graph": layout(view_lineage(view, services.value or [])),
            "lineage_error": services.error,
            "jobs": jobs,
        },
    )


async def service_page(request: Request) -> Response:
    """A feature service: its features view by view, and its lineage."""
    name = request.path_params["name"]
    caller = api(request)
    service = await caller.feature_service(name)
    view_names = list(dict.fromkeys(p.feature_view for p in service.projections))
    outcomes = await asyncio.gather(*(settle(caller.feature_view(v)) for v in view_names))
    views: dict[str, registry_pb2.FeatureView] = {
        n: o.value for n, o in zip(view_names, outcomes, strict=True) if o.value is not None
    }
    errors = [o.error for o in outcomes if o.error is not None]
    rows = []  # (view name, feature or None, feature name) in served order
    for projection in service.projections:
        view = views.get(projection.feature_view)
        by_name = {f.name: f for f in view.features} if view else {}
        names = list(projection.features) or list(by_name)
        for feature_name in names:
            rows.append((projection.feature_view, by_name.get(feature_name), feature_name))
    return render(
        request,
        "service.html",
        {
            "service": service,
            "rows": rows,
            "graph": layout(service_lineage(service, views.values())),
            "views_error": errors[0] if errors else None,
        },
    )


routes = [
    Route("/", overview, name="overview"),
    Route("/search", search, name="search"),
    Route("/entities", entity_list, name="entities"),
    Route("/entities/{name}", entity_page, name="entity"),
    Route("/sources", source_list, name="sources"),
    Route("/sources/{name}", source_page, name="source"),
    Route("/views", view_list, name="views"),
    Route("/views/{name}", view_page, name="view"),
    Route("/services", service_list, name="services"),
    Route("/services/{name}", service_page, name="service"),
]
