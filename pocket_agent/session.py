"""One client connection's conversation with the domain, independent of WebSocket.

The transport feeds it raw text payloads; it decodes them, resolves which
project a request is about, calls :class:`~pocket_agent.server.PocketAgent` and
sends the replies. Every refusal becomes one ``error`` frame echoing the
``request_id``; nothing a client sends can close the connection from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.logger import Logger

from . import __version__
from .pages import Query
from .protocol import (
    MAX_PAGE,
    PROTOCOL_VERSION,
    AgentKillRequest,
    AgentNewSessionRequest,
    Envelope,
    ErrorCode,
    ExecuteRequest,
    GetMessagesRequest,
    HealthRequest,
    HistoryMessage,
    Message,
    Outgoing,
    ProjectCreateRequest,
    ProjectDeleteRequest,
    ProjectJoinRequest,
    ProjectLeaveRequest,
    ProjectListRequest,
    ProtocolError,
    Request,
    decode_envelope,
    error_message,
    parse_request,
    project_state_message,
    request_id_of,
)
from .server import PocketAgent

Reply = Callable[[Message | HistoryMessage], None]


class Session:
    """Implements :class:`~pocket_agent.server.Peer` together with the transport's send."""

    log = Logger()

    def __init__(
        self,
        agent: PocketAgent,
        connection_id: str,
        authenticated_as: str,
        send: Callable[[Outgoing], None],
        close: Callable[[int, str], None],
        abort: Callable[[], None],
    ) -> None:
        self.agent = agent
        self.connection_id = connection_id
        self.authenticated_as = authenticated_as
        self._send = send
        self._close = close
        self._abort = abort

    # Peer -----------------------------------------------------------------------

    def deliver(self, message: Outgoing) -> None:
        self._send(message)

    def close(self, code: int, reason: str) -> None:
        self._close(code, reason)

    def abort(self) -> None:
        self._abort()

    # Lifecycle -------------------------------------------------------------------

    def hello(self) -> Message:
        limits = self.agent.config.limits
        return Message(
            "server_hello",
            {
                "server_version": __version__,
                "protocol_version": PROTOCOL_VERSION,
                "connection_id": self.connection_id,
                "authenticated_as": self.authenticated_as,
                "limits": {
                    "max_message_size": limits.max_message_size,
                    "messages_per_second": limits.messages_per_second,
                    "max_projects": limits.max_projects,
                    "max_connections": limits.max_connections,
                },
            },
        )

    @property
    def follows_anything(self) -> bool:
        return bool(self.agent.following(self))

    # Requests ----------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """Handle one text frame; errors are answered, logged when they are bugs."""
        started = time.perf_counter()
        envelope: Envelope | None = None
        try:
            envelope = decode_envelope(payload)
            self._dispatch(envelope, parse_request(envelope))
        except ProtocolError as e:
            rid = envelope.request_id if envelope else request_id_of(payload)
            pid = envelope.project_id if envelope else None
            self.deliver(error_message(e, request_id=rid, project_id=pid))
        except Exception:
            self.log.failure(
                "Internal error handling {message_type}",
                message_type=envelope.type if envelope else None,
                connection_id=self.connection_id,
            )
            rid = envelope.request_id if envelope else request_id_of(payload)
            self.deliver(
                error_message(
                    ProtocolError(ErrorCode.INTERNAL_ERROR, "internal error; see the server log"),
                    request_id=rid,
                )
            )
        self.log.debug(
            "Message processed",
            message_type=envelope.type if envelope else None,
            connection_id=self.connection_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _project_id(self, envelope: Envelope) -> str:
        target = envelope.target_project_id
        if target is not None:
            return target
        following = self.agent.following(self)
        if following:
            return following[-1]
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "project_id: required (no project joined on this connection)",
            {"field": "project_id", "reason": "required"},
        )

    def _dispatch(self, envelope: Envelope, request: Request) -> None:
        rid = envelope.request_id
        project_id = self._project_id(envelope) if request.NEEDS_PROJECT else ""
        handler = getattr(self, f"_on_{request.TYPE}")
        handler(request, project_id, lambda m: self.deliver(m.replying_to(rid)))

    # One handler per request type: (request, target project id, reply).

    def _on_health(self, request: HealthRequest, _: str, reply: Reply) -> None:
        reply(Message("health_status", self.agent.health()))

    def _on_project_list(self, request: ProjectListRequest, _: str, reply: Reply) -> None:
        states = [s.to_wire() for s in self.agent.project_states()]
        reply(Message("project_list_response", {"projects": states, "total": len(states)}))

    def _on_project_create(self, request: ProjectCreateRequest, _: str, reply: Reply) -> None:
        state, created = self.agent.create_project(request.path, request.create)
        reply(project_state_message(state))
        if created:
            self.agent.announce_created(state)

    def _on_project_delete(self, request: ProjectDeleteRequest, pid: str, reply: Reply) -> None:
        self.agent.delete_project(pid)
        reply(Message("project_delete", {"project_id": pid, "status": "deleted"}, project_id=pid))
        self.agent.announce_deleted(pid)

    def _on_project_join(self, request: ProjectJoinRequest, pid: str, reply: Reply) -> None:
        project = self.agent.join(self, pid)
        reply(project_state_message(self.agent.state_of(project)))
        joined = {
            "project_id": project.id,
            "state": str(project.status),
            "session_id": project.session_id,
            "last_seq": project.last_seq,
        }
        reply(Message("project_join", joined, project_id=pid))
        if request.after_seq is not None:
            # Same reactor turn as the join: no record can slip between the replay and
            # the live stream, so the client sees no gap and no duplicate.
            reply(self.agent.history_page(pid, Query(after_seq=request.after_seq, limit=MAX_PAGE)))

    def _on_get_messages(self, request: GetMessagesRequest, pid: str, reply: Reply) -> None:
        query = Query(
            after_seq=request.after_seq,
            since=request.since,
            before_seq=request.before_seq,
            limit=request.limit,
            direction=request.direction,
        )
        reply(self.agent.history_page(pid, query))

    def _on_project_leave(self, request: ProjectLeaveRequest, pid: str, reply: Reply) -> None:
        self.agent.leave(self, pid)
        reply(Message("project_leave", {"project_id": pid, "status": "left"}, project_id=pid))

    def _on_execute(self, request: ExecuteRequest, pid: str, reply: Reply) -> None:
        def started(run_id: str) -> None:
            reply(Message("execute", {"run_id": run_id, "status": "started"}, project_id=pid))

        self.agent.executor.execute(pid, request.prompt, request.options, started, requester=self)

    def _on_agent_kill(self, request: AgentKillRequest, pid: str, reply: Reply) -> None:
        status = self.agent.executor.kill(pid)
        reply(Message("agent_kill", {"status": status}, project_id=pid))
        self.agent.executor.announce_kill(pid)

    def _on_agent_new_session(
        self, request: AgentNewSessionRequest, pid: str, reply: Reply
    ) -> None:
        old = self.agent.executor.new_session(pid)
        data = {"old_session_id": old, "status": "reset"}
        reply(Message("agent_new_session", data, project_id=pid))
        self.agent.executor.announce_new_session(pid, old)
