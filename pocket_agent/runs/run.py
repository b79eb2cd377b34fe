"""A run as the executor sees it: its id, what it is waiting for, and the inputs it may
send (the machine itself is :mod:`.machine`)."""

from __future__ import annotations

from typing import Any

from .machine import RunInputs, RunMachine
from .outcome import StopReason
from .prompts import Decision, Prompt
from .runcore import RunCore


class Run:
    """A run as the executor sees it: its id, its stop reason, and the inputs it may send."""

    def __init__(self, core: RunCore) -> None:
        self.core = core
        self.machine: RunInputs = RunMachine(core)

    @property
    def run_id(self) -> str:
        return self.core.run_id

    @property
    def stop_reason(self) -> StopReason | None:
        return self.core.stop.reason if self.core.stop else None

    @property
    def finished(self) -> bool:
        return self.core.finished

    def start(self) -> None:
        self.machine.start()

    def stop(self, reason: StopReason) -> None:
        self.machine.stop(reason)

    def kill_now(self) -> None:
        self.machine.kill_now()

    @property
    def pending_permissions(self) -> tuple[dict[str, Any], ...]:
        """The open prompts' ``permission_request`` messages, oldest first."""
        return self.core.prompts.records()

    def prompt(self, permission_id: str) -> Prompt | None:
        return self.core.prompts.get(permission_id)

    def answer(self, permission_id: str, decision: Decision) -> None:
        self.machine.permission_answered(permission_id, decision)

    def interrupt(self) -> bool:
        """Stop the turn, keep the session: False when the turn is already over (or being
        stopped). Without the stdio control channel, an interrupt is the SIGINT of the
        escalation."""
        core = self.core
        if core.result_line is not None or core.stop is not None or core.interrupted:
            return False
        if core.approvals:
            self.machine.interrupt()
        else:
            self.machine.stop(StopReason.INTERRUPT)
        return core.interrupted

    def force_finish(self) -> None:
        self.machine.force_finish()
