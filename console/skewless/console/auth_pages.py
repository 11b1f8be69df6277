"""Signing in and out, when the server checks identities.

A page whose call the server refuses as UNAUTHENTICATED shows the sign-in form in its
place (HTTP 401), with the server's message. The form posts the token to `/signin`; the
console checks it with one call (`GetRegistryInfo`): the server answering anything but
UNAUTHENTICATED means it knows the caller (PERMISSION_DENIED included: a user may hold
no `read_registry`), so the session starts and the browser goes back to the page it
came from. From then on every call of that browser carries `authorization: Bearer
<token>` (`session_metadata`, the console's default `caller_metadata`), so the server
applies that user's permissions. `/signout` ends the session.

The token stays in the console's memory (`skewless.console.sessions`); it is never put
in a URL, a page or a log.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from skewless.client.errors import SkewlessClientError
from skewless.console.sessions import COOKIE_NAME, MAX_AGE_SECONDS, Session
from skewless.console.settings import Metadata
from skewless.console.web import backend, http_status, render, sessions

__all__ = ["MAX_TOKEN_CHARS", "current_session", "routes", "safe_next", "session_metadata"]

#: The longest token the form takes (gRPC's metadata soft limit is 8 KiB in all).
MAX_TOKEN_CHARS = 6000


def current_session(request: Request) -> Session | None:
    """The signed-in session of this browser, or None."""
    return sessions(request).get(request.cookies.get(COOKIE_NAME))


def session_metadata(request: Request) -> Metadata:
    """The call metadata of a request: the session's bearer token, when signed in."""
    session = current_session(request)
    if session is None:
        return ()
    return (("authorization", f"Bearer {session.token}"),)


def safe_next(path: str) -> str:
    """Where to go after signing in: a path of this console, else the overview."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return "/"
    if path.startswith(("/signin", "/signout")):
        return "/"
    return path


def _token_problem(token: str) -> str | None:
    if not token:
        return "enter a token"
    if len(token) > MAX_TOKEN_CHARS:
        return f"a token is at most {MAX_TOKEN_CHARS} characters"
    if not all("!" <= ch <= "~" for ch in token):
        return "a token is printable ASCII without spaces"
    return None


def sign_in_page(
    request: Request,
    *,
    next_path: str,
    error: SkewlessClientError | str | None = None,
    status_code: int = 200,
) -> Response:
    """The sign-in form (also shown in place of a page the server refused)."""
    response = render(
        request,
        "signin.html",
        {"next": safe_next(next_path), "error": error, "signin_form": True},
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def refused_page(request: Request, exc: SkewlessClientError) -> Response:
    """A page whose call was UNAUTHENTICATED: the sign-in form, with the server's message.

    A session the server no longer accepts (token revoked or expired) ends here.
    """
    sessions(request).drop(request.cookies.get(COOKIE_NAME))
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return sign_in_page(request, next_path=path, error=exc, status_code=401)


async def signin(request: Request) -> Response:
    """GET shows the form; POST checks the token and starts a session."""
    if request.method == "GET":
        return sign_in_page(request, next_path=request.query_params.get("next", "/"))
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    token = (fields.get("token") or [""])[0].strip()
    if token.lower().startswith("bearer "):
        token = token[len("bearer ") :].strip()
    next_path = (fields.get("next") or ["/"])[0]
    problem = _token_problem(token)
    if problem is not None:
        return sign_in_page(request, next_path=next_path, error=problem, status_code=400)
    caller = backend(request).caller((("authorization", f"Bearer {token}"),))
    try:
        await caller.registry_info()
    except SkewlessClientError as exc:
        if exc.code != grpc.StatusCode.PERMISSION_DENIED:  # denied: known, just not allowed
            status = 401 if exc.code == grpc.StatusCode.UNAUTHENTICATED else http_status(exc.code)
            return sign_in_page(request, next_path=next_path, error=exc, status_code=status)
    store = sessions(request)
    store.drop(request.cookies.get(COOKIE_NAME))  # a new id at every sign-in
    response = RedirectResponse(safe_next(next_path), status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        store.create(token),
        max_age=MAX_AGE_SECONDS,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


async def signout(request: Request) -> Response:
    """Ends the session and forgets its token."""
    sessions(request).drop(request.cookies.get(COOKIE_NAME))
    response = RedirectResponse("/signin?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True, samesite="strict")
    return response


routes = [
    Route("/signin", signin, methods=["GET", "POST"], name="signin"),
    Route("/signout", signout, methods=["POST"], name="signout"),
]
