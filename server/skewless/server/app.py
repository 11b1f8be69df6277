"""The gRPC server: every v1 service, health, reflection, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from skewless.core.config import RepoConfig
from skewless.core.errors import SkewlessError
from skewless.offline.delta_log import check_layout
from skewless.online.connection import tls_options
from skewless.registry.registry_store import RegistryStore
from skewless.server.auth import Access, AuthGate, build_authenticator
from skewless.server.context import ServerContext
from skewless.server.reflection import SERVICE_NAMES as REFLECTION_SERVICES
from skewless.server.reflection import add_reflection
from skewless.server.registry_holder import RegistryHolder
from skewless.server.rpc import register_service, register_wrapped
from skewless.server.services.historical import HistoricalServicer
from skewless.server.services.materialization import MaterializationServicer
from skewless.server.services.monitoring import MonitoringServicer, SkewReportSchedule
from skewless.server.services.online import OnlineServicer
from skewless.server.services.registry import RegistryServicer
from skewless.server.tls import bind
from skewless.v1 import (
    historical_service_pb2,
    materialization_service_pb2,
    monitoring_service_pb2,
    online_service_pb2,
    registry_service_pb2,
)

__all__ = [
    "SERVICE_NAMES",
    "SkewlessServer",
    "create_server",
    "event_loop_factory",
    "open_redis",
    "serve",
]

_log = logging.getLogger(__name__)


def _service(module: Any, name: str) -> ServiceDescriptor:
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return descriptor


#: Full names of the skewless services, taken from the descriptors.
SERVICE_NAMES: tuple[str, ...] = (
    _service(registry_service_pb2, "RegistryService").full_name,
    _service(online_service_pb2, "OnlineService").full_name,
    _service(historical_service_pb2, "HistoricalService").full_name,
    _service(materialization_service_pb2, "MaterializationService").full_name,
    _service(monitoring_service_pb2, "MonitoringService").full_name,
)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

#: Largest message the server accepts (pushes and Arrow uploads).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def open_redis(config: RepoConfig) -> aioredis.Redis | aioredis.RedisCluster:
    """Opens the asyncio Redis client the servicers share (no I/O until first use)."""
    if config.redis_url is None:
        raise ValueError("config.redis_url must be set before the server is created")
    tls = tls_options(config.redis_url, config.redis_tls)  # rediss:// with the configured files
    if config.redis_cluster:
        return aioredis.RedisCluster.from_url(config.redis_url, socket_timeout=2.0, **tls)
    return aioredis.Redis.from_url(
        config.redis_url,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        health_check_interval=5,
        **tls,
    )


@dataclass
class SkewlessServer:
    """A created server: `start`, then `wait_for_termination` or `stop`.

    Attributes:
        server: The underlying `grpc.aio.Server`.
        ctx: The state shared by the servicers.
        health: The standard health servicer.
        online: The online servicer (its Redis sockets are closed on stop).

    """

    server: grpc.aio.Server
    ctx: ServerContext
    health: health.aio.HealthServicer
    online: OnlineServicer
    health_interval: float = 0.5
    run_schedules: bool = True
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Loads the registry, starts serving and the background watchers."""
        try:
            await asyncio.to_thread(self.ctx.registry.reload)
        except SkewlessError as exc:  # serve anyway: RPCs answer with this error meanwhile
            _log.error("could not load the registry at start: %s", exc.message)
        except Exception:  # serve anyway: registry RPCs say what is wrong until a good apply
            _log.exception("could not load the registry at start")
        try:
            await asyncio.to_thread(check_layout, self.ctx.config)
        except SkewlessError as exc:  # serve anyway: online serving does not need it
            _log.error("offline store: %s", exc.message)
        await self.server.start()
        await self._check_health()
        # On object storage a new registry must reach every server sharing the bucket
        # within a second: poll (one listing request) four times a second.
        interval = 1.0 if self.ctx.config.storage.is_local else 0.25
        self._tasks.append(asyncio.create_task(self.ctx.registry.watch(interval)))
        self._tasks.append(asyncio.create_task(self._watch_health()))
        if self.run_schedules:
            from skewless.materialization.retention import run_retention
            from skewless.materialization.schedule import run_scheduler

            self._tasks.append(
                asyncio.create_task(run_scheduler(self.ctx.config, self.ctx.registry))
            )
            self._tasks.append(
                asyncio.create_task(run_retention(self.ctx.config, self.ctx.registry))
            )
            self._tasks.append(asyncio.create_task(SkewReportSchedule(self.ctx).run()))

    async def _set_health(self, status: int) -> None:  # a HealthCheckResponse.ServingStatus
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _check_health(self) -> None:
        try:
            ok = bool(await asyncio.wait_for(self.ctx.redis.ping(), timeout=1.0))
        except Exception:
            ok = False
        await self._set_health(_SERVING if ok else _NOT_SERVING)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self._check_health()

    async def wait_for_termination(self) -> None:
        """Blocks until the server stops."""
        await self.server.wait_for_termination()

    async def stop(self, grace: float = 5.0) -> None:
        """Stops gracefully: health NOT_SERVING, in-flight calls get `grace` seconds."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await asyncio.to_thread(self.online.logger.close)  # every logged call is written
        self.online.reader.close()
        await self.ctx.redis.aclose()


def create_server(config: RepoConfig, *, run_schedules: bool = True) -> tuple[SkewlessServer, int]:
    """Builds a server for a repository; call `await server.start()` to serve.

    Args:
        config: The repository configuration. `redis_url` must be set (the CLI starts an
            embedded Redis first when it is not). `server_port` 0 binds a free port.
        run_schedules: Materialize views that have a `schedule` from this process (with
            several workers, only one of them does).

    Returns:
        The server and the port it is bound to.

    """
    authenticator = build_authenticator(config.auth)  # files checked before anything starts
    access = Access(enabled=authenticator is not None)
    holder = RegistryHolder(RegistryStore(config.storage))
    holder.subscribe(access.load)
    ctx = ServerContext(config=config, registry=holder, redis=open_redis(config), access=access)
    gate = (
        None
        if authenticator is None
        else AuthGate(authenticator, access, open_reflection=config.auth.open_reflection)
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1),
        ],
    )
    online = OnlineServicer(ctx)
    for descriptor, servicer in (
        (_service(registry_service_pb2, "RegistryService"), RegistryServicer(ctx)),
        (_service(online_service_pb2, "OnlineService"), online),
        (_service(historical_service_pb2, "HistoricalService"), HistoricalServicer(ctx)),
        (
            _service(materialization_service_pb2, "MaterializationService"),
            MaterializationServicer(ctx),
        ),
        (_service(monitoring_service_pb2, "MonitoringService"), MonitoringServicer(ctx)),
    ):
        register_service(server, descriptor, servicer.handlers(), gate)
    health_servicer = health.aio.HealthServicer()
    register_wrapped(
        server, lambda s: health_pb2_grpc.add_HealthServicer_to_server(health_servicer, s), gate
    )
    health_name = _service(health_pb2, "Health").full_name
    names = (*SERVICE_NAMES, health_name, *REFLECTION_SERVICES)
    reflector = reflection.aio.ReflectionServicer(names)
    register_wrapped(server, lambda s: add_reflection(reflector, s), gate)
    port = bind(server, config)  # TLS when configured; plaintext only where allowed
    return (
        SkewlessServer(
            server=server,
            ctx=ctx,
            health=health_servicer,
            online=online,
            run_schedules=run_schedules,
        ),
        port,
    )


async def _serve_until_signal(
    config: RepoConfig,
    *,
    grace: float,
    worker_index: int,
    on_ready: Callable[[RepoConfig], None] | None,
) -> None:
    server, port = create_server(config, run_schedules=worker_index == 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    _log.info(
        "worker %d serving on %s:%d (%s event loop)",
        worker_index,
        config.server_host,
        port,
        type(loop).__module__.split(".")[0],
    )
    if on_ready is not None:
        on_ready(dataclasses.replace(config, server_port=port))
    await stop.wait()
    _log.info("shutting down: health NOT_SERVING, finishing in-flight calls")
    await server.stop(grace)


def serve(
    config: RepoConfig,
    *,
    grace: float = 5.0,
    worker_index: int = 0,
    on_ready: Callable[[RepoConfig], None] | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then stops gracefully (the one serve loop).

    Args:
        config: The repository configuration; `redis_url` must be set.
        grace: Seconds in-flight calls get when stopping.
        worker_index: This process's index among `skewless serve --workers N` (metrics
            go to `metrics_port + worker_index`; only worker 0 runs schedules).
        on_ready: Called once serving, with the configuration and the bound port.

    Raises:
        SkewlessError: The metrics port cannot be bound.

    """
    from skewless.server.metrics import start_metrics_server

    if config.metrics_port:
        port = config.metrics_port + worker_index
        try:
            start_metrics_server(port, host=config.server_host)
        except OSError as exc:
            raise SkewlessError(
                f"cannot serve metrics on port {port} ({exc.strerror}): set "
                "server.metrics_port in skewless.yaml or pass --metrics-port 0"
            ) from exc
    with asyncio.Runner(loop_factory=event_loop_factory(config.event_loop)) as runner:
        runner.run(
            _serve_until_signal(config, grace=grace, worker_index=worker_index, on_ready=on_ready)
        )


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the event loop `server.event_loop` names (None: asyncio's own).

    `uvloop` (libuv) costs less CPU per call than asyncio's loop; the server behaves
    the same on both.
    """
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows): asyncio's loop
            _log.warning("uvloop is not installed here; serving on asyncio's event loop")
            return None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None
