"""One timer for the deadlines of every online read in flight.

What `asyncio.timeout` does per read, without a timer per read: under load every new
read's deadline is later than the armed one, so arming costs a dict insert. When the
timer fires it cancels every read that is due and re-arms for the next.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """Cancels tasks that outlive their budget, with one timer for all of them."""

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, task: asyncio.Task[Any], budget: float) -> None:
        """Cancels `task` once `budget` seconds have passed, unless disarmed first."""
        loop = task.get_loop()
        when = loop.time() + budget
        self._due[task] = when
        if when < self._timer_at or loop is not self._loop:
            self._schedule(loop, when)

    def disarm(self, task: asyncio.Task[Any]) -> bool:
        """Forgets `task`; returns whether its deadline passed (and it was cancelled)."""
        self._due.pop(task, None)
        if self._expired and task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_at, self._loop = when, loop

    def _fire(self) -> None:
        loop, self._timer, self._timer_at = self._loop, None, float("inf")
        if loop is None:
            return
        now, following = loop.time(), float("inf")
        for task, when in list(self._due.items()):
            if task.get_loop() is not loop:
                continue
            if when <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
            elif when < following:
                following = when
        if following != float("inf"):
            self._schedule(loop, following)
