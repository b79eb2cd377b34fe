"""Runs in projects: accept them, start them, turn their output into Records.

The flow of one prompt::

    Connection --execute--> Executor: checks, project EXECUTING, Answered, Records
                                 \\--> Run (machine + process) --lines--> RunRecorder
    RunRecorder --append--> History --RecordAppended--> EventBus --> Hub --> followers
                                                                \\--> event log, metrics

Every Record goes to the project's history first and then, as an event, to every
observer: the hub hands it to each follower in seq order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger

from pocket_agent.config import Config
from pocket_agent.core.errors import LimitReached
from pocket_agent.core.events import Answered, Cause, EventBus, ProjectChanged, RecordAppended
from pocket_agent.core.hub import Hub
from pocket_agent.core.projects import Project
from pocket_agent.core.registry import ProjectRegistry

from .command import apply_policy, build_argv, build_env, find_binary, printable_argv
from .events import (
    KillAnswer,
    RunAccepted,
    RunFinished,
    RunKilled,
    RunStarted,
    SessionChanged,
    SessionReset,
    SessionResetAnswer,
)
from .machine import Run
from .options import RunOptions
from .outcome import Outcome, RunResult, StopReason
from .runcore import RunCore, Timeouts
from .tree import ProcessTree

TreeFactory = Callable[[int], ProcessTree]


class Executor:
    log = Logger()

    def __init__(
        self,
        config: Config,
        registry: ProjectRegistry,
        hub: Hub,
        bus: EventBus,
        clock: IReactorTime,
        spawner: IReactorProcess,
        environ: dict[str, str],
        setsid: str | None,
        tree_factory: TreeFactory | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.hub = hub
        self.bus = bus
        self.clock = clock
        self.spawner = spawner
        self.environ = environ
        self.setsid = setsid
        self.tree_factory = tree_factory
        self._waiting: dict[str, list[Deferred[None]]] = {}

    def runs(self) -> list[Run]:
        """The active runs (a project's ``run`` is the one source of truth)."""
        return [cast(Run, p.run) for p in self.registry.all() if p.run is not None]

    @property
    def active(self) -> int:
        return len(self.runs())

    # ------------------------------------------------------------------ commands

    def execute(self, cause: Cause, project_id: str, prompt: str, options: RunOptions) -> None:
        """Start a run. Everything is checked before anything changes; then the project
        goes EXECUTING, the requester is answered (and follows the project from then on,
        joined before or not), and the Records begin."""
        project = self.registry.get(project_id)
        project.ensure_idle()
        limit = self.config.limits.max_concurrent_executions
        if self.active >= limit:
            raise LimitReached(
                f"the server is already running {limit} executions", "executions", limit
            )
        claude = self.config.claude
        options = apply_policy(
            options, claude.allow_dangerous_options, self.registry.policy.resolve
        )
        binary = find_binary(claude.binary, self.environ.get("PATH"))
        run_id = str(uuid.uuid4())
        argv = build_argv(binary, claude, options, project.session_id)
        timeouts = self.config.timeouts
        recorder = RunRecorder(self, project, run_id)
        run = Run(
            RunCore(
                run_id,
                prompt,
                argv,
                build_env(claude, self.environ),
                project.path,
                self.clock,
                self.spawner,
                # A zero grace would never arm the escalation; a tenth of a second still
                # gives claude its chance to answer SIGINT.
                Timeouts(timeouts.execution, timeouts.no_output, max(timeouts.kill_grace, 0.1)),
                recorder,
                self.setsid,
                self.tree_factory,
            )
        )
        project.run = run
        try:
            self.hub.follow(cause.connection_id, project_id)
            project.error_details = None
            project.last_active = self.registry.now()
            self.registry.save(project)
            self.bus.emit(ProjectChanged(self.hub.snapshot(project)))
            self.bus.emit(Answered(cause, RunAccepted(project_id, run_id)))
            prompt_record = {
                "type": "user_prompt",
                "prompt": prompt,
                "options": options.to_record(),
            }
            recorder.record("client", prompt_record)
            started = {"type": "execution_started", "run_id": run_id, "cwd": str(project.path)}
            recorder.record("server", {**started, "argv": printable_argv(argv)})
            self.bus.emit(RunStarted(project_id, run_id, project.session_id))
            run.start()
        except Exception:
            # A bug or a full disk, not a claude failure: leave the project usable.
            if run.core.transport is None and not run.finished:
                project.run = None
                self.bus.emit(ProjectChanged(self.hub.snapshot(project)))
            raise

    def kill(self, cause: Cause, project_id: str) -> None:
        """Answered ``killed`` when a run is stopping (now or already), ``idle`` when there
        is none; a kill that starts the escalation is recorded and announced."""
        project = self.registry.get(project_id)
        run = cast(Run | None, project.run)
        if run is None:
            self.bus.emit(Answered(cause, KillAnswer(project_id, "idle")))
            return
        accepted = run.stop_reason is None
        if accepted:
            run.stop(StopReason.USER)
            accepted = run.stop_reason is StopReason.USER
        self.bus.emit(Answered(cause, KillAnswer(project_id, "killed")))
        if accepted:
            data = {"type": "process_killed", "run_id": run.run_id}
            RunRecorder(self, project, run.run_id).record("server", data)
            self.bus.emit(RunKilled(project_id, run.run_id))

    def new_session(self, cause: Cause, project_id: str) -> None:
        """The next run starts a new Claude session instead of resuming."""
        project = self.registry.get(project_id)
        project.ensure_idle()
        old, project.session_id = project.session_id, None
        self.registry.save(project)
        self.bus.emit(Answered(cause, SessionResetAnswer(project_id, old)))
        data = {"type": "session_reset", "old_session_id": old}
        RunRecorder(self, project, None).record("server", data)
        self.bus.emit(SessionReset(project_id, old))
        self.bus.emit(ProjectChanged(self.hub.snapshot(project)))

    # ------------------------------------------------------------------ shutdown

    def stop_all(self, reason: StopReason = StopReason.SHUTDOWN) -> Deferred[Any]:
        """Stop every run with the escalation; fires when all have finished."""
        runs = self.runs()
        waits = [self.finished(p.id) for p in self.registry.all() if p.run is not None]
        for run in runs:
            run.stop(reason)
        return DeferredList(waits) if waits else succeed(None)

    def force_kill_all(self) -> None:
        """Shutdown is running out of time: SIGKILL everything that is left at once."""
        for run in self.runs():
            if run.stop_reason is None:
                run.stop(StopReason.SHUTDOWN)
            run.kill_now()

    def force_finish_all(self) -> None:
        """Shutdown is out of time: record every run as ended with what we know."""
        for run in self.runs():
            run.force_finish()

    def finished(self, project_id: str) -> Deferred[None]:
        """Fires when the project's active run (if any) has been reported."""
        project = self.registry.find(project_id)
        if project is None or project.run is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(project_id, []).append(d)
        return d

    # -------------------------------------------------------------- from a run

    def run_finished(self, project: Project, result: RunResult) -> None:
        """Record and announce the end; whatever fails here (a full disk), the project
        leaves EXECUTING and anyone waiting for the run hears of its end."""
        try:
            self._report_end(project, result)
        finally:
            if project.run is not None and project.run.run_id == result.run_id:
                project.run = None
                project.error_details = "the end of the run could not be recorded"
            for d in self._waiting.pop(project.id, []):
                d.callback(None)

    def _report_end(self, project: Project, result: RunResult) -> None:
        recorder = RunRecorder(self, project, result.run_id)
        recorder.record("server", {"type": "execution_finished", **result.as_record()})
        self.bus.emit(RunFinished(project.id, result))
        failed = result.outcome in (Outcome.FAILED, Outcome.TIMEOUT)
        project.error_details = (result.error or str(result.outcome)) if failed else None
        project.last_active = self.registry.now()
        project.run = None
        self.bus.emit(ProjectChanged(self.hub.snapshot(project)))
        self.registry.save(project)
        self.registry.history(project.id).sync()


class RunRecorder:
    """A run's output as Records: history first, then the event that fans it out."""

    def __init__(self, executor: Executor, project: Project, run_id: str | None) -> None:
        self.executor = executor
        self.project = project
        self.run_id = run_id

    def record(self, direction: str, message: dict[str, Any], raw: bytes | None = None) -> None:
        history = self.executor.registry.history(self.project.id)
        record = history.append(self.run_id, direction, message, raw)
        self.project.last_seq = record.seq
        self.executor.bus.emit(RecordAppended(self.project.id, record))

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
        self.executor.registry.save(project)
        self.executor.bus.emit(SessionChanged(project.id, session_id))

    def finished(self, result: RunResult) -> None:
        self.executor.run_finished(self.project, result)
