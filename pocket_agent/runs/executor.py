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
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger

from pocket_agent.config import Config
from pocket_agent.core.errors import LimitReached, PathRefused
from pocket_agent.core.events import Answered, Cause, EventBus, ProjectChanged
from pocket_agent.core.hub import Hub
from pocket_agent.core.projects import Project
from pocket_agent.core.registry import ProjectRegistry
from pocket_agent.core.storagewatch import StorageWatch, describe
from pocket_agent.history import Record

from .approvals import Approvals
from .asking import Previewer
from .command import apply_policy, build_argv, build_env, find_binary, printable_argv
from .events import (
    KillAnswer,
    RunAccepted,
    RunFinished,
    RunKilled,
    RunStarted,
    SessionReset,
    SessionResetAnswer,
)
from .liverun import LiveRun, boot_id
from .options import RunOptions
from .outcome import Outcome, RunResult, StopReason
from .preview import build_preview
from .ratelimit import ExecutionRate
from .recorder import RunRecorder
from .run import Run
from .runcore import RunCore, Timeouts
from .tree import MARKER, ProcessTree
from .workdir import WorkDir, open_workdir

TreeFactory = Callable[[int], ProcessTree]
RunInThread = Callable[..., "Deferred[Any]"]
SERVER_CRASH = "server_crash"


