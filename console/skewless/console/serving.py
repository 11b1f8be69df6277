"""Serving the console over HTTP with uvicorn.

In the foreground (`skewless ui`) or in a background thread next to the gRPC server
(`skewless serve --ui-port`, tests, benchmarks).

The socket is bound before uvicorn starts, so port 0 picks a free port that `url`
reports, and a port in use fails at once with a clear `OSError`.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from skewless.console.app import create_app
from skewless.console.settings import DEFAULT_UI_HOST, ConsoleSettings
from skewless.console.web import CallerMetadata

__all__ = ["ConsoleServer", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """Binds and listens on the console's TCP socket (port 0 picks a free one).

    Raises:
        OSError: The address cannot be bound (in use, not local, ...).

    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


class ConsoleServer:
    """The console on one HTTP socket.

    Example:
        >>> server = ConsoleServer(ConsoleSettings("127.0.0.1:6566"), port=0).start()
        >>> server.url  # doctest: +SKIP
        'http://127.0.0.1:40123'
        >>> server.stop()

    """

    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        host: str = DEFAULT_UI_HOST,
        port: int = 0,
        sock: socket.socket | None = None,
        caller_metadata: CallerMetadata | None = None,
        access_log: bool = False,
    ) -> None:
        """Binds the socket (so `port` 0 resolves now) without serving yet.

        Args:
            settings: How to reach the skewless server.
            host: Address to bind; loopback by default.
            port: Port to bind; 0 picks a free one.
            sock: A socket from `bind` to serve on instead of binding `host:port`.
            caller_metadata: Per-request call metadata (see `create_app`).
            access_log: Log every HTTP request.

        Raises:
            OSError: The address cannot be bound.

        """
        self.settings = settings
        self.socket = sock if sock is not None else bind(host, port)
        self.host, self.port = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            create_app(settings, caller_metadata=caller_metadata),
            log_config=None,
            log_level="info" if access_log else "warning",
            access_log=access_log,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The console's address, for people and browsers."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serves in this thread until SIGINT/SIGTERM (main thread) or `stop`."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 10.0) -> ConsoleServer:
        """Serves in a daemon thread; returns once accepting connections.

        Raises:
            RuntimeError: It did not start within `timeout` seconds.

        """
        self._thread = threading.Thread(target=self.serve_forever, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops serving (in-flight requests finish) and waits for the thread."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.socket.close()
