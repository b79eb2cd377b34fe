"""One Claude run: spawn, stream, decide the outcome, and kill everything it started.

A run is a small explicit state machine::

    STARTING -> RUNNING -> STOPPING -> FINISHED
         \\________\\_________________/^

with exactly one terminal :class:`RunResult`. It knows nothing of WebSocket or of
history files: it hands every line to a :class:`RunSink` and reports its end once.
(``AWAITING_PERMISSION`` will sit beside RUNNING when phone approvals land: the
stdin channel stays open for exactly that.)
"""

from __future__ import annotations

import enum
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .processes import SIGNAL_NAMES, ProcessTree
from .streamjson import LineSplitter, parse_line, user_message

STDERR_KEEP = 64 * 1024
SWEEP_POLL = 0.05
SCAN_INTERVAL = 1.0


class RunState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    KILLED = "killed"


class StopReason(enum.StrEnum):
    USER = "user"  # agent_kill
    TIMEOUT = "timeout"  # timeouts.execution
    NO_OUTPUT = "no_output"  # timeouts.no_output
    SHUTDOWN = "shutdown"
    LINGERING = "lingering"  # printed its result but did not exit


@attrs.frozen
class RunResult:
    run_id: str
    outcome: Outcome
    exit_code: int | None
    signal: str | None
    duration_ms: int
    cost_usd: float | None
    session_id: str | None
    error: str | None = None
    reason: str | None = None
    spawn_failed: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "run_id": self.run_id,
            "outcome": str(self.outcome),
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration_ms": self.duration_ms,
            "cost_usd": self.cost_usd,
            "session_id": self.session_id,
        }
        if self.error is not None:
            wire["error"] = self.error
        if self.reason is not None:
            wire["reason"] = self.reason
        return wire


class RunSink(Protocol):
    """Where a run's output goes (the executor: history + followers)."""

    def claude_line(self, message: dict[str, Any], raw: bytes) -> None: ...

    def server_event(self, message: dict[str, Any]) -> None: ...

    def session_seen(self, session_id: str) -> None: ...

    def finished(self, result: RunResult) -> None: ...


@attrs.frozen
class Timeouts:
    execution: float
    no_output: float
    kill_grace: float


_TRANSITIONS = {
    RunState.STARTING: {RunState.RUNNING, RunState.FINISHED},
    RunState.RUNNING: {RunState.STOPPING, RunState.FINISHED},
    RunState.STOPPING: {RunState.FINISHED},
    RunState.FINISHED: set(),
}


