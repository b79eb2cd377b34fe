"""What belongs to one state of the run machine (:mod:`.machine`): the timers it arms,
which leaving the state cancels."""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IDelayedCall

from .outcome import StopReason
from .runcore import Clocks


class Timers:
    """State data that owns timers: leaving the state cancels them."""

    def cancel(self) -> None:
        raise NotImplementedError


@attrs.define
class Running(Timers):
    clocks: Clocks

    def cancel(self) -> None:
        self.clocks.cancel()


@attrs.define
class AwaitingApproval(Timers):
    """The prompts are the core's (``RunCore.prompts``); the clocks are paused here."""

    clocks: Clocks

    def cancel(self) -> None:
        self.clocks.cancel()


@attrs.define
class Interrupting(Timers):
    fallback: IDelayedCall | None = None

    def cancel(self) -> None:
        cancel_timer(self.fallback)


@attrs.define
class WindingDown(Timers):
    linger: IDelayedCall | None = None

    def cancel(self) -> None:
        cancel_timer(self.linger)


@attrs.define
class Stopping(Timers):
    reason: StopReason
    step: int = 0  # 0: SIGINT sent, 1: SIGTERM sent, 2: SIGKILL sent
    timer: IDelayedCall | None = None

    def cancel(self) -> None:
        cancel_timer(self.timer)


@attrs.define
class Reaping(Timers):
    deadline: float
    term_sent: bool = False
    kill_sent: bool = False
    swept: bool = False
    timer: IDelayedCall | None = None
    abandon: IDelayedCall | None = None

    def cancel(self) -> None:
        cancel_timer(self.timer)
        cancel_timer(self.abandon)


def cancel_timer(timer: IDelayedCall | None) -> None:
    if timer is not None and timer.active():
        timer.cancel()
