"""What every servicer of one server process shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from skewless.core.config import RepoConfig
from skewless.online.writer import AsyncOnlineWriter
from skewless.server.auth.permissions import Access
from skewless.server.registry_holder import RegistryHolder

__all__ = ["ServerContext"]


@dataclass
class ServerContext:
    """Shared state of one server process.

    Attributes:
        config: The feature repository's configuration (`redis_url` is always set here).
        registry: The registry being served, reloaded on change.
        redis: The asyncio Redis client the reads and pushes share.
        writer: The compare-and-set writer pushes use, over `redis`.
        access: The permission check of the registry's policies (off unless `auth`).

    """

    config: RepoConfig
    registry: RegistryHolder
    redis: aioredis.Redis | aioredis.RedisCluster
    writer: AsyncOnlineWriter = field(init=False)
    access: Access = field(default_factory=lambda: Access(enabled=False))

    def __post_init__(self) -> None:
        self.writer = AsyncOnlineWriter(self.redis)
