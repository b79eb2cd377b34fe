"""The events of runs and Claude sessions (the bus and the base classes are
:mod:`pocket_agent.core.events`)."""

from __future__ import annotations

import attrs

from pocket_agent.core.events import Answer, ProjectEvent
from pocket_agent.core.projects import ProjectSnapshot

from .outcome import RunResult


@attrs.frozen
class RunAccepted(Answer):
    """``execute``: the run is on (after ``EXECUTING``, before its first Record)."""

    project_id: str
    run_id: str


@attrs.frozen
class KillAnswer(Answer):
    project_id: str
    status: str  # "killed" (a run is stopping) | "idle" (there was none)


@attrs.frozen
class InterruptAnswer(Answer):
    project_id: str
    status: str  # "interrupting" (a run is active) | "idle" (there was none)


@attrs.frozen
class PermissionAnswered(Answer):
    project_id: str
    permission_id: str
    status: str  # "applied" (this answer decided) | "already_resolved"


@attrs.frozen
class SettingsAnswer(Answer):
    project: ProjectSnapshot


@attrs.frozen
class SessionResetAnswer(Answer):
    project_id: str
    old_session_id: str | None


@attrs.frozen
class SessionChanged(ProjectEvent):
    """Claude reported a (new) session id for the project."""

    project_id: str
    session_id: str


@attrs.frozen
class SessionReset(ProjectEvent):
    project_id: str
    old_session_id: str | None


@attrs.frozen
class RunStarted(ProjectEvent):
    project_id: str
    run_id: str
    resume: str | None


@attrs.frozen
class RunKilled(ProjectEvent):
    """A user's kill was accepted and the escalation began."""

    project_id: str
    run_id: str


@attrs.frozen
class RunInterrupted(ProjectEvent):
    """An interrupt was accepted: the turn stops, the session stays."""

    project_id: str
    run_id: str


@attrs.frozen
class PermissionRequested(ProjectEvent):
    """A run asks a human (the Record is published separately, like every Record)."""

    project_id: str
    run_id: str
    permission_id: str
    tool_name: str


@attrs.frozen
class PermissionResolved(ProjectEvent):
    project_id: str
    run_id: str
    permission_id: str
    behavior: str
    reason: str
    waited_s: float


@attrs.frozen
class RunFinished(ProjectEvent):
    project_id: str
    result: RunResult
