"""The skewless web console: a server-rendered web app that is a gRPC client of the server.

It shows only what the API exposes (registry, search, jobs, online lookups, health) and
makes every call with the caller's credentials. It imports `skewless.client` and the
generated `skewless.v1` stubs, nothing of the server (pinned by import-linter).

Example:
    >>> from skewless.console import ConsoleServer, ConsoleSettings
    >>> console = ConsoleServer(ConsoleSettings("127.0.0.1:6566"), port=8566)
    >>> console.serve_forever()  # doctest: +SKIP

"""

from skewless.console.app import create_app
from skewless.console.serving import ConsoleServer
from skewless.console.settings import (
    DEFAULT_TARGET,
    DEFAULT_UI_HOST,
    DEFAULT_UI_PORT,
    ConsoleSettings,
)

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_UI_HOST",
    "DEFAULT_UI_PORT",
    "ConsoleServer",
    "ConsoleSettings",
    "create_app",
]
