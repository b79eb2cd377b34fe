"""The flows that follow a run live: ``client join`` and ``client exec``, with the
permission prompts they show and, on a terminal, ask (SPEC §10).

Like every flow they know nothing of sockets (see :mod:`.client_flows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pocket_agent.runs.options import RunOptions
from pocket_agent.wire.envelope import Envelope
from pocket_agent.wire.requests import (
    AgentKillRequest,
    ExecuteRequest,
    PermissionResponseRequest,
    ProjectJoinRequest,
)

from .client_flows import (
    ASK_KILL,
    COMMAND_NAME,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    TERMINAL_DENY,
    Link,
    ProjectFlow,
)
from .client_render import (
    Output,
    approval_question,
    error_line,
    project_line,
    record_lines,
    server_lines,
    summary_line,
)


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
