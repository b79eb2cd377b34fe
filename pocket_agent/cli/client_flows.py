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

from pocket_agent.runs.options import RunOptions
from pocket_agent.wire.envelope import Envelope
from pocket_agent.wire.requests import (
    AgentInterruptRequest,
    AgentKillRequest,
    ExecuteRequest,
    GetMessagesRequest,
    HealthRequest,
    PermissionResponseRequest,
    ProjectCreateRequest,
    ProjectJoinRequest,
    ProjectListRequest,
    ProjectSettingsRequest,
    Request,
)

from .client_render import (
    Output,
    approval_question,
    error_line,
    health_table,
    history_footer,
    project_line,
    project_row,
    record_lines,
    server_lines,
    settings_lines,
    summary_line,
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


class Stream(ProjectFlow):
    """Shows a project's live frames: Records, run summaries, and a progress line while
    it executes. Permission prompts (SPEC §10) are shown with their preview; with a
    person at the terminal each one is asked, one at a time, and the answer sent."""

    def __init__(self, link: Link, out: Output, project: str, interactive: bool) -> None:
        super().__init__(link, out, project)
        self.interactive = interactive
        self.executing = False
        self.finished: Mapping[str, Any] | None = None
        self.run_error: str | None = None
        self.open: dict[str, Mapping[str, Any]] = {}  # prompts seen and not resolved
        self.queue: list[str] = []  # of those, the ones still to ask, oldest first
        self.settled: set[str] = set()
        self.asking: str | None = None  # the permission id (or ASK_KILL) being asked
        self.stopping = False  # no more questions: the run is being killed
        self._answers: dict[str, str] = {}  # our permission_response request ids -> prompt

    def on_project(self, envelope: Envelope) -> None:
        data = envelope.data
        if envelope.request_id in self._answers:
            self._answer_reply(envelope)
        elif envelope.type == "agent_message":
            self.out.show(*record_lines(data))
            self._track(data)
        elif envelope.type == "execution_finished":
            self.finished = data
        elif envelope.type == "error":
            self.run_error = str(envelope.data.get("message", ""))
        elif envelope.type == "project_state" and envelope.request_id is None:
            self.executing = data.get("state") == "EXECUTING"
            if self.executing:
                self.progress()
            elif self.finished is not None:
                self.out.idle()
                self.out.show(summary_line(self.finished, self.run_error))
                self.run_ended(self.finished)
                self.finished, self.run_error = None, None
            else:
                self.out.idle()

    def progress(self) -> None:
        """The progress line's label, unless the person is typing an answer."""
        if self.asking is None and self.executing:
            self.out.working("waiting for an answer" if self.open else "Claude is working")

    def _track(self, record: Mapping[str, Any]) -> None:
        """Name the tool Claude is waiting on in the progress line; follow the prompts."""
        message = record.get("message")
        if not isinstance(message, Mapping):
            return
        if message.get("type") == "permission_request" and record.get("direction") == "server":
            if self.wants(message):
                self.prompted(message)
            return
        if message.get("type") == "permission_resolved" and record.get("direction") == "server":
            self.resolved(message)
            return
        if not self.executing or self.asking is not None:
            return
        inner = message.get("message")
        blocks = inner.get("content") if isinstance(inner, Mapping) else None
        tools = [b for b in blocks or [] if isinstance(b, Mapping) and b.get("type") == "tool_use"]
        if message.get("type") == "assistant" and tools:
            self.out.working(f"running {tools[-1].get('name')}")
        elif message.get("type") in ("assistant", "user"):
            self.out.working("Claude is working")

    def run_ended(self, finished: Mapping[str, Any]) -> None:
        """After a run's summary."""

    # ------------------------------------------------------------ prompts

    def wants(self, request: Mapping[str, Any]) -> bool:
        """Whether this flow answers ``request`` (exec: only its own run's)."""
        return True

    def prompted(self, request: Mapping[str, Any]) -> None:
        """An open prompt (already shown): ask it, or say how to answer it."""
        permission_id = str(request.get("permission_id"))
        if permission_id in self.settled or permission_id in self.open:
            return
        self.open[permission_id] = request
        if self.interactive and request.get("kind") != "question":
            self.queue.append(permission_id)
            self.offer()
        else:
            if not self.out.json_mode:
                self.out.note(answer_hint(self.project_id, request), style="yellow")
            self.progress()

    def resolved(self, resolved: Mapping[str, Any]) -> None:
        """Answered (here or on another device), timed out, withdrawn or ended."""
        permission_id = str(resolved.get("permission_id"))
        self.settled.add(permission_id)
        self.open.pop(permission_id, None)
        if permission_id in self.queue:
            self.queue.remove(permission_id)
        if self.asking == permission_id:
            self.out.note(
                "resolved meanwhile, your answer will not be sent (press Enter)", style="yellow"
            )
        self.progress()

    def offer(self) -> None:
        """Ask the oldest prompt not yet asked, unless a question is already on screen."""
        if self.done or self.stopping or self.asking is not None or not self.queue:
            return
        permission_id = self.queue.pop(0)
        self.asking = permission_id
        self.out.idle()
        question = approval_question(self.open[permission_id])
        self.link.ask(question).addCallback(self._decided, permission_id)

    def _decided(self, allow: bool, permission_id: str) -> None:
        self.asking = None
        if self.done:
            return
        if permission_id in self.settled or self.stopping:
            self.out.note(f"{permission_id}: answered elsewhere, not sent", style="dim")
        else:
            request = (
                PermissionResponseRequest(permission_id=permission_id, behavior="allow")
                if allow
                else PermissionResponseRequest(
                    permission_id=permission_id, behavior="deny", message=TERMINAL_DENY
                )
            )
            self._answers[self.link.send(request, self.project_id)] = permission_id
        self.progress()
        self.offer()

    def _answer_reply(self, envelope: Envelope) -> None:
        """Our answer's reply: a late one is told ``already_resolved``; neither that nor an
        error ends the flow (the run goes on either way)."""
        permission_id = self._answers.pop(str(envelope.request_id))
        if envelope.type == "error":
            self.out.idle()
            if not self.out.json_mode:
                self.out.err.print(error_line(envelope.data))
        elif envelope.data.get("status") == "already_resolved":
            self.out.note(f"{permission_id}: already resolved elsewhere", style="yellow")
        self.progress()


def answer_hint(project_id: str | None, request: Mapping[str, Any]) -> str:
    """How to answer a prompt from another terminal."""
    target = f"{project_id} {request.get('permission_id')}"
    if request.get("kind") == "question":
        return f"answer it: {COMMAND_NAME} approve {target} --answer 'QUESTION=ANSWER'"
    return f"answer it: {COMMAND_NAME} approve {target}  (or: {COMMAND_NAME} deny {target})"


class JoinFlow(Stream):
    """Follow a project live (the past with --after) until Ctrl-C; the prompts open when
    it joins are shown (and asked) after the replay."""

    def __init__(
        self,
        link: Link,
        out: Output,
        project: str,
        after_seq: int | None,
        interactive: bool = False,
    ) -> None:
        super().__init__(link, out, project, interactive)
        self.after_seq = after_seq
        self._join = ""
        self._pending: list[Mapping[str, Any]] = []

    def begin(self) -> None:
        self._join = self.send(ProjectJoinRequest(after_seq=self.after_seq), self.project_id)

    def on_project(self, envelope: Envelope) -> None:
        joined = envelope.request_id is not None and envelope.request_id == self._join
        if envelope.type == "project_state" and joined:
            self.out.show(project_line(envelope.data))
            self.executing = envelope.data.get("state") == "EXECUTING"
            pending = envelope.data.get("pending_permissions") or []
            self._pending = [p for p in pending if isinstance(p, Mapping)]
        elif envelope.type == "project_join":
            self.out.note(f"following (last seq {envelope.data.get('last_seq')}); Ctrl-C stops")
            if self.after_seq is None:
                self._open_pending(shown=set())
            self.progress()
        elif envelope.type == "message_history" and joined:
            shown: set[str] = set()
            for record in envelope.data.get("messages") or []:
                self.out.show(*record_lines(record))
                message = record.get("message")
                if isinstance(message, Mapping) and message.get("type") == "permission_request":
                    shown.add(str(message.get("permission_id")))
            self._open_pending(shown)
            self.progress()
        else:
            super().on_project(envelope)

    def _open_pending(self, shown: set[str]) -> None:
        """The prompts open at the join (from its project_state), each shown once."""
        pending, self._pending = self._pending, []
        for request in pending:
            if str(request.get("permission_id")) not in shown:
                self.out.show(*server_lines(request))
            self.prompted(request)

    def interrupt(self) -> None:
        self.finish(EXIT_OK)


class ExecFlow(Stream):
    """Run one prompt and stream it; exit 0 when the run succeeded, 130 when it was
    interrupted (agent_interrupt), 1 otherwise.

    Ctrl-C asks whether to kill the run when a person is at the terminal; otherwise (or
    on a second Ctrl-C, or while a prompt is being asked) it only disconnects, and the
    run goes on on the server.
    """

    def __init__(
        self,
        link: Link,
        out: Output,
        project: str,
        prompt: str,
        options: RunOptions,
        interactive: bool,
    ) -> None:
        super().__init__(link, out, project, interactive)
        self.prompt = prompt
        self.options = options
        self.run_id: str | None = None
        self._execute = ""

    def begin(self) -> None:
        self._execute = self.send(
            ExecuteRequest(prompt=self.prompt, options=self.options), self.project_id
        )

    def on_project(self, envelope: Envelope) -> None:
        if envelope.type == "execute" and envelope.request_id == self._execute:
            self.run_id = str(envelope.data.get("run_id"))
            self.executing = True
            self.out.working("Claude is working")
        elif envelope.type == "agent_kill":
            self.out.note(f"kill: {envelope.data.get('status')}")
        elif self.run_id is not None:
            super().on_project(envelope)

    def wants(self, request: Mapping[str, Any]) -> bool:
        return request.get("run_id") == self.run_id

    def run_ended(self, finished: Mapping[str, Any]) -> None:
        if finished.get("run_id") == self.run_id:
            self.finish(EXIT_CODES.get(str(finished.get("outcome")), EXIT_FAILED))

    def interrupt(self) -> None:
        if self.run_id is None or self.asking is not None or self.stopping or not self.interactive:
            self.detach()
            return
        self.asking = ASK_KILL
        self.out.idle()
        self.link.ask("Kill the run? [y/N] ").addCallback(self._answered)

    def _answered(self, kill: bool) -> None:
        self.asking = None
        if self.done:
            return
        if not kill:
            self.detach()
            return
        self.stopping = True
        self.send(AgentKillRequest(), self.project_id)
        self.out.working("killing the run")

    def detach(self) -> None:
        if self.run_id is not None:
            self.out.idle()
            self.out.note(
                f"disconnected; the run goes on (follow it: client join {self.project_id}, "
                f"stop it: client kill {self.project_id})",
                style="yellow",
            )
        self.finish(EXIT_INTERRUPTED)


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
