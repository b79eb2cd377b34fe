"""The conversation behind each ``client`` subcommand: which requests it sends, what
each frame it gets back means, and when it is done (with which exit status).

Flows know nothing of sockets: they send through a :class:`Link` and print through
:class:`~.client_render.Output`, so tests drive them with plain frames.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from rich.text import Text
from twisted.internet.defer import Deferred

from pocket_agent.wire.envelope import Envelope
from pocket_agent.wire.requests import (
    AgentInterruptRequest,
    AgentKillRequest,
    GetMessagesRequest,
    HealthRequest,
    PermissionResponseRequest,
    ProjectCreateRequest,
    ProjectListRequest,
    ProjectSettingsRequest,
    Request,
)

from .client_render import (
    Output,
    error_line,
    health_table,
    history_footer,
    project_line,
    project_row,
    record_lines,
    settings_lines,
)

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# ``client exec``'s status by the run's outcome: an interrupted run is not a failure but
# did not finish its work either, so it gets the status of a Ctrl-C'd command.
EXIT_CODES = {"success": EXIT_OK, "interrupted": EXIT_INTERRUPTED}
TERMINAL_DENY = "Denied from the terminal"  # what the model reads when the operator says no
ASK_KILL = "kill"  # Stream.asking while the Ctrl-C question is on screen
COMMAND_NAME = "client"


class Link(Protocol):
    """What a flow may do with its connection."""

    def send(self, request: Request, project_id: str | None = None) -> str:
        """Send ``request``; returns the request_id it carries."""

    def finish(self, code: int) -> None:
        """Done: close the connection, exit with ``code`` (only the first call counts)."""

    def ask(self, question: str) -> Deferred[bool]:
        """Ask the person at the terminal a yes/no question."""


class Flow:
    """Base: echo frames in --json mode, end on an error answering one of our requests."""

    def __init__(self, link: Link, out: Output) -> None:
        self.link = link
        self.out = out
        self.done = False
        self._mine: set[str] = set()

    def send(self, request: Request, project_id: str | None = None) -> str:
        request_id = self.link.send(request, project_id)
        self._mine.add(request_id)
        return request_id

    def finish(self, code: int) -> None:
        if not self.done:
            self.done = True
            self.out.idle()
            self.link.finish(code)

    def start(self) -> None:
        raise NotImplementedError

    def frame(self, envelope: Envelope, payload: bytes) -> None:
        if self.done:
            return
        self.out.frame(payload)
        if envelope.type == "error" and envelope.request_id in self._mine:
            self.out.idle()
            if not self.out.json_mode:
                self.out.err.print(error_line(envelope.data))
            self.finish(EXIT_FAILED)
            return
        self.on(envelope)

    def on(self, envelope: Envelope) -> None:
        """A frame that is not an error to one of our requests."""

    def interrupt(self) -> None:
        """Ctrl-C: stop here."""
        self.finish(EXIT_INTERRUPTED)

    def closed(self, reason: str) -> None:
        if not self.done:
            self.out.idle()
            self.out.note(f"connection closed: {reason}", style="red")
            self.finish(EXIT_FAILED)


class HealthFlow(Flow):
    def start(self) -> None:
        self.send(HealthRequest())

    def on(self, envelope: Envelope) -> None:
        if envelope.type == "health_status":
            self.out.show(health_table(envelope.data))
            self.finish(EXIT_FAILED if envelope.data.get("status") == "unhealthy" else EXIT_OK)


class ListFlow(Flow):
    def start(self) -> None:
        self.send(ProjectListRequest())

    def on(self, envelope: Envelope) -> None:
        if envelope.type == "project_list_response":
            projects = envelope.data.get("projects") or []
            self.out.show(
                *(project_row(p) for p in projects) if projects else [Text("no projects")]
            )
            self.finish(EXIT_OK)


class CreateFlow(Flow):
    def __init__(self, link: Link, out: Output, path: str, create: bool) -> None:
        super().__init__(link, out)
        self.path = os.path.abspath(os.path.expanduser(path))
        self.create = create
        self._request_id = ""

    def start(self) -> None:
        self._request_id = self.send(ProjectCreateRequest(path=self.path, create=self.create))

    def on(self, envelope: Envelope) -> None:
        if envelope.type == "project_state" and envelope.request_id == self._request_id:
            self.out.show(project_line(envelope.data))
            self.finish(EXIT_OK)


class ProjectFlow(Flow):
    """A flow on one project, named by its id or by its directory (looked up first)."""

    def __init__(self, link: Link, out: Output, project: str) -> None:
        super().__init__(link, out)
        self.project = project
        self.project_id: str | None = None if "/" in project or project == "." else project
        self.listed: Mapping[str, Any] | None = None  # its ProjectState, when looked up
        self._lookup = ""

    def start(self) -> None:
        if self.project_id is not None:
            self.begin()
        else:
            self._lookup = self.send(ProjectListRequest())

    def on(self, envelope: Envelope) -> None:
        if envelope.type == "project_list_response" and envelope.request_id == self._lookup:
            wanted = os.path.realpath(os.path.expanduser(self.project))
            for state in envelope.data.get("projects") or []:
                if os.path.realpath(str(state.get("path"))) == wanted:
                    self.project_id = str(state["id"])
                    self.listed = state
                    self.begin()
                    return
            self.out.note(f"no project at {wanted} (add it with: client create {wanted})", "red")
            self.finish(EXIT_FAILED)
        elif self.project_id is not None and envelope.project_id in (None, self.project_id):
            self.on_project(envelope)

    def begin(self) -> None:
        raise NotImplementedError

    def on_project(self, envelope: Envelope) -> None:
        """A frame once the project is known (and not the lookup's answer)."""


class KillFlow(ProjectFlow):
    _kill = ""

    def begin(self) -> None:
        self._kill = self.send(AgentKillRequest(), self.project_id)

    def on_project(self, envelope: Envelope) -> None:
        if envelope.type == "agent_kill" and envelope.request_id == self._kill:
            status = envelope.data.get("status")
            self.out.show(Text("killed" if status == "killed" else "idle: nothing was running"))
            self.finish(EXIT_OK)


class InterruptFlow(ProjectFlow):
    """Stop the current turn (SPEC §10): the run ends ``interrupted``, the session goes on."""

    _interrupt = ""

    def begin(self) -> None:
        self._interrupt = self.send(AgentInterruptRequest(), self.project_id)

    def on_project(self, envelope: Envelope) -> None:
        if envelope.type == "agent_interrupt" and envelope.request_id == self._interrupt:
            status = envelope.data.get("status")
            shown = "interrupting" if status == "interrupting" else "idle: nothing was running"
            self.out.show(Text(shown))
            self.finish(EXIT_OK)


class AnswerFlow(ProjectFlow):
    """``approve`` / ``deny``: answer one prompt by its id; a prompt already answered
    (elsewhere, or timed out) is not an error."""

    def __init__(
        self, link: Link, out: Output, project: str, request: PermissionResponseRequest
    ) -> None:
        super().__init__(link, out, project)
        self.request = request
        self._answer = ""

    def begin(self) -> None:
        self._answer = self.send(self.request, self.project_id)

    def on_project(self, envelope: Envelope) -> None:
        if envelope.type == "permission_response" and envelope.request_id == self._answer:
            done = "allowed" if self.request.behavior == "allow" else "denied"
            if envelope.data.get("status") == "already_resolved":
                done = "already resolved"
            self.out.show(Text(f"{self.request.permission_id}: {done}"))
            self.finish(EXIT_OK)


class SettingsFlow(ProjectFlow):
    """A project's approval settings: shown as they are, or changed and then shown."""

    def __init__(
        self, link: Link, out: Output, project: str, change: ProjectSettingsRequest | None
    ) -> None:
        super().__init__(link, out, project)
        self.change = change
        self._request = ""

    def begin(self) -> None:
        if self.change is not None:
            self._request = self.send(self.change, self.project_id)
        elif self.listed is not None:
            self.show(self.listed)
        else:
            self._request = self.send(ProjectListRequest())

    def on_project(self, envelope: Envelope) -> None:
        if envelope.request_id != self._request or not self._request:
            return
        if envelope.type == "project_state":
            self.show(envelope.data)
        elif envelope.type == "project_list_response":
            for state in envelope.data.get("projects") or []:
                if state.get("id") == self.project_id:
                    self.show(state)
                    return
            self.out.note(f"no project {self.project_id}", "red")
            self.finish(EXIT_FAILED)

    def show(self, state: Mapping[str, Any]) -> None:
        self.out.show(*settings_lines(state))
        self.finish(EXIT_OK)


class HistoryFlow(ProjectFlow):
    """One page of a project's Records, oldest first, with how to fetch the next."""

    def __init__(
        self,
        link: Link,
        out: Output,
        project: str,
        *,
        limit: int,
        after_seq: int | None,
        before_seq: int | None,
    ) -> None:
        super().__init__(link, out, project)
        self.request = GetMessagesRequest(after_seq=after_seq, before_seq=before_seq, limit=limit)
        self._page = ""

    def begin(self) -> None:
        self._page = self.send(self.request, self.project_id)

    def on_project(self, envelope: Envelope) -> None:
        if envelope.type == "message_history" and envelope.request_id == self._page:
            for record in envelope.data.get("messages") or []:
                self.out.show(*record_lines(record, seq=True))
            forward = self.request.after_seq is not None
            self.out.show(history_footer(envelope.data, forward=forward))
            self.finish(EXIT_OK)
