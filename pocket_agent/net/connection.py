"""One client connection's conversation with the domain, independent of WebSocket.

Inbound, one way: text payload -> envelope -> typed request -> one domain call.
Outbound, one way: domain event (from the hub) -> frames (``wire.translate``) -> send.
Commands (create, delete, execute, kill, new session) are answered through the event
stream, where the domain put the answer; queries are answered directly. Every refusal
becomes one ``error`` frame echoing the ``request_id``; nothing a client sends can
close the connection from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

from pocket_agent import __version__
from pocket_agent.config import Limits
from pocket_agent.core.errors import DomainError
from pocket_agent.core.events import Cause, Event
from pocket_agent.core.hub import Departure, Hub
from pocket_agent.core.workspace import Workspace
from pocket_agent.history import Query
from pocket_agent.runs.approvals import Approvals
from pocket_agent.runs.executor import Executor
from pocket_agent.wire import messages as m
from pocket_agent.wire import requests as r
from pocket_agent.wire.envelope import PROTOCOL_VERSION, Envelope, decode_envelope, request_id_of
from pocket_agent.wire.errors import ErrorCode, ProtocolError
from pocket_agent.wire.translate import frames_for

from .errors import wire_error

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

# What each way the domain ends a connection means in RFC 6455 terms.
DEPARTURES: dict[Departure, tuple[int, str]] = {
    Departure.SHUTDOWN: (CLOSE_GOING_AWAY, "server shutting down"),
    Departure.TOKEN_REVOKED: (CLOSE_POLICY, "token rotated: pair again"),
}


@attrs.frozen
class Domain:
    """The domain's entry points, as a connection calls them."""

    hub: Hub
    workspace: Workspace
    executor: Executor
    health: Callable[[], dict[str, Any]]
    limits: Limits
    approvals: Approvals


