"""How a run ended: the values a finished run reports, exactly once."""

from __future__ import annotations

import enum
from typing import Any

import attrs


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    KILLED = "killed"
    INTERRUPTED = "interrupted"  # agent_interrupt: the turn stopped, the session goes on


class StopReason(enum.StrEnum):
    USER = "user"  # agent_kill
    INTERRUPT = "interrupt"  # agent_interrupt that had to fall back to SIGINT
    TIMEOUT = "timeout"  # timeouts.execution
    NO_OUTPUT = "no_output"  # timeouts.no_output
    SHUTDOWN = "shutdown"
    LINGERING = "lingering"  # printed its result but did not exit
    STORAGE = "storage"  # its Records could not be written (a full disk)


@attrs.frozen
class RunResult:
    run_id: str
    outcome: Outcome
    exit_code: int | None
    signal: str | None
    duration_ms: int
    cost_usd: float | None
    session_id: str | None
    error: str | None = None
    reason: str | None = None
    spawn_failed: bool = False

    def as_record(self) -> dict[str, Any]:
        """The ``execution_finished`` Record's fields (the wire frame shows the same)."""
        shown: dict[str, Any] = {
            "run_id": self.run_id,
            "outcome": str(self.outcome),
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration_ms": self.duration_ms,
            "cost_usd": self.cost_usd,
            "session_id": self.session_id,
        }
        if self.error is not None:
            shown["error"] = self.error
        if self.reason is not None:
            shown["reason"] = self.reason
        return shown


@attrs.frozen
class Exit:
    """What the operating system said when claude went away."""

    code: int | None
    signal: str | None


def result_error(result: dict[str, Any]) -> str:
    """The message a failed ``result`` line gives, for people."""
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    text = result.get("result")
    if isinstance(text, str) and text:
        return text
    return f"claude reported an error ({result.get('subtype', 'unknown')})"


def result_cost(result: dict[str, Any] | None) -> float | None:
    cost = (result or {}).get("total_cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        return float(cost)
    return None
