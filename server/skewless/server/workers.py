"""N server processes on one port, so that every core of a machine serves.

`serve_workers(config, n)` starts `n` processes (spawned, not forked: gRPC does not
survive a fork), each running the complete server bound to the same port; the kernel
spreads incoming connections over them (`SO_REUSEPORT`, which the server sets). The
parent forwards SIGTERM/SIGINT to the workers and returns when all have stopped; if one
worker dies, the others are stopped too. Worker `i` serves Prometheus metrics on
`config.metrics_port + i` (none when `metrics_port` is 0).

`skewless serve --workers N` defaults to `default_workers()`: the number of cores this
process may run on.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.synchronize import Event
from types import FrameType

from skewless.core.config import RepoConfig
from skewless.online.embedded_redis import free_port

__all__ = ["default_workers", "serve_workers"]

_log = logging.getLogger(__name__)
_GRACE_SECONDS = 5.0


def default_workers() -> int:
    """Returns the default worker count: the cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _worker_main(config: RepoConfig, index: int, grace: float, ready: Event) -> None:
    from skewless.server.app import serve

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{index} %(message)s")
    serve(config, grace=grace, worker_index=index, on_ready=lambda _: ready.set())


def serve_workers(
    config: RepoConfig,
    n: int,
    *,
    grace: float = _GRACE_SECONDS,
    on_ready: Callable[[RepoConfig], None] | None = None,
) -> int:
    """Runs `n` server processes on one port until SIGTERM or SIGINT.

    Args:
        config: The repository configuration; `redis_url` must be set (start the
            embedded Redis first). Port 0 is replaced by one free port shared by all.
        n: Number of worker processes (at least 1).
        grace: Seconds in-flight calls get when stopping.
        on_ready: Called once, with the configuration (its port resolved), when every
            worker is serving.

    Returns:
        0 when stopped by a signal, else the exit code of the first worker that died.

    Raises:
        ValueError: `n` is below 1 or `redis_url` is not set.

    """
    if n < 1:
        raise ValueError(f"--workers must be at least 1, got {n}")
    if config.redis_url is None:
        raise ValueError("config.redis_url must be set before starting workers")
    if config.server_port == 0:
        config = replace(config, server_port=free_port(config.server_host))
    spawn = multiprocessing.get_context("spawn")
    ready = [spawn.Event() for _ in range(n)]
    workers = [
        spawn.Process(
            target=_worker_main, args=(config, i, grace, ready[i]), name=f"skewless-worker-{i}"
        )
        for i in range(n)
    ]
    stopping = False

    def _forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, _forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        announced = False
        failed = 0
        while any(w.is_alive() for w in workers):
            if not announced and all(event.is_set() for event in ready):
                announced = True
                _log.info("%d workers serving on %s:%d", n, config.server_host, config.server_port)
                if on_ready is not None:
                    on_ready(config)
            dead = [w for w in workers if not w.is_alive()]
            if dead and not stopping:
                failed = dead[0].exitcode or 1
                _log.error("worker %s exited with %s; stopping the others", dead[0].name, failed)
                _forward(signal.SIGTERM, None)
            time.sleep(0.2)
        for worker in workers:
            worker.join()
        return 0 if stopping and not failed else failed
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
