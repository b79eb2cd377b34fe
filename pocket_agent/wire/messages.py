"""Typed outbound frames, each built from domain values, each one ``encode()`` away
from the bytes of one WebSocket text frame.

Records travel as the bytes they were stored as (:class:`AgentMessage`,
:class:`HistoryMessage`): a multi-megabyte Claude line is never parsed or
serialised again on its way out. A frame is encoded and framed once
(``frame``), however many followers it goes to; a project's ``ProjectState`` is
encoded once per snapshot (:func:`project_state_bytes`), so ``project_list`` is a join.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from pocket_agent.core.projects import ProjectSnapshot
from pocket_agent.history import Page
from pocket_agent.runs.outcome import RunResult
from pocket_agent.times import rfc3339

from .envelope import encode_envelope, envelope_head
from .errors import ProtocolError
from .framing import text_frame


def project_state_data(state: ProjectSnapshot) -> dict[str, Any]:
    """A ``ProjectState`` object as the protocol shows it."""
    wire: dict[str, Any] = {
        "id": state.id,
        "path": state.path,
        "state": str(state.state),
        "session_id": state.session_id,
        "created_at": rfc3339(state.created_at),
        "last_active": rfc3339(state.last_active),
        "last_seq": state.last_seq,
        "subscriber_count": state.subscriber_count,
    }
    if state.error_details is not None:
        wire["error_details"] = state.error_details
    # SPEC §10: a phone that joins learns of every open prompt from the state alone.
    wire["awaiting_approval"] = state.awaiting_approval
    wire["pending_permissions"] = list(state.pending_permissions)
    wire["settings"] = {
        "allowed_tools": list(state.settings.allowed_tools),
        "approvals": state.approvals,
    }
    return wire


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# project id -> (the snapshot, its encoded ProjectState). The hub hands out the same
# snapshot object until the project changes, so the test is identity: an *equal*
# snapshot is not enough (1 == 1.0 == True in a tool's input, not in JSON). The entry
# encoded longest ago goes first once there are _STATES_KEPT (deleted projects' ones).
_STATES: dict[str, tuple[ProjectSnapshot, bytes]] = {}
_STATES_KEPT = 10_000


def project_state_bytes(state: ProjectSnapshot) -> bytes:
    """The ``ProjectState`` object of ``state`` as JSON, encoded once per snapshot."""
    cached = _STATES.get(state.id)
    if cached is not None and cached[0] is state:
        return cached[1]
    encoded = _dumps(project_state_data(state))
    _STATES.pop(state.id, None)
    if len(_STATES) >= _STATES_KEPT:
        del _STATES[next(iter(_STATES))]
    _STATES[state.id] = (state, encoded)  # the newest encoded last
    return encoded


@attrs.frozen
class Outbound:
    """One frame to a client: a ``TYPE``, a ``data`` object, and the envelope ids."""

    TYPE: ClassVar[str]
    project_id: str | None = attrs.field(default=None, kw_only=True)
    request_id: str | None = attrs.field(default=None, kw_only=True)

    @property
    def type(self) -> str:
        return self.TYPE

    def data(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def to_wire(self) -> dict[str, Any]:
        return json.loads(self.encode())  # type: ignore[no-any-return]

    def encode(self) -> bytes:
        return encode_envelope(self.TYPE, self.data(), self.project_id, self.request_id)

    @functools.cached_property
    def frame(self) -> bytes:
        """The WebSocket frame around :meth:`encode`, built once for every follower.
        Only the frame is kept: a multi-megabyte line is held once more, not twice."""
        return text_frame(self.encode())


@attrs.frozen
class ServerHello(Outbound):
    TYPE = "server_hello"
    server_version: str
    protocol_version: int
    connection_id: str
    authenticated_as: str
    limits: Mapping[str, int]

    def data(self) -> Mapping[str, Any]:
        return {
            "server_version": self.server_version,
            "protocol_version": self.protocol_version,
            "connection_id": self.connection_id,
            "authenticated_as": self.authenticated_as,
            "limits": dict(self.limits),
        }


@attrs.frozen
class HealthStatus(Outbound):
    TYPE = "health_status"
    report: Mapping[str, Any]

    def data(self) -> Mapping[str, Any]:
        return self.report


@attrs.frozen
class ProjectListResponse(Outbound):
    TYPE = "project_list_response"
    projects: Sequence[ProjectSnapshot]

    def data(self) -> Mapping[str, Any]:
        states = [project_state_data(s) for s in self.projects]
        return {"projects": states, "total": len(states)}

    def encode(self) -> bytes:
        states = b",".join([project_state_bytes(s) for s in self.projects])
        head = envelope_head(self.TYPE, self.project_id, self.request_id)
        return b'%s{"projects":[%s],"total":%d}}' % (head, states, len(self.projects))


@attrs.frozen
class ProjectStateMessage(Outbound):
    TYPE = "project_state"
    state: ProjectSnapshot

    @classmethod
    def of(cls, state: ProjectSnapshot, request_id: str | None = None) -> ProjectStateMessage:
        return cls(state, project_id=state.id, request_id=request_id)

    def data(self) -> Mapping[str, Any]:
        return project_state_data(self.state)

    def encode(self) -> bytes:
        head = envelope_head(self.TYPE, self.project_id, self.request_id)
        return head + project_state_bytes(self.state) + b"}"


@attrs.frozen
class ProjectCreated(ProjectStateMessage):
    TYPE = "project_created"


@attrs.frozen
class ProjectDeleted(Outbound):
    TYPE = "project_deleted"

    def data(self) -> Mapping[str, Any]:
        return {"project_id": self.project_id}


@attrs.frozen
class ProjectDeleteReply(Outbound):
    TYPE = "project_delete"

    def data(self) -> Mapping[str, Any]:
        return {"project_id": self.project_id, "status": "deleted"}


@attrs.frozen
class ProjectJoinReply(Outbound):
    TYPE = "project_join"
    state: ProjectSnapshot

    def data(self) -> Mapping[str, Any]:
        return {
            "project_id": self.state.id,
            "state": str(self.state.state),
            "session_id": self.state.session_id,
            "last_seq": self.state.last_seq,
        }


@attrs.frozen
class ProjectLeaveReply(Outbound):
    TYPE = "project_leave"

    def data(self) -> Mapping[str, Any]:
        return {"project_id": self.project_id, "status": "left"}


@attrs.frozen
class ExecuteReply(Outbound):
    TYPE = "execute"
    run_id: str

    def data(self) -> Mapping[str, Any]:
        return {"run_id": self.run_id, "status": "started"}


@attrs.frozen
class AgentKillReply(Outbound):
    TYPE = "agent_kill"
    status: str  # killed | idle

    def data(self) -> Mapping[str, Any]:
        return {"status": self.status}


@attrs.frozen
class AgentInterruptReply(Outbound):
    TYPE = "agent_interrupt"
    status: str  # interrupting | idle

    def data(self) -> Mapping[str, Any]:
        return {"status": self.status}


@attrs.frozen
class PermissionResponseReply(Outbound):
    TYPE = "permission_response"
    permission_id: str
    status: str  # applied | already_resolved

    def data(self) -> Mapping[str, Any]:
        return {"permission_id": self.permission_id, "status": self.status}


@attrs.frozen
class AgentNewSessionReply(Outbound):
    TYPE = "agent_new_session"
    old_session_id: str | None

    def data(self) -> Mapping[str, Any]:
        return {"old_session_id": self.old_session_id, "status": "reset"}


@attrs.frozen
class ProjectUpdate(Outbound):
    TYPE = "project_update"
    session_id: str

    def data(self) -> Mapping[str, Any]:
        return {"session_id": self.session_id}


@attrs.frozen
class ProcessKilled(Outbound):
    TYPE = "process_killed"
    run_id: str

    def data(self) -> Mapping[str, Any]:
        return {"type": self.TYPE, "run_id": self.run_id}


@attrs.frozen
class SessionReset(Outbound):
    TYPE = "session_reset"
    old_session_id: str | None

    def data(self) -> Mapping[str, Any]:
        return {"type": self.TYPE, "old_session_id": self.old_session_id}


@attrs.frozen
class ExecutionFinished(Outbound):
    TYPE = "execution_finished"
    result: RunResult

    def data(self) -> Mapping[str, Any]:
        return self.result.as_record()


@attrs.frozen
class ErrorMessage(Outbound):
    TYPE = "error"
    code: str
    message: str
    details: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls, error: ProtocolError, request_id: str | None = None, project_id: str | None = None
    ) -> ErrorMessage:
        return cls(
            str(error.code),
            error.message,
            error.details,
            request_id=request_id,
            project_id=project_id,
        )

    def data(self) -> Mapping[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            data["details"] = self.details
        return data


@attrs.frozen(init=False)
class AgentMessage(Outbound):
    """``agent_message`` carrying one Record, encoded around the Record's stored line."""

    TYPE = "agent_message"
    record_line: bytes

    def __init__(self, project_id: str, record_line: bytes) -> None:
        self.__attrs_init__(record_line, project_id=project_id)

    def data(self) -> Mapping[str, Any]:
        return json.loads(self.record_line)  # type: ignore[no-any-return]

    def encode(self) -> bytes:
        pid = json.dumps(self.project_id).encode()
        return (
            b'{"type":"agent_message","project_id":' + pid + b',"data":' + self.record_line + b"}"
        )


@attrs.frozen
class HistoryMessage(Outbound):
    """``message_history`` around stored Record lines (never parsed or re-serialised)."""

    TYPE = "message_history"
    page: Page

    def data(self) -> Mapping[str, Any]:
        return json.loads(self.encode())["data"]  # type: ignore[no-any-return]

    def encode(self) -> bytes:
        head: dict[str, Any] = {"type": self.TYPE, "project_id": self.project_id}
        if self.request_id is not None:
            head["request_id"] = self.request_id
        page = self.page
        tail = {
            "has_more": page.has_more,
            "first_seq": page.first_seq,
            "last_seq": page.last_seq,
            "project_last_seq": page.project_last_seq,
        }
        return b"".join(
            (
                json.dumps(head, ensure_ascii=False)[:-1].encode(),
                b',"data":{"messages":[',
                b",".join(page.lines),
                b"],",
                json.dumps(tail)[1:].encode(),
                b"}",
            )
        )
