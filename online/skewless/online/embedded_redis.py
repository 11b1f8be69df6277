"""A real `redis-server` process that skewless starts and stops itself.

Used when no Redis URL is configured: the data lives under the project's data dir,
the server listens on loopback only, and it is stopped when skewless exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType

import redis

from skewless.core.config import RepoConfig
from skewless.core.errors import StoreUnavailableError

__all__ = ["EmbeddedRedis", "find_redis_server", "free_port", "online_store_config"]

_BINARY_ENV = "SKEWLESS_REDIS_SERVER"


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """Returns the path of the `redis-server` binary to run.

    `$SKEWLESS_REDIS_SERVER` wins; otherwise `redis-server` on the PATH.

    Raises:
        StoreUnavailableError: No binary was found; the message says how to get one.

    """
    explicit = os.environ.get(_BINARY_ENV)
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found is None:
        raise StoreUnavailableError(
            "redis-server is not installed (not found on PATH), and skewless starts one "
            "when skewless.yaml sets no online_store.redis_url. Install it (Debian/Ubuntu: "
            "`sudo apt-get install redis-server`; macOS: `brew install redis`; in a skewless "
            f"checkout `make setup`), set ${_BINARY_ENV} to its path, or set "
            "online_store.redis_url in skewless.yaml to a Redis you run (redis://host:6379/0)",
            reason="REDIS_BINARY_NOT_FOUND",
        )
    return found


class EmbeddedRedis:
    """A `redis-server` child process on 127.0.0.1.

    Use as a context manager, or call `start` and `stop`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        persist: bool = True,
    ) -> None:
        """Prepares (does not start) a server.

        Args:
            data_dir: Folder for the server's data and log files (created if missing).
            port: TCP port on 127.0.0.1; 0 picks a free one.
            extra_args: More `redis-server` arguments (e.g. `--cluster-enabled yes`).
            persist: Keep data across restarts (append-only file); False for tests.

        """
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url_file(self) -> Path:
        """File holding the URL while the server runs, so other commands find it."""
        return self.data_dir / "redis.url"

    @property
    def url(self) -> str:
        """The `redis://` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Starts the process and waits until it answers PING.

        Raises:
            StoreUnavailableError: It exited or did not answer within `timeout` seconds;
                the message includes the end of its log.

        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--logfile", str(log),
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    tail = log.read_text()[-800:] if log.exists() else ""
                    raise StoreUnavailableError(
                        f"redis-server exited with code {self.process.returncode} on port "
                        f"{self.port}: {err or tail}",
                        reason="REDIS_START_FAILED",
                    )
                try:
                    if client.ping():
                        self.url_file.write_text(self.url + "\n")
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise StoreUnavailableError(
                        f"redis-server on port {self.port} did not answer within {timeout}s",
                        reason="REDIS_START_FAILED",
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the process (SIGTERM, then SIGKILL after `timeout`); safe to call twice."""
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self.url_file.unlink(missing_ok=True)
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if proc.stderr is not None:
                proc.stderr.close()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _running_url(url_file: Path) -> str | None:
    try:
        url = url_file.read_text().strip()
    except FileNotFoundError:
        return None
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return url if client.ping() else None
    except redis.RedisError:
        return None
    finally:
        client.close()


@contextmanager
def online_store_config(config: RepoConfig) -> Iterator[tuple[RepoConfig, EmbeddedRedis | None]]:
    """Yields the config with `redis_url` set, starting the embedded Redis if needed.

    A configured URL is used as is. Otherwise the embedded Redis of the project (data in
    `<data_dir>/redis`) is used if one is running (for example under `skewless serve`),
    or started for the duration of the block and stopped after it. Its data persists
    (append-only file), so values written here are served by the next `skewless serve`.
    """
    if config.redis_url:
        yield config, None
        return
    data_dir = config.embedded_redis_dir
    running = _running_url(data_dir / "redis.url")
    if running is not None:
        yield replace(config, redis_url=running), None
        return
    with EmbeddedRedis(data_dir, port=config.redis_port) as embedded:
        yield replace(config, redis_url=embedded.url), embedded