class Connection:
    """A :class:`~pocket_agent.core.hub.Follower` over the transport's send and close."""

    _log = Logger()

    def __init__(
        self,
        domain: Domain,
        connection_id: str,
        authenticated_as: str,
        send: Callable[[m.Outbound], None],
        close: Callable[[int, str], None],
        abort: Callable[[], None],
    ) -> None:
        self.domain = domain
        self.connection_id = connection_id
        self.authenticated_as = authenticated_as
        self._send = send
        self._close = close
        self._abort = abort

    # Follower -------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        for frame in frames_for(event):
            self._send(frame)

    def close(self, why: Departure) -> None:
        self._close(*DEPARTURES[why])

    def abort(self) -> None:
        self._abort()

    # Lifecycle -------------------------------------------------------------------

    def hello(self) -> m.ServerHello:
        limits = self.domain.limits
        return m.ServerHello(
            server_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            connection_id=self.connection_id,
            authenticated_as=self.authenticated_as,
            limits={
                "max_message_size": limits.max_message_size,
                "messages_per_second": limits.messages_per_second,
                "max_projects": limits.max_projects,
                "max_connections": limits.max_connections,
            },
        )

    @property
    def follows_anything(self) -> bool:
        return bool(self.domain.hub.following(self))

    # Requests ----------------------------------------------------------------------

    def receive(self, payload: bytes) -> str | None:
        """Handle one text frame; errors are answered, logged when they are bugs. Returns
        the frame's ``type`` when it had one (for the transport's debug line)."""
        envelope: Envelope | None = None
        try:
            try:
                envelope = decode_envelope(payload)
                self._dispatch(envelope, r.parse_request(envelope))
            except DomainError as e:
                raise wire_error(e) from None
        except ProtocolError as e:
            rid = envelope.request_id if envelope else request_id_of(payload)
            pid = envelope.project_id if envelope else None
            self._send(m.ErrorMessage.of(e, request_id=rid, project_id=pid))
        except Exception:
            self._log.failure(
                "Internal error handling {message_type}",
                message_type=envelope.type if envelope else None,
                connection_id=self.connection_id,
            )
            rid = envelope.request_id if envelope else request_id_of(payload)
            error = ProtocolError(ErrorCode.INTERNAL_ERROR, "internal error; see the server log")
            self._send(m.ErrorMessage.of(error, request_id=rid))
        return envelope.type if envelope else None

    def _project_id(self, envelope: Envelope) -> str:
        target = envelope.target_project_id
        if target is not None:
            return target
        following = self.domain.hub.following(self)
        if following:
            return following[-1]
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "project_id: required (no project joined on this connection)",
            {"field": "project_id", "reason": "required"},
        )

    def _dispatch(self, envelope: Envelope, request: r.Request) -> None:
        pid = self._project_id(envelope) if request.NEEDS_PROJECT else ""
        cause = Cause(self.connection_id, envelope.request_id)
        handler = getattr(self, f"_on_{request.TYPE}")
        handler(request, pid, cause)

    # One handler per request type: (request, target project id, cause); each reply is
    # built with the request's id (no copy per reply).
    # Queries ------------------------------------------------------------------------

    def _on_health(self, request: r.HealthRequest, _: str, cause: Cause) -> None:
        self._send(m.HealthStatus(self.domain.health(), request_id=cause.request_id))

    def _on_project_list(self, request: r.ProjectListRequest, _: str, cause: Cause) -> None:
        snapshots = self.domain.hub.snapshots()
        self._send(m.ProjectListResponse(snapshots, request_id=cause.request_id))

    def _on_project_join(self, request: r.ProjectJoinRequest, pid: str, cause: Cause) -> None:
        joined = self.domain.hub.subscribe(self, pid, request.after_seq)
        rid = cause.request_id
        self._send(m.ProjectStateMessage.of(joined.project, rid))
        self._send(m.ProjectJoinReply(joined.project, project_id=pid, request_id=rid))
        if joined.replay is not None:
            self._send(m.HistoryMessage(joined.replay, project_id=pid, request_id=rid))

    def _on_project_leave(self, request: r.ProjectLeaveRequest, pid: str, cause: Cause) -> None:
        self.domain.hub.unsubscribe(self, pid)
        self._send(m.ProjectLeaveReply(project_id=pid, request_id=cause.request_id))

    def _on_get_messages(self, request: r.GetMessagesRequest, pid: str, cause: Cause) -> None:
        query = Query(
            after_seq=request.after_seq,
            since=request.since,
            before_seq=request.before_seq,
            limit=request.limit,
            direction=request.direction,
        )
        page = self.domain.hub.registry.query(pid, query)
        self._send(m.HistoryMessage(page, project_id=pid, request_id=cause.request_id))

    # Commands: answered through the event stream ------------------------------------

    def _on_project_create(self, request: r.ProjectCreateRequest, _: str, cause: Cause) -> None:
        self.domain.workspace.create(cause, request.path, request.create)

    def _on_project_delete(self, request: r.ProjectDeleteRequest, pid: str, cause: Cause) -> None:
        self.domain.workspace.delete(cause, pid)

    def _on_execute(self, request: r.ExecuteRequest, pid: str, cause: Cause) -> None:
        self.domain.executor.execute(cause, pid, request.prompt, request.options)

    def _on_agent_kill(self, request: r.AgentKillRequest, pid: str, cause: Cause) -> None:
        self.domain.executor.kill(cause, pid)

    def _on_agent_new_session(
        self, request: r.AgentNewSessionRequest, pid: str, cause: Cause
    ) -> None:
        self.domain.executor.new_session(cause, pid)

    def _on_agent_interrupt(
        self, request: r.AgentInterruptRequest, pid: str, cause: Cause
    ) -> None:
        self.domain.approvals.interrupt(cause, pid)

    def _on_permission_response(
        self, request: r.PermissionResponseRequest, pid: str, cause: Cause
    ) -> None:
        self.domain.approvals.respond(cause, pid, request.answer())

    def _on_project_settings(
        self, request: r.ProjectSettingsRequest, pid: str, cause: Cause
    ) -> None:
        self.domain.approvals.settings(cause, pid, request.allowed_tools, request.approvals)