def pending_end(project_id: str) -> str:
    """The storage watch's key for a run's end that waits for space."""
    return f"end:{project_id}"


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
        storage: StorageWatch | None = None,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        """``run_in_thread`` builds previews off the reactor thread (None: inline)."""
        self.config = config
        self.storage = storage or StorageWatch(config.data_dir, clock, bus)
        self.registry = registry
        self.hub = hub
        self.bus = bus
        self.clock = clock
        self.spawner = spawner
        self.environ = environ
        self.setsid = setsid
        self.tree_factory = tree_factory
        self._waiting: dict[str, list[Deferred[None]]] = {}
        self.execution_rate = ExecutionRate(clock)
        self.run_in_thread = run_in_thread
        self.approvals = Approvals(registry, hub, bus, self.storage.failed)

    def runs(self) -> list[Run]:
        """The active runs (a project's ``run`` is the one source of truth)."""
        return [cast(Run, p.run) for p in self.registry.all() if p.run is not None]

    @property
    def active(self) -> int:
        return len(self.runs())

    # ------------------------------------------------------------------ commands

    def execute(self, cause: Cause, project_id: str, prompt: str, options: RunOptions) -> None:
        """Start a run. Everything that can refuse it is checked, and the run's first
        Records are on disk, before anything is announced; then the project goes
        EXECUTING, the requester is answered (and follows the project from then on,
        joined before or not), and the Records go out. From the answer on, the run
        machine owes an ``execution_finished``, whatever happens."""
        project = self.registry.get(project_id)
        project.ensure_idle()
        limit = self.config.limits.max_concurrent_executions
        if self.active >= limit:
            raise LimitReached(
                f"the server is already running {limit} executions", "executions", limit
            )
        self.execution_rate.check(project_id, self.config.limits.executions_per_minute)
        claude = self.config.claude
        options = apply_policy(
            options, claude.allow_dangerous_options, self.registry.policy.resolve
        )
        binary = find_binary(claude.binary, self.environ.get("PATH"))
        run_id = str(uuid.uuid4())
        approvals = (
            options.approvals or project.settings.approvals or claude.approvals
        ) == "phone"
        # The project's remembered rules first, then the run's own, each once.
        rules = tuple(dict.fromkeys((*project.settings.allowed_tools, *options.allowed_tools)))
        argv = build_argv(
            binary,
            claude,
            attrs.evolve(options, allowed_tools=rules),
            project.session_id,
            approvals=approvals,
        )
        env = build_env(claude, self.environ)
        env[MARKER] = run_id  # inherited by everything the run starts (see runs.tree)
        env["PWD"] = str(project.path)
        timeouts = self.config.timeouts
        workdir = self._open_workdir(project)  # last check: from here it must be closed
        try:
            recorder = RunRecorder(self, project, run_id, workdir)
            first = self._begin(project, recorder, prompt, options, argv)
            run = Run(
                RunCore(
                    run_id,
                    prompt,
                    argv,
                    env,
                    workdir.spawn_path,
                    self.clock,
                    self.spawner,
                    # A zero grace would never arm the escalation; a tenth of a second
                    # still gives claude its chance to answer SIGINT.
                    Timeouts(
                        timeouts.execution,
                        timeouts.no_output,
                        max(timeouts.kill_grace, 0.1),
                        timeouts.permission,
                    ),
                    recorder,
                    self.setsid,
                    self.tree_factory,
                    child_fds=workdir.child_fds(),
                    approvals=approvals,
                    previewer=self._previewer(project),
                )
            )
        except BaseException:
            workdir.close()
            raise
        self.execution_rate.spend(project_id, self.config.limits.executions_per_minute)
        project.run = run
        self.hub.follow(cause.connection_id, project_id)
        self.bus.emit(ProjectChanged(self.hub.snapshot(project)))
        self.bus.emit(Answered(cause, RunAccepted(project_id, run_id)))
        for record in first:
            recorder.publish(record)
        self.bus.emit(RunStarted(project_id, run_id, project.session_id))
        try:
            run.start()
        except Exception:
            # A bug, not a claude failure: the run still ends, and says so.
            self.log.failure("Starting run {run_id} failed", run_id=run_id, project_id=project_id)
            if not run.finished:
                run.core.spawn_error = run.core.spawn_error or "the run could not be started"
                run.force_finish()

    def _previewer(self, project: Project) -> Previewer:
        """A prompt's preview reads the file it would change: off the reactor thread."""

        def preview(tool_name: str, tool_input: Mapping[str, Any]) -> Deferred[Any]:
            if self.run_in_thread is None:
                d = maybeDeferred(build_preview, tool_name, tool_input, project.path)
            else:
                d = self.run_in_thread(build_preview, tool_name, tool_input, project.path)
            return d.addCallback(lambda p: p.to_record() if p is not None else None)

        return preview

    def _open_workdir(self, project: Project) -> WorkDir:
        """The project directory, still the one it was created as; else ERROR."""
        try:
            return open_workdir(project.path, self.registry.policy.resolve)
        except PathRefused as e:
            project.error_details = e.message
            try:
                self.registry.save(project)
            except OSError as oe:
                self.storage.failed(project.id, oe)
            self.bus.emit(ProjectChanged(self.hub.snapshot(project)))
            raise

    def _begin(
        self,
        project: Project,
        recorder: RunRecorder,
        prompt: str,
        options: RunOptions,
        argv: list[str],
    ) -> list[Record]:
        """The durable start of a run: the live-run file (what a crash must clean up),
        the metadata, the prompt and ``execution_started``. A failed write refuses the
        run with STORAGE_ERROR; a Record already written is still published."""
        previous = (project.error_details, project.last_active)
        written: list[Record] = []
        live_written = False
        try:
            self.storage.flush(pending_end(project.id))
            recorder.live.write(LiveRun(recorder.run_id or "", self.clock.seconds(), boot_id()))
            live_written = True
            project.error_details = None
            project.last_active = self.registry.now()
            self.registry.save(project)
            prompt_record = {
                "type": "user_prompt",
                "prompt": prompt,
                "options": options.to_record(),
            }
            written.append(recorder.store("client", prompt_record))
            started = {
                "type": "execution_started",
                "run_id": recorder.run_id,
                "cwd": str(project.path),
                "argv": printable_argv(argv),
            }
            written.append(recorder.store("server", started))
        except OSError as e:
            project.error_details, project.last_active = previous
            if live_written:  # else it may still be the previous run's, waiting for its end
                recorder.live.remove_quietly()
            for record in written:
                recorder.publish(record)
            raise self.storage.failed(project.id, e) from None
        return written

    def kill(self, cause: Cause, project_id: str) -> None:
        """Answered ``killed`` when a run is stopping (now or already), ``idle`` when there
        is none; a kill that starts the escalation is recorded and announced."""
        project = self.registry.get(project_id)
        run = cast(Run | None, project.run)
        if run is None:
            self.bus.emit(Answered(cause, KillAnswer(project_id, "idle")))
            return
        # The answer first, then what the kill does (open prompts resolved, then SIGINT).
        self.bus.emit(Answered(cause, KillAnswer(project_id, "killed")))
        accepted = run.stop_reason in (None, StopReason.INTERRUPT)
        if accepted:
            run.stop(StopReason.USER)
            accepted = run.stop_reason is StopReason.USER
        if accepted:
            data = {"type": "process_killed", "run_id": run.run_id}
            cast(RunRecorder, run.core.sink).server_event(data)
            self.bus.emit(RunKilled(project_id, run.run_id))

    def new_session(self, cause: Cause, project_id: str) -> None:
        """The next run starts a new Claude session instead of resuming."""
        project = self.registry.get(project_id)
        project.ensure_idle()
        old = project.session_id
        data = {"type": "session_reset", "old_session_id": old}
        try:
            self.storage.flush(pending_end(project.id))
            project.session_id = None
            self.registry.save(project)
            record = RunRecorder(self, project, None).store("server", data)
        except OSError as e:
            project.session_id = old
            raise self.storage.failed(project.id, e) from None
        self.bus.emit(Answered(cause, SessionResetAnswer(project_id, old)))
        RunRecorder(self, project, None).publish(record)
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

    def storage_failed(self, recorder: RunRecorder, error: OSError) -> None:
        """A run's Record could not be written: the run stops (SPEC §5 escalation) and
        fails; its followers and the log hear of it once."""
        project = recorder.project
        self.storage.failed(project.id, error)
        run = cast(Run | None, project.run)
        if run is None or run.run_id != recorder.run_id or run.core.storage_error is not None:
            return
        run.core.storage_error = f"the history of this run could not be written: {describe(error)}"
        run.stop(StopReason.STORAGE)

    def run_finished(self, project: Project, result: RunResult, recorder: RunRecorder) -> None:
        """Record and announce the end; whatever fails here (a full disk), the project
        leaves EXECUTING, its followers hear of the end, and anyone waiting for the run
        hears of it too."""
        try:
            self._report_end(project, result, recorder)
        finally:
            recorder.close()
            if project.run is not None and project.run.run_id == result.run_id:
                project.run = None
                project.error_details = "the end of the run could not be recorded"
            for d in self._waiting.pop(project.id, []):
                d.callback(None)

    def _report_end(self, project: Project, result: RunResult, recorder: RunRecorder) -> None:
        end = {"type": "execution_finished", **result.as_record()}
        try:
            record: Record | None = recorder.store("server", end)
        except OSError as e:
            record = None
            self.storage.failed(project.id, e)
            self.storage.later(pending_end(project.id), lambda: recorder.finish_later(end))
        if record is not None:
            recorder.publish(record)
        self.bus.emit(RunFinished(project.id, result))
        failed = result.outcome in (Outcome.FAILED, Outcome.TIMEOUT)
        project.error_details = (result.error or str(result.outcome)) if failed else None
        if recorder.lost:
            project.error_details = (
                f"{result.error or 'the history could not be written'}; "
                f"{recorder.lost} records of this run were not stored"
            )
        elif record is None:
            reason = self.storage.reason or "the data directory refused the write"
            project.error_details = f"the end of the run could not be recorded yet: {reason}"
        project.last_active = self.registry.now()
        project.run = None
        recorder.close()
        self.bus.emit(ProjectChanged(self.hub.snapshot(project)))
        try:
            self.registry.save(project)
            if record is not None:
                self.registry.history(project.id).sync()
                recorder.live.remove()
        except OSError as e:
            self.storage.failed(project.id, e)