class Run:
    log = Logger()

    def __init__(
        self,
        run_id: str,
        prompt: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        reactor: Any,
        timeouts: Timeouts,
        sink: RunSink,
        setsid: str | None,
        tree_factory: Callable[[int], ProcessTree] | None = None,
    ) -> None:
        self.run_id = run_id
        self.prompt = prompt
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.reactor = reactor
        self.timeouts = timeouts
        self.sink = sink
        self.setsid = setsid
        # setsid makes claude the leader of a new session and group: pgid == pid.
        self.tree_factory = tree_factory or (lambda pid: ProcessTree(pid, pid))
        self.kill_announced = False
        self.state = RunState.STARTING
        self.stop_reason: StopReason | None = None
        self.result_line: dict[str, Any] | None = None
        self.session_id: str | None = None
        self.tree: ProcessTree | None = None
        self.transport: IProcessTransport | None = None
        self._started = time.monotonic()
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._exit: tuple[int | None, str | None] | None = None
        self._output_closed = False
        self._swept = False
        self._sweep_started = False
        self._sweep_killed = False
        self._stopped_after_result = False
        self._flush_output: Callable[[], None] = lambda: None
        self._timers: dict[str, IDelayedCall] = {}
        self._scanner: LoopingCall | None = None

    # --------------------------------------------------------------- state machine

    def _enter(self, state: RunState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"run {self.run_id}: {self.state.value} -> {state.value}")
        self.state = state

    @property
    def active(self) -> bool:
        return self.state is not RunState.FINISHED

    # ---------------------------------------------------------------------- start

    def start(self) -> None:
        argv = [self.setsid, *self.argv] if self.setsid else list(self.argv)
        # RUNNING first: a claude that dies at once is reaped inside spawnProcess, and
        # its exit must find a run that knows its transport (set in connectionMade).
        self._enter(RunState.RUNNING)
        try:
            IReactorProcess(self.reactor).spawnProcess(
                _ClaudeProtocol(self), argv[0], argv, env=self.env, path=str(self.cwd)
            )
        except OSError as e:
            self._finish(
                self._result(Outcome.FAILED, error=f"cannot start claude: {e}", spawn_failed=True)
            )
            return
        if self._exit is not None:
            return
        assert self.transport is not None and self.tree is not None
        self.transport.write(user_message(self.prompt))
        self._arm("execution", self.timeouts.execution, self.stop, StopReason.TIMEOUT)
        self._arm_watchdog()
        self._scanner = LoopingCall(self.tree.record)
        self._scanner.clock = self.reactor
        self._scanner.start(SCAN_INTERVAL, now=False)

    def _connected(self, transport: IProcessTransport) -> None:
        self.transport = transport
        assert transport.pid is not None
        self.tree = self.tree_factory(transport.pid)

    # ------------------------------------------------------------------- output

    def _line(self, line: bytes) -> None:
        if self.state is RunState.FINISHED:
            return
        message = parse_line(line)
        if message is None:
            text = line.decode("utf-8", "replace")
            self.sink.server_event({"type": "raw_output", "line": text})
            return
        self.sink.claude_line(message, line)
        session_id = message.get("session_id")
        if (
            message.get("type") in ("system", "result")
            and isinstance(session_id, str)
            and session_id
        ):
            if session_id != self.session_id:
                self.session_id = session_id
                self.sink.session_seen(session_id)
        if message.get("type") == "result" and self.result_line is None:
            self.result_line = message
            self._turn_done()

    def _overlong(self, head: bytes, size: int) -> None:
        self.sink.server_event(
            {
                "type": "raw_output",
                "line": head[:1024].decode("utf-8", "replace"),
                "truncated_from": size,
            }
        )

    def _stderr_data(self, data: bytes) -> None:
        self._stderr.append(data)
        self._stderr_size += len(data)
        while self._stderr_size - len(self._stderr[0]) >= STDERR_KEEP:
            self._stderr_size -= len(self._stderr.popleft())
        self.sink.server_event({"type": "stderr", "text": data.decode("utf-8", "replace")})

    def _activity(self) -> None:
        self._arm_watchdog()

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr)[-STDERR_KEEP:].decode("utf-8", "replace")

    def _turn_done(self) -> None:
        """A result ends the turn: close stdin (the CLI exits once it closes) and give it
        ``kill_grace`` to wind down before the escalation."""
        if self.transport is not None:
            self.transport.closeStdin()
        self._cancel("watchdog", "execution")  # the turn is done: the result decides now
        self._arm("linger", self.timeouts.kill_grace, self.stop, StopReason.LINGERING)

    # --------------------------------------------------------------------- stop

    def stop(self, reason: StopReason) -> None:
        """Begin the escalation: SIGINT to claude, then SIGTERM, then SIGKILL to all."""
        if self.state is not RunState.RUNNING or self._exit is not None:
            return  # already stopping, or claude is gone and only the sweep is left
        self._enter(RunState.STOPPING)
        self.stop_reason = reason
        self._stopped_after_result = self.result_line is not None
        self._cancel("execution", "watchdog", "linger")
        self.log.info("Stopping run {run_id} ({reason})", run_id=self.run_id, reason=reason.value)
        assert self.tree is not None
        self.tree.record()
        self.tree.signal_leader(signal.SIGINT)
        self._arm("escalate", self.timeouts.kill_grace, self._escalate, signal.SIGTERM)

    def kill_now(self) -> None:
        """Skip the grace periods (shutdown is out of time)."""
        if self.state is RunState.STOPPING and self._exit is None:
            self._cancel("escalate")
            self._escalate(signal.SIGKILL)

    def _escalate(self, signum: int) -> None:
        assert self.tree is not None
        if self._exit is None:
            self.tree.record()
        self.tree.signal_all(signum)
        if signum == signal.SIGTERM:
            self._arm("escalate", self.timeouts.kill_grace, self._escalate, signal.SIGKILL)
        else:
            # Nothing outlives SIGKILL; if the pipes still do not close, give up on them.
            self._arm("abandon", self.timeouts.kill_grace, self._abandon_output)

    # ------------------------------------------------------------------ the end

    def _exited(self, exit_code: int | None, signum: int | None) -> None:
        if self.state is RunState.FINISHED:
            return  # force-finished at shutdown; nothing is waiting for this any more
        self._exit = (exit_code, SIGNAL_NAMES.get(signum) if signum else None)
        if self.tree is not None:
            self.tree.leader_gone = True  # reaped: its pid is free for others now
        if self._scanner is not None and self._scanner.running:
            self._scanner.stop()
        self._cancel("execution", "watchdog", "linger", "escalate")
        self._sweep(deadline=self.reactor.seconds() + self.timeouts.kill_grace)

    def _sweep(self, deadline: float) -> None:
        """After claude is gone, end whatever it left behind: TERM, then KILL at the deadline."""
        assert self.tree is not None
        if not self.tree.remaining():
            self._swept = True
            if not self._output_closed:
                # Pipes held open by something that is not ours any more: stop waiting.
                self._arm("abandon", self.timeouts.kill_grace, self._abandon_output)
            self._maybe_finish()
            return
        if self.reactor.seconds() >= deadline:
            if self._sweep_killed:
                # Not ours to kill (EPERM), or stuck in the kernel: say so, do not hang.
                self.log.error(
                    "Run {run_id}: processes survived SIGKILL: {pids}",
                    run_id=self.run_id,
                    pids=sorted(self.tree.remaining()),
                )
                self._swept = True
                self._arm("abandon", self.timeouts.kill_grace, self._abandon_output)
                self._maybe_finish()
                return
            self._sweep_killed = True
            self.tree.signal_all(signal.SIGKILL)
            deadline = self.reactor.seconds() + self.timeouts.kill_grace
        elif not self._sweep_started:
            self._sweep_started = True
            self.tree.signal_all(signal.SIGTERM)
        self._arm("sweep", SWEEP_POLL, self._sweep, deadline)

    def _output_ended(self) -> None:
        if self._output_closed:
            return
        self._output_closed = True
        self._flush_output()  # a last line without \n still counts
        self._maybe_finish()

    def _abandon_output(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
        self._output_ended()

    def force_finish(self) -> None:
        """Shutdown is out of time: report what we know and stop waiting."""
        if self.state is RunState.FINISHED:
            return
        if self._exit is None:
            self._exit = (None, None)
        self._flush_output()
        self._finish(self._decide())

    def _maybe_finish(self) -> None:
        if self.state is RunState.FINISHED or self._exit is None:
            return
        if not (self._swept and self._output_closed):
            return
        self._finish(self._decide())

    def _finish(self, result: RunResult) -> None:
        self._enter(RunState.FINISHED)
        self._cancel(*list(self._timers))
        if self._scanner is not None and self._scanner.running:
            self._scanner.stop()
        try:
            self.sink.finished(result)
        except Exception:
            self.log.failure("Reporting the end of run {run_id} failed", run_id=self.run_id)

    def _decide(self) -> RunResult:
        exit_code, signame = self._exit or (None, None)
        reason = self.stop_reason
        result = self.result_line
        if result is not None and self._stopped_after_result:
            # SPEC §5: a run that printed its result is decided by it, even when the
            # process then lingered or was stopped on the way out.
            if result.get("is_error"):
                return self._result(Outcome.FAILED, error=_result_error(result))
            return self._result(Outcome.SUCCESS)
        if reason in (StopReason.USER, StopReason.SHUTDOWN):
            return self._result(Outcome.KILLED, reason=reason.value)
        if reason in (StopReason.TIMEOUT, StopReason.NO_OUTPUT):
            limit = (
                self.timeouts.execution
                if reason is StopReason.TIMEOUT
                else self.timeouts.no_output
            )
            what = "the run" if reason is StopReason.TIMEOUT else "no output"
            return self._result(
                Outcome.TIMEOUT, error=f"{what} exceeded {limit:g}s", reason=reason.value
            )
        if result is not None:
            if result.get("is_error"):
                return self._result(Outcome.FAILED, error=_result_error(result))
            if exit_code == 0:
                return self._result(Outcome.SUCCESS)
        detail = self.stderr_tail.strip().splitlines()[-1:] or [""]
        if signame:
            error = f"claude was killed by {signame}"
        elif exit_code == 0:
            error = "claude exited without a result"
        else:
            error = f"claude exited with status {exit_code}"
        return self._result(Outcome.FAILED, error=f"{error}: {detail[0]}" if detail[0] else error)

    def _result(
        self,
        outcome: Outcome,
        error: str | None = None,
        reason: str | None = None,
        spawn_failed: bool = False,
    ) -> RunResult:
        exit_code, signame = self._exit or (None, None)
        cost = (self.result_line or {}).get("total_cost_usd")
        return RunResult(
            run_id=self.run_id,
            outcome=outcome,
            exit_code=exit_code,
            signal=signame,
            duration_ms=int((time.monotonic() - self._started) * 1000),
            cost_usd=float(cost)
            if isinstance(cost, int | float) and not isinstance(cost, bool)
            else None,
            session_id=self.session_id,
            error=error,
            reason=reason,
            spawn_failed=spawn_failed,
        )

    # ------------------------------------------------------------------- timers

    def _arm(self, name: str, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self._cancel(name)
        if delay > 0:
            self._timers[name] = self.reactor.callLater(delay, self._fire, name, fn, *args)

    def _fire(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        self._timers.pop(name, None)
        fn(*args)

    def _cancel(self, *names: str) -> None:
        for name in names:
            timer = self._timers.pop(name, None)
            if timer is not None and timer.active():
                timer.cancel()

    def _arm_watchdog(self) -> None:
        if self.state is RunState.RUNNING and self.result_line is None:
            self._arm("watchdog", self.timeouts.no_output, self.stop, StopReason.NO_OUTPUT)


def _result_error(result: dict[str, Any]) -> str:
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    text = result.get("result")
    if isinstance(text, str) and text:
        return text
    return f"claude reported an error ({result.get('subtype', 'unknown')})"


class _ClaudeProtocol(ProcessProtocol):
    """Bytes in, calls on the Run out; nothing else."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.splitter = LineSplitter(run._line, run._overlong)
        run._flush_output = self.splitter.finish

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.run._connected(self.transport)

    def outReceived(self, data: bytes) -> None:
        self.run._activity()
        self.splitter.feed(data)

    def errReceived(self, data: bytes) -> None:
        self.run._activity()
        self.run._stderr_data(data)

    def processExited(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone):
            self.run._exited(0, None)
        elif isinstance(value, ProcessTerminated):
            self.run._exited(value.exitCode, value.signal)
        else:  # pragma: no cover - Twisted only reports those two
            self.run._exited(None, None)

    def processEnded(self, reason: Failure) -> None:
        self.run._output_ended()


__all__ = [
    "Outcome",
    "ProcessExitedAlready",
    "Run",
    "RunResult",
    "RunSink",
    "RunState",
    "StopReason",
]
