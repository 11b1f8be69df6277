"""Materialization leases in the shared Redis, for a data dir on object storage.

Servers sharing one object-store data dir have no common kernel to hold a `flock`, but
they share one Redis. A view's job lease is the key `skewless:{project}:lease:<view>`,
taken with `SET NX PX` (so exactly one holder, and a holder that dies frees it when the
TTL runs out), renewed every third of its TTL by a background thread with a
compare-and-extend script, and released with compare-and-delete: a holder never extends
or deletes a lease it lost.

Each acquisition gets a fencing token (`INCR skewless:{project}:lease-fence`), strictly
increasing across holders. The token is checked against the key right before a window's
Delta commit (`check`): a holder that was paused past its TTL and lost the lease fails
there instead of committing. (The commit itself is safe regardless: Delta's conditional
put serializes commits, and re-running a window equals one run; the lease is what keeps
two servers from computing the same period twice.)

The value also records the holder's host and pid: a lease whose holder process is dead on
this machine (SIGKILL) is taken over at once instead of after its TTL, like `flock`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Sequence

import redis
from redis.cluster import RedisCluster

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError, StoreUnavailableError

__all__ = ["LEASE_TTL_MS", "LeaseSet", "lease_key"]

#: How long a lease lives without renewal.
LEASE_TTL_MS = 15_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_HOST = socket.gethostname()


def lease_key(project: str, view: str) -> str:
    """The Redis key of a view's materialization lease."""
    return f"skewless:{project}:lease:{view}"


def _fence_key(project: str) -> str:
    return f"skewless:{project}:lease-fence"


def _client(config: RepoConfig) -> redis.Redis | RedisCluster:
    from skewless.online.connection import tls_options

    url = config.redis_url
    if url is None and config.redis_port:
        url = f"redis://127.0.0.1:{config.redis_port}/0"
    if url is None:
        raise FailedPreconditionError(
            "a data dir on object storage needs the shared Redis for its materialization "
            "leases: set online_store.redis_url in skewless.yaml",
            reason="REDIS_NOT_CONFIGURED",
        )
    options = tls_options(url, config.redis_tls)
    if config.redis_cluster:
        return RedisCluster.from_url(url, socket_timeout=5.0, **options)
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0, **options)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _dead_here(value: str | None) -> bool:
    """Whether a lease value names a process of this host that has exited."""
    if value is None:
        return False
    parts = value.split(":")
    if len(parts) < 3 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseSet:
    """Leases on several views, all taken or none, renewed until released."""

    def __init__(
        self, config: RepoConfig, views: Sequence[str], *, ttl_ms: int = LEASE_TTL_MS
    ) -> None:
        """Takes every view's lease without waiting, in name order.

        Raises:
            FailedPreconditionError: `MATERIALIZATION_RUNNING`: another job holds one.
            StoreUnavailableError: Redis did not answer.

        """
        self.project = config.project
        self.ttl_ms = ttl_ms
        self.tokens: dict[str, str] = {}
        self._lost: set[str] = set()
        self._stop = threading.Event()
        self._client = _client(config)
        self._renewer: threading.Thread | None = None
        try:
            for view in sorted(set(views)):
                self._take(view)
        except BaseException:
            self.release()
            raise
        self._renewer = threading.Thread(
            target=self._renew_loop, name="skewless-lease-renew", daemon=True
        )
        self._renewer.start()

    def _take(self, view: str) -> None:
        key = lease_key(self.project, view)
        try:
            for _ in range(2):
                token = int(self._client.incr(_fence_key(self.project)))
                value = f"{token}:{_HOST}:{os.getpid()}"
                if self._client.set(key, value, nx=True, px=self.ttl_ms):
                    self.tokens[view] = value
                    return
                held = _text(self._client.get(key))
                if held is None or not _dead_here(held):
                    break
                self._client.eval(_RELEASE, 1, key, held)  # its holder was killed
        except redis.RedisError as exc:
            raise StoreUnavailableError(
                "Redis did not answer while taking a materialization lease; retry",
                reason="REDIS_UNAVAILABLE",
            ) from exc
        raise FailedPreconditionError(
            f"a materialization job for feature view {view!r} is already running (on this "
            "or another server sharing the data dir); wait for it to finish",
            reason="MATERIALIZATION_RUNNING",
            metadata={"feature_view": view},
        )

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            for view, value in list(self.tokens.items()):
                try:
                    kept = self._client.eval(
                        _RENEW, 1, lease_key(self.project, view), value, self.ttl_ms
                    )
                except redis.RedisError:
                    continue  # try again at the next beat; `check` decides at commit time
                if not kept:
                    self._lost.add(view)

    def check(self, view: str) -> None:
        """Raises unless this process still holds the view's lease (its fencing token).

        Raises:
            FailedPreconditionError: `MATERIALIZATION_LEASE_LOST`.

        """
        value = self.tokens.get(view)
        if value is None:
            return
        try:
            current = _text(self._client.get(lease_key(self.project, view)))
        except redis.RedisError as exc:
            raise StoreUnavailableError(
                "Redis did not answer while checking the materialization lease; retry",
                reason="REDIS_UNAVAILABLE",
            ) from exc
        if view in self._lost or current != value:
            raise FailedPreconditionError(
                f"the materialization lease of feature view {view!r} expired before its "
                "commit (another server may run it now); nothing was committed, retry",
                reason="MATERIALIZATION_LEASE_LOST",
                metadata={"feature_view": view},
            )

    def release(self) -> None:
        """Releases every lease still held (never one another holder took over)."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=2)
        for view, value in list(self.tokens.items()):
            with contextlib.suppress(redis.RedisError):  # else it expires by itself
                self._client.eval(_RELEASE, 1, lease_key(self.project, view), value)
        self.tokens.clear()
        with contextlib.suppress(redis.RedisError):
            self._client.close()
