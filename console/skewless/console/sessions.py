"""Signed-in users: the token each browser session calls the server with.

When the server checks identities, a user signs in with a token (a static token or a
JWT). The console keeps the token on its side only, in memory: the browser gets a
random session id in a cookie that is `HttpOnly` (no script reads it), `Secure` and
`SameSite=Strict` (never sent from another site's page), and the token itself never
reaches a URL, a page or a log. A session ends at sign-out, after `IDLE_SECONDS`
without a request, after `MAX_AGE_SECONDS` in all, or when the console restarts.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "COOKIE_NAME",
    "IDLE_SECONDS",
    "MAX_AGE_SECONDS",
    "MAX_SESSIONS",
    "Session",
    "SessionStore",
]

#: The cookie that carries the session id.
COOKIE_NAME = "skewless_session"
#: A session ends after this long without a request.
IDLE_SECONDS = 2 * 3600
#: A session ends this long after sign-in, however busy.
MAX_AGE_SECONDS = 12 * 3600
#: Sessions kept at most; signing in beyond it ends the least recently used one.
MAX_SESSIONS = 10_000


@dataclass
class Session:
    """One signed-in browser.

    Attributes:
        token: The bearer token its calls carry.
        created: When it signed in (monotonic seconds).
        last_seen: Its latest request (monotonic seconds).

    """

    token: str
    created: float
    last_seen: float


def _key(session_id: str) -> str:
    # Stored under a hash, so the table alone does not hold usable cookie values.
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """The console's sessions, in memory (the console is one process on one event loop)."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        """Creates an empty store with the given limits."""
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        """The number of sessions held (expired ones included until next touched)."""
        return len(self._sessions)

    def create(self, token: str) -> str:
        """Starts a session for `token` and returns its new id (the cookie's value)."""
        session_id = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._sessions[_key(session_id)] = Session(token=token, created=now, last_seen=now)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """The live session with that id (and marks it used), or None."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = time.monotonic()
        if (
            now - session.last_seen > self.idle_seconds
            or now - session.created > self.max_age_seconds
        ):
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def drop(self, session_id: str | None) -> None:
        """Ends a session (nothing happens when there is none)."""
        if session_id:
            self._sessions.pop(_key(session_id), None)
