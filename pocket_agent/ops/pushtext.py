"""What a notification says (SPEC §12): the project's name and the tool or the outcome,
nothing else (never prompt text, code, file contents or a credential), made safe for
ntfy's headers. Pure; :mod:`.push` delivers it."""

from __future__ import annotations

import base64
import re

import attrs

from pocket_agent.core.events import Event
from pocket_agent.runs.events import PermissionRequested, RunFinished
from pocket_agent.runs.outcome import Outcome, StopReason

APPROVAL_NEEDED = "approval_needed"
RUN_FINISHED = "run_finished"
RUN_FAILED = "run_failed"
_FAILED = (Outcome.FAILED, Outcome.TIMEOUT)
_TAGS = {
    Outcome.SUCCESS: "white_check_mark",
    Outcome.INTERRUPTED: "pause_button",
    Outcome.KILLED: "stop_sign",
    Outcome.FAILED: "x",
    Outcome.TIMEOUT: "hourglass",
}
_REASONS = {str(reason) for reason in StopReason}
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@attrs.frozen
class Notification:
    """One message for ntfy, already reduced to what may leave the machine."""

    event: str  # approval_needed | run_finished | run_failed
    project_id: str
    title: str
    message: str
    priority: str  # ntfy's: min, low, default, high, urgent
    tags: str  # ntfy tags (shown as emoji), comma-separated


def shown_name(text: str, limit: int = 80) -> str:
    """A name as it may appear in a notification: one line, printable, not too long."""
    line = _UNPRINTABLE.sub("?", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def notification_for(event: Event, project_name: str) -> Notification | None:
    """The notification an event makes, or None; ``project_name`` names its project."""
    name = shown_name(project_name)
    match event:
        case PermissionRequested(project_id=project_id, tool_name=tool):
            return Notification(
                APPROVAL_NEEDED,
                project_id,
                f"Approval needed: {name}",
                f"Claude asks to use {shown_name(tool, 64)} in {name}.",
                "high",
                "question",
            )
        case RunFinished(project_id=project_id, result=result):
            outcome = result.outcome
            word = str(outcome)
            if result.reason in _REASONS and outcome is not Outcome.SUCCESS:
                word += f" ({result.reason})"
            failed = outcome in _FAILED
            return Notification(
                RUN_FAILED if failed else RUN_FINISHED,
                project_id,
                f"Run {'failed' if failed else 'finished'}: {name}",
                f"{name}: {word}",
                "high" if failed else "default",
                _TAGS.get(outcome, "information_source"),
            )
    return None


def header_text(text: str) -> bytes:
    """A header value ntfy reads back as it was: ASCII as is, else an RFC 2047 word."""
    if text.isascii():
        return text.encode("ascii")
    return b"=?UTF-8?B?" + base64.b64encode(text.encode()) + b"?="
