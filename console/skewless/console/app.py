"""The console's ASGI application: routes, templates, error pages, the API channel.

`create_app(settings)` returns a Starlette app that talks to the server at
`settings.target`. Every page's calls carry the call metadata that `caller_metadata`
computes from the browser request: by default the signed-in user's bearer token
(`skewless.console.auth_pages`), after `settings.metadata`. A page the server refuses as
UNAUTHENTICATED shows the sign-in form instead.

A call that fails renders the page's error box or an error page with the gRPC status
code and the server's message, with a matching HTTP status (NOT_FOUND is 404,
PERMISSION_DENIED 403, UNAVAILABLE 503, ...). Anything unexpected is logged and shown as
a short generic message; no page ever shows a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from skewless.client.errors import SkewlessClientError
from skewless.console import (
    auth_pages,
    freshness_page,
    job_pages,
    lookup_page,
    registry_pages,
    skew_page,
)
from skewless.console.api import Backend
from skewless.console.display import FILTERS
from skewless.console.middleware import ConsoleMiddleware
from skewless.console.sessions import SessionStore
from skewless.console.settings import ConsoleSettings
from skewless.console.web import CallerMetadata, ConsoleState, http_status, render

__all__ = ["create_app"]

_log = logging.getLogger(__name__)
_HERE = Path(__file__).parent
#: Largest request body the console reads (the start form is a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SkewlessClientError)
    code = exc.code.name if exc.code is not None else "UNKNOWN"
    status = http_status(exc.code)
    if _wants_json(request):
        return JSONResponse({"code": code, "message": exc.message}, status_code=status)
    if exc.code == grpc.StatusCode.UNAUTHENTICATED:
        return auth_pages.refused_page(request, exc)
    return render(request, "error.html", {"code": code, "message": exc.message}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    if _wants_json(request):
        return JSONResponse({"code": "HTTP", "message": message}, status_code=exc.status_code)
    return render(
        request,
        "error.html",
        {"code": f"HTTP {exc.status_code}", "message": message},
        status_code=exc.status_code,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    _log.error("console failed on %s %s", request.method, request.url.path, exc_info=exc)
    return render(
        request,
        "error.html",
        {"code": "CONSOLE ERROR", "message": "the console could not show this page; see its log"},
        status_code=500,
    )


def create_app(
    settings: ConsoleSettings, *, caller_metadata: CallerMetadata | None = None
) -> Starlette:
    """Builds the console for the server at `settings.target`.

    Args:
        settings: Target, channel credentials and fixed call metadata.
        caller_metadata: Computes per-request call metadata; by default the signed-in
            user's `authorization: Bearer <token>` (none when not signed in).

    Returns:
        The ASGI application. Its channel opens at startup (lifespan) and closes at shutdown.

    """
    backend = Backend(settings)

    def identity(request: Request) -> dict[str, Any]:
        return {
            "signed_in": auth_pages.current_session(request) is not None,
            "auth_seen": backend.auth_seen,
        }

    templates = Jinja2Templates(directory=str(_HERE / "templates"), context_processors=[identity])
    templates.env.filters.update(FILTERS)
    templates.env.globals["target"] = settings.target
    templates.env.globals["secure"] = settings.secure

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        backend.open()
        try:
            yield
        finally:
            await backend.close()

    app = Starlette(
        routes=[
            *auth_pages.routes,
            *registry_pages.routes,
            *skew_page.routes,
            *freshness_page.routes,
            *job_pages.routes,
            *lookup_page.routes,
            Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
        ],
        middleware=[Middleware(ConsoleMiddleware)],
        exception_handlers={
            SkewlessClientError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.console = ConsoleState(
        backend=backend,
        templates=templates,
        caller_metadata=caller_metadata or auth_pages.session_metadata,
        sessions=SessionStore(),
    )
    return app
