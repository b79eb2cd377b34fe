"""A run's output as Records: the history first, then the event that fans it out.

The run's :class:`~pocket_agent.runs.runcore.RunSink`: claude's lines, the server's
events about the run (stderr, raw output, permission prompts), the session id, the
processes a crash must clean up, and the end, which the executor reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pocket_agent.core.events import EventBus, ProjectChanged, RecordAppended
from pocket_agent.core.hub import Hub
from pocket_agent.core.projects import Project
from pocket_agent.core.registry import ProjectRegistry
from pocket_agent.history import Record

from .approvals import Approvals
from .events import PermissionRequested, PermissionResolved, SessionChanged
from .liverun import LiveRun, LiveRunFile, boot_id
from .outcome import RunResult
from .prompts import Decision, Prompt
from .tree import ProcessTree, read_stat
from .workdir import WorkDir


class RunOwner(Protocol):
    """What a recorder needs of the executor that started its run."""

    registry: ProjectRegistry
    bus: EventBus
    hub: Hub
    clock: IReactorTime
    approvals: Approvals
    log: Logger

    def storage_failed(self, recorder: RunRecorder, error: OSError) -> None: ...

    def run_finished(self, project: Project, result: RunResult, recorder: RunRecorder) -> None: ...


class RunRecorder:
    """A run's output as Records: history first, then the event that fans it out.

    After a failed write the run is stopping (see :meth:`Executor.storage_failed`):
    later lines are counted as lost instead of being tried one by one."""

    def __init__(
        self,
        executor: RunOwner,
        project: Project,
        run_id: str | None,
        workdir: WorkDir | None = None,
    ) -> None:
        self.executor = executor
        self.project = project
        self.run_id = run_id
        self.workdir = workdir
        self.live = LiveRunFile(executor.registry.store.project_dir(project.id))
        self.live_run: LiveRun | None = None
        self.lost = 0

    def store(self, direction: str, message: dict[str, Any], raw: bytes | None = None) -> Record:
        """Written (flushed to the OS), not yet announced; OSError when the disk says no."""
        return self.executor.registry.history(self.project.id).append(
            self.run_id, direction, message, raw
        )

    def publish(self, record: Record) -> None:
        self.project.last_seq = record.seq
        self.executor.bus.emit(RecordAppended(self.project.id, record))

    def record(self, direction: str, message: dict[str, Any], raw: bytes | None = None) -> None:
        if self.lost:
            self.lost += 1
            return
        try:
            record = self.store(direction, message, raw)
        except OSError as e:
            self.lost += 1
            self.executor.storage_failed(self, e)
            return
        self.publish(record)

    def finish_later(self, end: dict[str, Any]) -> None:
        """The storage watch's retry of an end that could not be written at the time."""
        if self.executor.registry.find(self.project.id) is not self.project:
            return  # deleted meanwhile: nothing to close
        self.publish(self.store("server", end))
        # Stored: from here nothing may make the storage watch write it again.
        try:
            self.executor.registry.history(self.project.id).sync()
            self.live.remove()
        except OSError:
            self.executor.log.warn(
                "The end of run {run_id} is written but not yet synced",
                run_id=self.run_id,
                project_id=self.project.id,
            )

    def close(self) -> None:
        if self.workdir is not None:
            self.workdir.close()

    # RunSink --------------------------------------------------------------------

    def claude_line(self, message: dict[str, Any], raw: bytes) -> None:
        self._safely(self.record, "claude", message, raw)

    def server_event(self, message: dict[str, Any]) -> None:
        self._safely(self.record, "server", message)

    def _safely(self, fn: Callable[..., None], *args: Any) -> None:
        """An error here must not reach the process protocol (Twisted would close
        claude's pipe): log it, the run goes on."""
        try:
            fn(*args)
        except Exception:
            self.executor.log.failure("Recording output of {pid} failed", pid=self.project.id)

    def session_seen(self, session_id: str) -> None:
        self._safely(self._new_session, session_id)

    def _new_session(self, session_id: str) -> None:
        project = self.project
        if session_id == project.session_id:
            return
        project.session_id = session_id
        try:
            self.executor.registry.save(project)
        except OSError as e:
            self.executor.storage_failed(self, e)
        self.executor.bus.emit(SessionChanged(project.id, session_id))

    def permission_opened(self, prompt: Prompt, flipped: bool) -> None:
        self.executor.approvals.issued(prompt.permission_id, self.project.id)
        self._safely(self._prompt_changed, prompt.request_record(), flipped)
        self.executor.bus.emit(
            PermissionRequested(
                self.project.id, prompt.run_id, prompt.permission_id, prompt.ask.tool_name
            )
        )

    def permission_closed(self, prompt: Prompt, decision: Decision, flipped: bool) -> None:
        now = self.executor.registry.now()
        self._safely(self._prompt_changed, prompt.resolved_record(decision, now), flipped)
        self.executor.bus.emit(
            PermissionResolved(
                self.project.id,
                prompt.run_id,
                prompt.permission_id,
                decision.behavior,
                str(decision.reason),
                max(0.0, (now - prompt.created_at).total_seconds()),
            )
        )

    def _prompt_changed(self, message: dict[str, Any], flipped: bool) -> None:
        """The Record, then the state: every connection hears when ``awaiting_approval``
        flips (the projects screen shows it), the followers of every other change."""
        self.record("server", message)
        snapshot = self.executor.hub.snapshot(self.project)
        self.executor.bus.emit(ProjectChanged(snapshot, everyone=flipped))

    def processes_seen(self, tree: ProcessTree) -> None:
        """Crash-proof what the run started: rewrite the live-run file."""
        if self.live_run is None:
            stat = read_stat(tree.pid, tree.proc)
            self.live_run = LiveRun(
                self.run_id or "", self.executor.clock.seconds(), boot_id()
            ).with_tree(tree, stat.starttime if stat else None)
        else:
            self.live_run = self.live_run.with_tree(tree, self.live_run.starttime)
        try:
            self.live.write(self.live_run)
        except OSError as e:
            self.executor.storage_failed(self, e)

    def finished(self, result: RunResult) -> None:
        self.executor.run_finished(self.project, result, self)
