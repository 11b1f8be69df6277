"""HTTP hardening and timing around every console response.

- `Server-Timing: app;dur=<ms>`: the handler's time up to the response start (the page
  is rendered by then), readable in the browser's developer tools and by `bench/console.py`.
- Security headers: a strict Content-Security-Policy (only the console's own scripts and
  styles), no framing, no MIME sniffing, same-origin referrers.
- Cross-site form posts are refused: a POST whose `Origin` is another site gets 403, so
  a page elsewhere cannot start jobs through a user's browser.
- A signed-in browser's pages are `Cache-Control: no-store`: they show that user's data,
  which must not outlive the session in the browser's cache.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skewless.console.sessions import COOKIE_NAME

__all__ = ["ConsoleMiddleware"]

_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
_SESSION_COOKIE = f"{COOKIE_NAME}=".encode()
_FORBIDDEN = b"cross-site request refused: this form can only be posted from the console itself"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _same_origin(scope: Scope) -> bool:
    origin = _header(scope, b"origin")
    if not origin:  # not a browser's cross-site post (browsers send Origin on POST)
        return True
    return urlsplit(origin).netloc == _header(scope, b"host")


class ConsoleMiddleware:
    """Adds timing and security headers; refuses cross-site POSTs."""

    def __init__(self, app: ASGIApp) -> None:
        """Wraps the ASGI app."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not _same_origin(scope):
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        *_SECURITY_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _FORBIDDEN})
            return
        started = time.perf_counter()
        private = _SESSION_COOKIE in _header(scope, b"cookie").encode("latin-1") and not str(
            scope.get("path", "")
        ).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={elapsed:.2f}".encode()))
                headers.extend(_SECURITY_HEADERS)
                if private and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
