"""What every page handler shares: the caller's API, rendering, and status mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from skewless.client.errors import SkewlessClientError
from skewless.console.api import Api, Backend
from skewless.console.sessions import SessionStore

__all__ = [
    "CallerMetadata",
    "ConsoleState",
    "Outcome",
    "api",
    "backend",
    "http_status",
    "render",
    "sessions",
    "settle",
]

_T = TypeVar("_T")

#: Computes the call metadata of a browser request (for example its user's token).
CallerMetadata = Callable[[Request], Sequence[tuple[str, str]]]

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass(frozen=True)
class ConsoleState:
    """The console's shared state, kept in `app.state.console`.

    Attributes:
        backend: The channel to the server.
        templates: The Jinja environment of the pages.
        caller_metadata: The per-request call metadata hook.
        sessions: The signed-in browsers and their tokens.

    """

    backend: Backend
    templates: Jinja2Templates
    caller_metadata: CallerMetadata
    sessions: SessionStore


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def api(request: Request) -> Api:
    """The API as the browser's user sees it (their call metadata on every call)."""
    state = _state(request)
    return state.backend.caller(state.caller_metadata(request))


def backend(request: Request) -> Backend:
    """The console's channel to the server."""
    return _state(request).backend


def sessions(request: Request) -> SessionStore:
    """The console's sessions."""
    return _state(request).sessions


def http_status(code: grpc.StatusCode | None) -> int:
    """The HTTP status of a page whose main call failed with a gRPC status."""
    return 502 if code is None else _HTTP_STATUS.get(code, 502)


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """Renders a page template with the request and `context`."""
    return _state(request).templates.TemplateResponse(
        request, template, context, status_code=status_code
    )


@dataclass(frozen=True)
class Outcome(Generic[_T]):
    """The result of a call that a page shows even when it fails.

    Attributes:
        value: The result, None when the call failed.
        error: The failure (status code and message), None on success.

    """

    value: _T | None
    error: SkewlessClientError | None


async def settle(call: Awaitable[_T]) -> Outcome[_T]:
    """Awaits a call; a failed call becomes an `Outcome` with its error.

    Raises:
        SkewlessClientError: UNAUTHENTICATED, which no section shows: the whole page
            becomes the sign-in form (see `skewless.console.auth_pages`).

    """
    try:
        return Outcome(await call, None)
    except SkewlessClientError as exc:
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return Outcome(None, exc)
