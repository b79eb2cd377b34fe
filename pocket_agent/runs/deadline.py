"""A deadline on the injected clock that can be paused, resumed and pushed back.

Runs use it for ``timeouts.execution`` and the ``timeouts.no_output`` watchdog: while a
human is deciding (a pending approval), the agent's time does not run. Pushing it back
(:meth:`Deadline.touch`, on every chunk of output) costs a clock reading and no timer
work: the timer only checks, when it fires, whether the deadline moved meanwhile.
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
        self._left = limit  # seconds left, counted from _anchor while running
        self._anchor = 0.0
        self._timer: IDelayedCall | None = None
        self._paused = True  # until started
        self._over = limit <= 0

    @property
    def running(self) -> bool:
        return self._timer is not None

    @property
    def remaining(self) -> float:
        if self._timer is not None:
            return max(0.0, self._left - (self.clock.seconds() - self._anchor))
        return self._left

    def start(self) -> None:
        """Start, or resume after :meth:`pause`."""
        self._paused = False
        self._schedule()

    resume = start

    def pause(self) -> None:
        self._paused = True
        self._unschedule()

    def touch(self) -> None:
        """The full limit again from now (activity resets a watchdog); a paused deadline
        stays paused, with the full limit left."""
        if self._over:
            return
        self._left = self.limit
        if self._timer is not None:
            self._anchor = self.clock.seconds()

    restart = touch

    def cancel(self) -> None:
        """For good: a cancelled deadline never fires and never starts again."""
        self._unschedule()
        self._over = True

    def _schedule(self) -> None:
        if self._over or self._timer is not None:
            return
        self._anchor = self.clock.seconds()
        self._timer = self.clock.callLater(self._left, self._fire)

    def _unschedule(self) -> None:
        if self._timer is None:
            return
        self._left = self.remaining
        if self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        left = self.remaining
        if left > 0:  # touched since the timer was set: check again when it is due
            self._timer = self.clock.callLater(left, self._fire)
            return
        self._timer = None
        self._left = 0.0
        self._over = True
        self._expired()
