"""A real three-node Redis Cluster: `redis-server --cluster-enabled yes` joined by redis-cli."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from skewless.online.embedded_redis import EmbeddedRedis, free_port

__all__ = ["RedisClusterNodes", "start_cluster"]


@dataclass(frozen=True)
class RedisClusterNodes:
    """The nodes of a running cluster.

    Attributes:
        nodes: One embedded server per node (no replicas).

    """

    nodes: tuple[EmbeddedRedis, ...]

    @property
    def url(self) -> str:
        """A URL of one node; cluster clients discover the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"


def _low_free_port() -> int:
    """A free port Redis Cluster accepts (it refuses ports above 55535)."""
    for _ in range(200):
        port = free_port()
        if port <= 55535:
            return port
    raise RuntimeError("no free port at or below 55535")


@contextmanager
def start_cluster(root: Path, size: int = 3) -> Iterator[RedisClusterNodes]:
    """Starts `size` cluster-enabled redis-servers and joins them; stops them at the end."""
    nodes: list[EmbeddedRedis] = []
    try:
        for i in range(size):
            folder = root / f"node{i}"
            extra = ("--cluster-port", str(free_port()), "--cluster-enabled", "yes")
            extra += ("--cluster-config-file", str(folder / "nodes.conf"))
            extra += ("--cluster-node-timeout", "2000")
            nodes.append(
                EmbeddedRedis(
                    folder, port=_low_free_port(), persist=False, extra_args=extra
                ).start()
            )
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in nodes:
            client = redis.Redis(port=node.port)
            try:
                while client.cluster("info")["cluster_state"] != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the Redis Cluster did not become ok")
                    time.sleep(0.1)
            finally:
                client.close()
        yield RedisClusterNodes(tuple(nodes))
    finally:
        for node in nodes:
            node.stop()
