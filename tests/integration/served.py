"""Runs the real server for tests: `skewless serve` as a subprocess, or in a thread."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skewless.core.config import RepoConfig
from skewless.server.app import SkewlessServer, create_server

_SERVING = re.compile(r"serving project .* on [\d.]+:(\d+)")


@dataclass
class ServedProcess:
    """A running `skewless serve` process and what it printed."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)


def write_repo(root: Path, project: str = "tests", redis_url: str | None = None) -> Path:
    """Writes a minimal feature repository (config only) and returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    url = "null" if redis_url is None else redis_url
    (root / "skewless.yaml").write_text(
        f"project: {project}\ndata_dir: .skewless\nonline_store: {{redis_url: {url}}}\n"
    )
    return root


@contextmanager
def serve(repo: Path, *extra: str, timeout: float = 30.0) -> Iterator[ServedProcess]:
    """Runs `skewless serve REPO --port 0` until the block ends, then SIGTERMs it."""
    cmd = [sys.executable, "-m", "skewless.cli", "serve", str(repo), "--port", "0"]
    cmd += ["--metrics-port", "0", *extra]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    served = ServedProcess(proc=proc, port=0)
    found = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.append(line)
            match = _SERVING.search(line)
            if match and not found.is_set():
                served.port = int(match.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.1):
        if time.monotonic() > deadline:
            break
    try:
        if served.port == 0:
            raise AssertionError(f"server did not start:\n{served.output()}")
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


class ServerThread:
    """The real server on its own event loop in a background thread."""

    def __init__(self, config: RepoConfig, *, run_schedules: bool = True) -> None:
        self.config = config
        self.run_schedules = run_schedules
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: SkewlessServer | None = None
        self.port = 0

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()

        async def _start() -> tuple[SkewlessServer, int]:
            server, port = create_server(self.config, run_schedules=self.run_schedules)
            await server.start()
            return server, port

        self.server, self.port = self.run(_start())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(0.2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
