"""A deadline on the injected clock that can be paused and resumed.

Runs use it for ``timeouts.execution`` and ``timeouts.no_output``: while a human is
deciding (a pending approval), the agent's time does not run.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Deadline:
    """Calls ``expired`` once ``limit`` seconds of unpaused time have passed; 0 = never."""

    def __init__(self, clock: IReactorTime, limit: float, expired: Callable[[], None]) -> None:
        self.clock = clock
        self.limit = limit
        self._expired = expired
        self._left = limit
        self._timer: IDelayedCall | None = None
        self._started_at = 0.0
        self._paused = True  # until started
        self._over = limit <= 0

    @property
    def running(self) -> bool:
        return self._timer is not None

    @property
    def remaining(self) -> float:
        if self._timer is not None:
            return max(0.0, self._left - (self.clock.seconds() - self._started_at))
        return self._left

    def start(self) -> None:
        """Start, or resume after :meth:`pause`."""
        self._paused = False
        self._schedule()

    resume = start

    def pause(self) -> None:
        self._paused = True
        self._unschedule()

    def restart(self) -> None:
        """The full limit again from now (activity resets a watchdog); stays paused if paused."""
        if self._over:
            return
        self._unschedule()
        self._left = self.limit
        if not self._paused:
            self._schedule()

    def cancel(self) -> None:
        """For good: a cancelled deadline never fires and never starts again."""
        self._unschedule()
        self._over = True

    def _schedule(self) -> None:
        if self._over or self._timer is not None:
            return
        self._started_at = self.clock.seconds()
        self._timer = self.clock.callLater(self._left, self._fire)

    def _unschedule(self) -> None:
        if self._timer is None:
            return
        self._left = self.remaining
        if self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._left = 0.0
        self._over = True
        self._expired()
