"""What every servicer of one server process shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skewless.core.config import RepoConfig
from skewless.server.registry_holder import RegistryHolder

__all__ = ["ServerContext"]


@dataclass
class ServerContext:
    """Shared state of one server process.

    Attributes:
        config: The feature repository's configuration (`redis_url` is always set here).
        registry: The registry being served, reloaded on change.
        redis: The asyncio Redis client (`redis.asyncio.Redis` or `RedisCluster`).

    """

    config: RepoConfig
    registry: RegistryHolder
    redis: Any
