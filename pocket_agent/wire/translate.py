"""What each domain event looks like on the wire: the frames one connection sends.

A pure function of the event (the hub has already chosen who hears it), looked up by
the event's type: this runs once per Record per follower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocket_agent.core import events as ev
from pocket_agent.core import storagewatch as sw
from pocket_agent.runs import events as rev
from pocket_agent.runs.outcome import Outcome, RunResult

from . import messages as m
from .errors import ErrorCode, ProtocolError

_FAILURE_CODES = {
    Outcome.FAILED: ErrorCode.EXECUTION_FAILED,
    Outcome.TIMEOUT: ErrorCode.EXECUTION_TIMEOUT,
}


def frames_for(event: ev.Event) -> list[m.Outbound]:
    """The frames for ``event``. The hub hands one event to every follower in a row, so
    the last translation is kept: one per event, not one per follower (frames are
    immutable, so they can be shared)."""
    global _last
    if _last[0] is event:
        return _last[1]
    build = _FRAMES.get(type(event))
    frames = build(event) if build is not None else []
    _last = (event, frames)
    return frames


def answer_frame(answer: ev.Answer, request_id: str | None = None) -> m.Outbound:
    """The reply to the request that ``answer`` answers, echoing its ``request_id``."""
    build = _ANSWERS.get(type(answer))
    if build is None:
        raise TypeError(f"no frame for {answer!r}")
    return build(answer, request_id)


def run_finished_frames(project_id: str, result: RunResult) -> list[m.Outbound]:
    """``execution_finished``, then an ``error`` when the run did not succeed (a kill the
    user asked for is not an error)."""
    frames: list[m.Outbound] = [m.ExecutionFinished(result, project_id=project_id)]
    code = _FAILURE_CODES.get(result.outcome)
    if result.spawn_failed:
        code = ErrorCode.CLAUDE_NOT_FOUND
    if code is not None:
        error = ProtocolError(code, result.error or str(result.outcome), {"run_id": result.run_id})
        frames.append(m.ErrorMessage.of(error, project_id=project_id))
    return frames


def storage_failed_frame(event: sw.StorageFailed) -> m.Outbound:
    error = ProtocolError(
        ErrorCode.STORAGE_ERROR,
        f"the server cannot write this project's history: {event.reason}",
        {"reason": event.reason},
    )
    return m.ErrorMessage.of(error, project_id=event.project_id)


_last: tuple[object, list[m.Outbound]] = (None, [])

_FRAMES: dict[type[Any], Callable[[Any], list[m.Outbound]]] = {
    ev.RecordAppended: lambda e: [m.AgentMessage(e.project_id, e.record.line)],
    ev.Answered: lambda e: [answer_frame(e.answer, e.cause.request_id)],
    ev.ProjectCreated: lambda e: [m.ProjectCreated(e.project, project_id=e.project.id)],
    ev.ProjectDeleted: lambda e: [m.ProjectDeleted(project_id=e.project_id)],
    ev.ProjectChanged: lambda e: [m.ProjectStateMessage.of(e.project)],
    rev.SessionChanged: lambda e: [m.ProjectUpdate(e.session_id, project_id=e.project_id)],
    rev.SessionReset: lambda e: [m.SessionReset(e.old_session_id, project_id=e.project_id)],
    rev.RunKilled: lambda e: [m.ProcessKilled(e.run_id, project_id=e.project_id)],
    rev.RunFinished: lambda e: run_finished_frames(e.project_id, e.result),
    sw.StorageFailed: lambda e: [storage_failed_frame(e)],
}

_ANSWERS: dict[type[Any], Callable[[Any, str | None], m.Outbound]] = {
    ev.ProjectAnswer: lambda a, rid: m.ProjectStateMessage.of(a.project, rid),
    ev.DeleteAnswer: lambda a, rid: m.ProjectDeleteReply(project_id=a.project_id, request_id=rid),
    rev.RunAccepted: lambda a, rid: m.ExecuteReply(
        a.run_id, project_id=a.project_id, request_id=rid
    ),
    rev.KillAnswer: lambda a, rid: m.AgentKillReply(
        a.status, project_id=a.project_id, request_id=rid
    ),
    rev.InterruptAnswer: lambda a, rid: m.AgentInterruptReply(
        a.status, project_id=a.project_id, request_id=rid
    ),
    rev.PermissionAnswered: lambda a, rid: m.PermissionResponseReply(
        a.permission_id, a.status, project_id=a.project_id, request_id=rid
    ),
    rev.SettingsAnswer: lambda a, rid: m.ProjectStateMessage.of(a.project, rid),
    rev.SessionResetAnswer: lambda a, rid: m.AgentNewSessionReply(
        a.old_session_id, project_id=a.project_id, request_id=rid
    ),
}
