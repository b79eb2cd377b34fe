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
    AgentKillRequest,
    ExecuteRequest,
    GetMessagesRequest,
    HealthRequest,
    ProjectCreateRequest,
    ProjectJoinRequest,
    ProjectListRequest,
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
    summary_line,
)

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


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
    it executes."""

    def __init__(self, link: Link, out: Output, project: str) -> None:
        super().__init__(link, out, project)
        self.executing = False
        self.finished: Mapping[str, Any] | None = None
        self.run_error: str | None = None

    def on_project(self, envelope: Envelope) -> None:
        data = envelope.data
        if envelope.type == "agent_message":
            self.out.show(*record_lines(data))
            self._track(data)
        elif envelope.type == "execution_finished":
            self.finished = data
        elif envelope.type == "error":
            self.run_error = str(envelope.data.get("message", ""))
        elif envelope.type == "project_state" and envelope.request_id is None:
            self.executing = data.get("state") == "EXECUTING"
            if self.executing:
                self.out.working("Claude is working")
            elif self.finished is not None:
                self.out.idle()
                self.out.show(summary_line(self.finished, self.run_error))
                self.run_ended(self.finished)
                self.finished, self.run_error = None, None
            else:
                self.out.idle()

    def _track(self, record: Mapping[str, Any]) -> None:
        """Name the tool Claude is waiting on in the progress line."""
        message = record.get("message")
        if not self.executing or not isinstance(message, Mapping):
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


class JoinFlow(Stream):
    """Follow a project live (the past with --after) until Ctrl-C."""

    def __init__(self, link: Link, out: Output, project: str, after_seq: int | None) -> None:
        super().__init__(link, out, project)
        self.after_seq = after_seq

    def begin(self) -> None:
        self.send(ProjectJoinRequest(after_seq=self.after_seq), self.project_id)

    def on_project(self, envelope: Envelope) -> None:
        if envelope.type == "project_state" and envelope.request_id is not None:
            self.out.show(project_line(envelope.data))
            self.executing = envelope.data.get("state") == "EXECUTING"
        elif envelope.type == "project_join":
            self.out.note(f"following (last seq {envelope.data.get('last_seq')}); Ctrl-C stops")
            if self.executing:
                self.out.working("Claude is working")
        elif envelope.type == "message_history":
            for record in envelope.data.get("messages") or []:
                self.out.show(*record_lines(record))
        else:
            super().on_project(envelope)

    def interrupt(self) -> None:
        self.finish(EXIT_OK)


class ExecFlow(Stream):
    """Run one prompt and stream it; exit 0 only when the run succeeded.

    Ctrl-C asks whether to kill the run when a person is at the terminal; otherwise (or
    on a second Ctrl-C) it only disconnects, and the run goes on on the server.
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
        super().__init__(link, out, project)
        self.prompt = prompt
        self.options = options
        self.interactive = interactive
        self.run_id: str | None = None
        self._asking = False
        self._killing = False
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

    def run_ended(self, finished: Mapping[str, Any]) -> None:
        if finished.get("run_id") == self.run_id:
            self.finish(EXIT_OK if finished.get("outcome") == "success" else EXIT_FAILED)

    def interrupt(self) -> None:
        if self.run_id is None or self._asking or self._killing or not self.interactive:
            self.detach()
            return
        self._asking = True
        self.out.idle()
        self.link.ask("Kill the run? [y/N] ").addCallback(self._answered)

    def _answered(self, kill: bool) -> None:
        self._asking = False
        if self.done:
            return
        if not kill:
            self.detach()
            return
        self._killing = True
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
