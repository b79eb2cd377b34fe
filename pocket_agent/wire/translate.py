"""What each domain event looks like on the wire: the frames one connection sends.

A pure function of the event: the hub has already chosen who hears it.
"""

from __future__ import annotations

from pocket_agent.core import events as ev
from pocket_agent.runs import events as rev
from pocket_agent.runs.outcome import Outcome, RunResult

from . import messages as m
from .errors import ErrorCode, ProtocolError

_FAILURE_CODES = {
    Outcome.FAILED: ErrorCode.EXECUTION_FAILED,
    Outcome.TIMEOUT: ErrorCode.EXECUTION_TIMEOUT,
}


def frames_for(event: ev.Event) -> list[m.Outbound]:
    match event:
        case ev.Answered(cause, answer):
            return [answer_frame(answer).replying_to(cause.request_id)]
        case ev.ProjectCreated(project):
            return [m.ProjectCreated(project, project_id=project.id)]
        case ev.ProjectDeleted(project_id):
            return [m.ProjectDeleted(project_id=project_id)]
        case ev.ProjectChanged(project):
            return [m.ProjectStateMessage.of(project)]
        case ev.RecordAppended(project_id, record):
            return [m.AgentMessage(project_id, record.line)]
        case rev.SessionChanged(project_id, session_id):
            return [m.ProjectUpdate(session_id, project_id=project_id)]
        case rev.SessionReset(project_id, old_session_id):
            return [m.SessionReset(old_session_id, project_id=project_id)]
        case rev.RunKilled(project_id, run_id):
            return [m.ProcessKilled(run_id, project_id=project_id)]
        case rev.RunFinished(project_id, result):
            return run_finished_frames(project_id, result)
    return []


def answer_frame(answer: ev.Answer) -> m.Outbound:
    match answer:
        case ev.ProjectAnswer(project):
            return m.ProjectStateMessage.of(project)
        case ev.DeleteAnswer(project_id):
            return m.ProjectDeleteReply(project_id=project_id)
        case rev.RunAccepted(project_id, run_id):
            return m.ExecuteReply(run_id, project_id=project_id)
        case rev.KillAnswer(project_id, status):
            return m.AgentKillReply(status, project_id=project_id)
        case rev.SessionResetAnswer(project_id, old_session_id):
            return m.AgentNewSessionReply(old_session_id, project_id=project_id)
    raise TypeError(f"no frame for {answer!r}")


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
