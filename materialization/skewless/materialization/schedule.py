"""Scheduled materialization: the server runs views that have a `schedule`.

A view with schedule P is due when its watermark is behind the latest multiple of P
(counted from the Unix epoch) that has passed. A due view is materialized
incrementally from its watermark to that boundary, so one run covers every period
missed while the server was down (catch-up). A failed run is retried after a backoff
that doubles from `base_backoff` up to `max_backoff`; its error is in the job record
(trigger `schedule`). A view whose lock is held (a CLI or API job is running, or another
server sharing an object-store data dir runs it) is tried again at the next tick; the
watermark is read again once the lock is held, so a period another server already ran is
not run twice. Views run one at a time, in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError
from skewless.core.names import storage_name
from skewless.materialization.jobs import JobRecord, JobState, JobStore, Trigger, run_job, start_job
from skewless.materialization.pipeline import EPOCH, materializable_views
from skewless.materialization.view_state import ViewLocks, read_watermark
from skewless.v1 import registry_pb2

__all__ = ["RegistrySource", "Scheduler", "due_boundary", "run_scheduler"]

_log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class RegistrySource(Protocol):
    """Anything with a `current` registry, such as the server's `RegistryHolder`."""

    @property
    def current(self) -> registry_pb2.Registry:
        """The registry in force (raises FailedPreconditionError if none)."""
        ...


def _watermark(config: RepoConfig, registry: registry_pb2.Registry, view: str) -> datetime | None:
    """The watermark of the view's current generation."""
    generation = next((v.generation for v in registry.feature_views if v.name == view), 0)
    return read_watermark(config, storage_name(view, generation))


def due_boundary(now: datetime, period: timedelta) -> datetime:
    """Returns the latest multiple of `period` since the epoch that is <= `now`."""
    elapsed = now - EPOCH
    return EPOCH + period * (elapsed // period)


@dataclass
class _ViewState:
    failures: int = 0
    retry_at: datetime | None = None


@dataclass
class Scheduler:
    """Decides which scheduled views are due and runs them.

    Attributes:
        config: The repository.
        base_backoff: Delay before the first retry of a failed run.
        max_backoff: Longest delay between retries.

    """

    config: RepoConfig
    base_backoff: timedelta = timedelta(seconds=10)
    max_backoff: timedelta = timedelta(minutes=10)
    _states: dict[str, _ViewState] = field(default_factory=dict)

    def due(self, registry: registry_pb2.Registry, now: datetime) -> list[tuple[str, datetime]]:
        """Returns (view, window end) of every scheduled view that should run now."""
        batch = set(materializable_views(registry))
        out = []
        for view in registry.feature_views:
            period = view.schedule.ToTimedelta()
            if view.name not in batch or period <= timedelta(0):
                continue
            boundary = due_boundary(now, period)
            watermark = read_watermark(self.config, storage_name(view.name, view.generation))
            if watermark is not None and watermark >= boundary:
                continue
            state = self._states.get(view.name)
            if state is not None and state.retry_at is not None and now < state.retry_at:
                continue
            out.append((view.name, boundary))
        return out

    def run_view(
        self, registry: registry_pb2.Registry, view: str, end: datetime, now: datetime
    ) -> JobRecord | None:
        """Runs one view's incremental materialization to `end` (blocking).

        Returns:
            The finished job, or None when another job holds the view's lock, or ran
            this period already (another server sharing the data dir).

        """
        try:
            locks = ViewLocks(self.config, [view])
        except FailedPreconditionError:  # a CLI, API or other server's job holds the view
            return None
        try:
            # Read again under the lock: another server may have run this period while
            # this one read the watermark (the lock makes the check and the run one step).
            watermark = _watermark(self.config, registry, view)
        except BaseException:
            locks.release()
            raise
        if watermark is not None and watermark >= end:
            locks.release()
            return None
        started = start_job(
            self.config,
            registry,
            [view],
            window_start=watermark or EPOCH,
            window_end=end,
            incremental=True,
            trigger=Trigger.SCHEDULE,
            locks=locks,
        )
        result = run_job(
            self.config, registry, JobStore(self.config), started.record, locks=started.locks
        )
        state = self._states.setdefault(view, _ViewState())
        if result.state == JobState.SUCCEEDED:
            state.failures, state.retry_at = 0, None
        else:
            state.failures += 1
            delay = min(self.max_backoff, self.base_backoff * 2 ** (state.failures - 1))
            state.retry_at = now + delay
            _log.warning(
                "scheduled materialization of %s failed (%d in a row); retrying in %s: %s",
                view,
                state.failures,
                delay,
                result.error.message if result.error else "",
            )
        return result

    async def tick(self, registry: registry_pb2.Registry, now: datetime) -> list[JobRecord]:
        """Runs every due view once, one after another; returns the finished jobs."""
        finished = []
        for view, end in await asyncio.to_thread(self.due, registry, now):
            record = await asyncio.to_thread(self.run_view, registry, view, end, now)
            if record is not None:
                finished.append(record)
        return finished


async def run_scheduler(
    config: RepoConfig,
    registry_holder: RegistrySource,
    *,
    tick_seconds: float = 5.0,
    clock: Clock | None = None,
    scheduler: Scheduler | None = None,
) -> None:
    """Runs scheduled views forever (cancel the task to stop).

    Args:
        config: The repository.
        registry_holder: The server's `RegistryHolder` (its `current` registry is used
            at every tick, so newly applied schedules are picked up).
        tick_seconds: How often due views are looked for.
        clock: Returns the current time (tests pass a fake one).
        scheduler: The scheduler to use (for its backoff settings).

    """
    now_fn = clock or (lambda: datetime.now(UTC))
    sched = scheduler or Scheduler(config)
    while True:
        try:
            registry: registry_pb2.Registry | None = registry_holder.current
        except FailedPreconditionError:
            registry = None
        if registry is not None:
            try:
                await sched.tick(registry, now_fn())
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad tick must not stop the scheduler
                _log.exception("scheduler tick failed")
        await asyncio.sleep(tick_seconds)
