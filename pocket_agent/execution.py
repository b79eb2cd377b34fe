"""Runs in projects: start them, turn their output into Records, fan Records out.

The flow of one prompt::

    Session -> Executor.execute -> Run (process) -> _RunSink -> History.append
                                                          \\-> PocketAgent.publish

Every Record goes to the project's history first and then, as ``agent_message``,
to every connection that follows the project, in seq order.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .command import build_argv, build_env, find_binary, parse_options, printable_argv
from .processes import ProcessTree
from .protocol import (
    AgentMessage,
    ErrorCode,
    Message,
    ProjectStatus,
    ProtocolError,
    error_message,
    project_state_message,
)
from .runs import Outcome, Run, RunResult, RunState, StopReason, Timeouts

if TYPE_CHECKING:
    from .config import Config
    from .projects import Project
    from .server import Peer, PocketAgent


class Executor:
    log = Logger()

    def __init__(self, agent: PocketAgent, reactor: Any) -> None:
        self.agent = agent
        self.reactor = reactor
        self.runs: dict[str, Run] = {}  # project id -> its active run
        self._waiting: dict[str, list[Deferred[None]]] = {}
        self.setsid = shutil.which("setsid")
        if self.setsid is None:
            self.log.warn("No setsid (util-linux): claude will share the server's process group")
        self.environ: dict[str, str] = dict(os.environ)
        self.tree_factory: Callable[[int], ProcessTree] | None = None  # tests inject fakes
        self.probe_versions = True
        self._versions: dict[str, str | None] = {}

    @property
    def config(self) -> Config:
        return self.agent.config

    @property
    def active(self) -> int:
        return len(self.runs)

    def claude_status(self) -> dict[str, Any]:
        """For ``health``: can we run claude, where is it, which version (probed once per
        path in the background: the first health report after a change says null)."""
        try:
            path = find_binary(self.config.claude.binary, self.environ.get("PATH"))
        except ProtocolError as e:
            return {"available": False, "path": None, "version": None, "reason": e.message}
        if path not in self._versions and self.probe_versions:
            self._versions[path] = None
            probe_version(self.reactor, path, self.environ).addCallback(
                lambda version: self._versions.__setitem__(path, version)
            )
        return {"available": True, "path": path, "version": self._versions.get(path)}

    # ------------------------------------------------------------------ requests

    def execute(
        self,
        project_id: str,
        prompt: str,
        raw_options: Any,
        acknowledge: Callable[[str], None],
        requester: Peer | None = None,
    ) -> str:
        """Start a run; ``acknowledge(run_id)`` is called after the EXECUTING state goes
        out and before the first Record, so the requester sees them in that order. The
        requester follows the project from then on, joined or not before."""
        registry = self.agent.registry
        project = registry.get(project_id)
        self.ensure_idle(project_id)
        limit = self.config.limits.max_concurrent_executions
        if len(self.runs) >= limit:
            raise ProtocolError(
                ErrorCode.RESOURCE_LIMIT,
                f"the server is already running {limit} executions",
                {"resource": "executions", "limit": limit},
            )
        claude = self.config.claude
        options = parse_options(
            raw_options, claude.allow_dangerous_options, registry.policy.resolve
        )
        binary = find_binary(claude.binary, self.environ.get("PATH"))
        run_id = str(uuid.uuid4())
        argv = build_argv(binary, claude, options, project.session_id)
        timeouts = self.config.timeouts
        # A zero grace would never arm the escalation; a tenth of a second still gives
        # claude its chance to answer SIGINT.
        grace = max(timeouts.kill_grace, 0.1)
        sink = _RunSink(self, project, run_id)
        run = Run(
            run_id,
            prompt,
            argv,
            build_env(claude, self.environ),
            project.path,
            self.reactor,
            Timeouts(timeouts.execution, timeouts.no_output, grace),
            sink,
            self.setsid,
            self.tree_factory,
        )
        self.runs[project_id] = run
        try:
            if requester is not None:
                self.agent.join(requester, project_id)
            project.status = ProjectStatus.EXECUTING
            project.error_details = None
            project.last_active = registry.now()
            registry.save(project)
            self.agent.publish(project_id, project_state_message(self.agent.state_of(project)))
            acknowledge(run_id)
            prompt_record = {"type": "user_prompt", "prompt": prompt, "options": options.to_wire()}
            sink.record("client", prompt_record)
            started = {"type": "execution_started", "run_id": run_id, "cwd": str(project.path)}
            sink.record("server", {**started, "argv": printable_argv(argv)})
            self.log.info(
                "Execution started",
                project_id=project_id,
                run_id=run_id,
                resume=project.session_id,
            )
            run.start()
        except Exception:
            # A bug or a full disk, not a claude failure: leave the project usable.
            if run.transport is None and run.state is not RunState.FINISHED:
                self.runs.pop(project_id, None)
                project.status = ProjectStatus.IDLE
                self.agent.publish(project_id, project_state_message(self.agent.state_of(project)))
            raise
        return run_id

    def kill(self, project_id: str) -> str:
        """``killed`` when a run was stopping or is now, ``idle`` when there was none."""
        self.agent.registry.get(project_id)
        run = self.runs.get(project_id)
        if run is None:
            return "idle"
        if run.stop_reason is None:
            self.log.info("Kill requested", project_id=project_id, run_id=run.run_id)
            run.stop(StopReason.USER)
        return "killed"

    def announce_kill(self, project_id: str) -> None:
        run = self.runs.get(project_id)
        if run is None or run.stop_reason is not StopReason.USER or run.kill_announced:
            return
        run.kill_announced = True
        data = {"type": "process_killed", "run_id": run.run_id}
        _RunSink(self, self.agent.registry.get(project_id), run.run_id).record("server", data)
        self.agent.publish(project_id, Message("process_killed", data, project_id=project_id))

    def ensure_idle(self, project_id: str) -> None:
        """PROCESS_ACTIVE while a run is active (second execute, delete, new session)."""
        run = self.runs.get(project_id)
        if run is not None:
            raise ProtocolError(
                ErrorCode.PROCESS_ACTIVE,
                "a run is active in this project; kill it first",
                {"project_id": project_id, "run_id": run.run_id},
            )

    def new_session(self, project_id: str) -> str | None:
        registry = self.agent.registry
        project = registry.get(project_id)
        self.ensure_idle(project_id)
        old, project.session_id = project.session_id, None
        registry.save(project)
        return old

    def announce_new_session(self, project_id: str, old_session_id: str | None) -> None:
        project = self.agent.registry.get(project_id)
        data = {"type": "session_reset", "old_session_id": old_session_id}
        _RunSink(self, project, None).record("server", data)
        self.agent.publish(project_id, Message("session_reset", data, project_id=project_id))
        self.agent.publish(project_id, project_state_message(self.agent.state_of(project)))

    # ------------------------------------------------------------------ shutdown

    def stop_all(self, reason: StopReason = StopReason.SHUTDOWN) -> Deferred[Any]:
        """Stop every run with the escalation; fires when all have finished."""
        waits = [self.finished(pid) for pid in list(self.runs)]
        for run in list(self.runs.values()):
            run.stop(reason)
        return DeferredList(waits) if waits else succeed(None)

    def force_kill_all(self) -> None:
        """Shutdown is running out of time: SIGKILL everything that is left at once."""
        for run in list(self.runs.values()):
            if run.stop_reason is None:
                run.stop(StopReason.SHUTDOWN)
            run.kill_now()

    def force_finish_all(self) -> None:
        """Shutdown is out of time: record every run as ended with what we know."""
        for run in list(self.runs.values()):
            run.force_finish()

    def finished(self, project_id: str) -> Deferred[None]:
        if project_id not in self.runs:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(project_id, []).append(d)
        return d

    # -------------------------------------------------------------- from a run

    def _run_finished(self, project: Project, result: RunResult) -> None:
        """Record and announce the end; whatever fails here (a full disk), the project
        leaves EXECUTING and anyone waiting for the run hears of its end."""
        try:
            self._report_end(project, result)
        finally:
            self.runs.pop(project.id, None)
            if project.status is ProjectStatus.EXECUTING:
                project.status = ProjectStatus.ERROR
                project.error_details = "the end of the run could not be recorded"
            for d in self._waiting.pop(project.id, []):
                d.callback(None)

    def _report_end(self, project: Project, result: RunResult) -> None:
        registry = self.agent.registry
        sink = _RunSink(self, project, result.run_id)
        sink.record("server", {"type": "execution_finished", **result.to_wire()})
        self.agent.publish(
            project.id, Message("execution_finished", result.to_wire(), project_id=project.id)
        )
        code = _ERROR_CODES.get(result.outcome)
        if result.spawn_failed:
            code = ErrorCode.CLAUDE_NOT_FOUND
        if code is not None:
            error = ProtocolError(
                code, result.error or str(result.outcome), {"run_id": result.run_id}
            )
            self.agent.publish(project.id, error_message(error, project_id=project.id))
        failed = result.outcome in (Outcome.FAILED, Outcome.TIMEOUT)
        project.status = ProjectStatus.ERROR if failed else ProjectStatus.IDLE
        project.error_details = result.error if failed else None
        project.last_active = registry.now()
        self.runs.pop(project.id, None)
        self.agent.publish(project.id, project_state_message(self.agent.state_of(project)))
        registry.save(project)
        registry.history(project.id).sync()
        self.log.info(
            "Execution completed",
            project_id=project.id,
            run_id=result.run_id,
            status=str(result.outcome),
            duration_ms=result.duration_ms,
            exit_code=result.exit_code,
            signal=result.signal,
            cost_usd=result.cost_usd,
            error=result.error,
        )


class _VersionProbe(ProcessProtocol):
    def __init__(self, done: Deferred[str | None]) -> None:
        self.done = done
        self.out = b""

    def outReceived(self, data: bytes) -> None:
        self.out = (self.out + data)[:4096]

    def processEnded(self, reason: Failure) -> None:
        text = self.out.decode("utf-8", "replace").strip().splitlines()
        if not self.done.called:
            self.done.callback(text[0] if text and reason.check(ProcessDone) else None)


def probe_version(
    reactor: Any, path: str, environ: dict[str, str], timeout: float = 10.0
) -> Deferred[str | None]:
    """``claude --version`` without blocking the reactor; None if it fails or hangs."""
    done: Deferred[str | None] = Deferred()
    protocol = _VersionProbe(done)
    try:
        transport = reactor.spawnProcess(protocol, path, [path, "--version"], env=environ)
    except OSError:
        return succeed(None)

    def give_up() -> None:
        if not done.called:
            done.callback(None)
            try:
                transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass

    timer = reactor.callLater(timeout, give_up)
    done.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
    return done


_ERROR_CODES = {
    Outcome.FAILED: ErrorCode.EXECUTION_FAILED,
    Outcome.TIMEOUT: ErrorCode.EXECUTION_TIMEOUT,
}


class _RunSink:
    """A run's output as Records: history first, then every follower."""

    def __init__(self, executor: Executor, project: Project, run_id: str | None) -> None:
        self.executor = executor
        self.project = project
        self.run_id = run_id

    def record(self, direction: str, message: dict[str, Any], raw: bytes | None = None) -> None:
        agent = self.executor.agent
        record = agent.registry.history(self.project.id).append(
            self.run_id, direction, message, raw
        )
        self.project.last_seq = record.seq
        agent.publish(self.project.id, AgentMessage(self.project.id, record.line))

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
        project = self.project
        if session_id == project.session_id:
            return
        project.session_id = session_id
        self.executor.agent.registry.save(project)
        self.executor.agent.publish(
            project.id,
            Message("project_update", {"session_id": session_id}, project_id=project.id),
        )

    def finished(self, result: RunResult) -> None:
        self.executor._run_finished(self.project, result)
