"""A view's materialization state: its job lock and its watermark.

In a local data dir both live in the view's state folder (`RepoConfig.state_dir(view)`):
the lock is a file held with `flock` (the kernel releases it when the holder dies), so
two jobs never materialize one view at once. On object storage the lock is a lease in
the shared Redis (`skewless.materialization.lease`), since servers sharing the data dir
share no kernel. The watermark is the end of the view's last contiguous materialized
range, `materialization/<view>/watermark.json` in the data dir, replaced atomically
(written only by the holder of the view's lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import IO

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError
from skewless.core.names import storage_name
from skewless.materialization.lease import LeaseSet
from skewless.offline.offline_store import history_files

__all__ = ["ViewLocks", "advance_watermark", "has_stored_values", "read_watermark"]


class ViewLocks:
    """Exclusive per-view job locks, released on `release` or process death.

    `flock` files in a local data dir; leases in the shared Redis when the data dir is
    on object storage.
    """

    def __init__(self, config: RepoConfig, views: Sequence[str]) -> None:
        """Acquires every view's lock without waiting, in name order.

        Raises:
            FailedPreconditionError: Another job holds a view's lock (the message names it).

        """
        self.views = tuple(sorted(set(views)))
        self._handles: list[IO[str]] = []
        self._leases: LeaseSet | None = None
        if not config.storage.is_local:
            self._leases = LeaseSet(config, self.views)
            return
        try:
            for view in self.views:
                folder = config.state_dir(view)
                folder.mkdir(parents=True, exist_ok=True)
                handle = (folder / "job.lock").open("a+")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    raise FailedPreconditionError(
                        f"a materialization job for feature view {view!r} is already running; "
                        "wait for it to finish (list jobs to see it)",
                        reason="MATERIALIZATION_RUNNING",
                        metadata={"feature_view": view},
                    ) from None
                self._handles.append(handle)
        except BaseException:
            self.release()
            raise

    def check(self, view: str) -> None:
        """Raises unless this job still holds the view's lock (a lease can expire).

        Raises:
            FailedPreconditionError: `MATERIALIZATION_LEASE_LOST`.

        """
        if self._leases is not None:
            self._leases.check(view)

    def release(self) -> None:
        """Releases every lock held."""
        if self._leases is not None:
            self._leases.release()
        for handle in self._handles:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._handles.clear()

    def __enter__(self) -> ViewLocks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _watermark_key(view: str) -> str:
    return f"materialization/{view}/watermark.json"


def read_watermark(config: RepoConfig, view: str) -> datetime | None:
    """Returns the end of the view's last contiguous materialized range, if any."""
    data = config.storage.read_bytes(_watermark_key(view))
    if data is None:
        return None
    return datetime.fromisoformat(json.loads(data)["watermark"])


def _write_watermark(config: RepoConfig, view: str, value: datetime) -> None:
    payload = json.dumps({"watermark": value.isoformat()}).encode()
    config.storage.write_bytes(_watermark_key(view), payload)


def advance_watermark(config: RepoConfig, view: str, start: datetime, end: datetime) -> None:
    """Moves the watermark to `end` unless that would skip a gap or move it back."""
    watermark = read_watermark(config, view)
    if watermark is None or start <= watermark < end:
        _write_watermark(config, view, end)


def has_stored_values(config: RepoConfig, view: str, generation: int) -> bool:
    """Whether a view holds values under a generation: a watermark or offline history.

    This is what `skewless plan` and `apply` ask before calling a change breaking. Rows
    pushed to a view kept online only (`offline: false`) leave neither, so they are not
    seen; a type or key change starts a new generation for them all the same.
    """
    name = storage_name(view, generation)
    return read_watermark(config, name) is not None or bool(history_files(config, name))
