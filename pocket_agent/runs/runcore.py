"""What a run is and what it has learnt: the facts shared by all of its states.

Output handling (lines to Records, the session id, the stderr tail) and the outcome
decision live here; *when* things happen is the machine's (:mod:`.machine`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
from twisted.internet.defer import succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .asking import ControlInputs, Previewer, PromptSink, RunPrompts
from .channel import StdinChannel
from .control import interrupt_line
from .deadline import Deadline
from .outcome import Exit, Outcome, RunResult, StopReason, result_cost, result_error
from .prompts import OpenPrompts
from .streamjson import parse_line
from .tree import ProcessTree

STDERR_KEEP = 64 * 1024
_KILLS = (StopReason.USER, StopReason.SHUTDOWN)
SCAN_INTERVAL = 1.0


class LineInputs(ControlInputs, Protocol):
    """The machine inputs claude's stdout drives through the core."""

    def result_seen(self) -> None: ...


class RunSink(PromptSink, Protocol):
    """Where a run's output goes (the executor: history, then followers)."""

    def claude_line(self, message: dict[str, Any], raw: bytes) -> None: ...

    def server_event(self, message: dict[str, Any]) -> None: ...

    def session_seen(self, session_id: str) -> None: ...

    def processes_seen(self, tree: ProcessTree) -> None:
        """Claude was spawned, or a new descendant was recorded (crash-proof it)."""

    def finished(self, result: RunResult) -> None: ...


@attrs.frozen
class Timeouts:
    execution: float
    no_output: float
    kill_grace: float
    permission: float = 0.0  # 0: a prompt waits for its answer as long as the run lives


@attrs.define
class Clocks:
    """The agent's time: ``execution`` and the ``no_output`` watchdog, paused while a
    human decides and cancelled for good once the turn is over."""

    execution: Deadline
    no_output: Deadline

    def start(self) -> None:
        self.execution.start()
        self.no_output.start()

    def pause(self) -> None:
        self.execution.pause()
        self.no_output.pause()

    def cancel(self) -> None:
        self.execution.cancel()
        self.no_output.cancel()


@attrs.frozen
class StopInfo:
    reason: StopReason
    after_result: bool  # a stop on the way out after a result: the result decides


class RunCore:
    """What a run is and what it has learnt, shared by all of its states."""

    log = Logger()

    def __init__(
        self,
        run_id: str,
        prompt: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str | Path,
        clock: IReactorTime,
        spawner: IReactorProcess,
        timeouts: Timeouts,
        sink: RunSink,
        setsid: str | None,
        tree_factory: Callable[[int], ProcessTree] | None = None,
        child_fds: dict[int, int | str] | None = None,
        approvals: bool = False,
        previewer: Previewer | None = None,
    ) -> None:
        """``child_fds``: ``spawnProcess``'s ``childFDs`` (None: stdin, stdout, stderr).
        ``approvals``: claude runs with ``--permission-prompt-tool stdio``, so its prompts
        come to us and an interrupt is a control request; ``previewer`` builds a
        prompt's preview (off the reactor thread, in the server)."""
        self.run_id = run_id
        self.child_fds = child_fds
        self.prompt = prompt
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.clock = clock
        self.spawner = spawner
        self.timeouts = timeouts
        self.sink = sink
        self.setsid = setsid
        # setsid makes claude the leader of a new session and group: pgid == pid.
        self.tree_factory = tree_factory or (lambda pid: ProcessTree(pid, pid, marker=run_id))
        self.started_at = clock.seconds()
        self.transport: IProcessTransport | None = None
        self.tree: ProcessTree | None = None
        self.stdin: StdinChannel | None = None
        self.session_id: str | None = None
        self.result_line: dict[str, Any] | None = None
        self.spawn_error: str | None = None
        self.storage_error: str | None = None  # its Records could not all be written
        self.exit: Exit | None = None
        self.stop: StopInfo | None = None
        self.output_is_closed = False
        self.finished = False
        self.result: RunResult | None = None
        self.flush_output: Callable[[], None] = lambda: None
        self.watchdog: Deadline | None = None  # the running state's no_output deadline
        self._abandon: IDelayedCall | None = None
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._scanner: LoopingCall | None = None
        self.approvals = approvals
        self.clocks: Clocks | None = None  # made when the turn starts running
        self.asking = RunPrompts(
            run_id,
            clock,
            timeouts.permission,
            sink,
            previewer or (lambda tool, tool_input: succeed(None)),
        )
        self.interrupted = False  # an interrupt was accepted before the result

    # ----------------------------------------------------------------- process

    def spawn(self, protocol: ProcessProtocol) -> None:
        argv = [self.setsid, *self.argv] if self.setsid else list(self.argv)
        self.spawner.spawnProcess(
            protocol, argv[0], argv, env=self.env, path=str(self.cwd), childFDs=self.child_fds
        )

    def connected(self, transport: IProcessTransport) -> None:
        self.transport = transport
        self.stdin = self.asking.stdin = StdinChannel(transport)
        assert transport.pid is not None
        self.tree = self.tree_factory(transport.pid)
        self.tree.record()
        self.sink.processes_seen(self.tree)

    def record_tree(self) -> None:
        assert self.tree is not None
        if self.tree.record():
            self.sink.processes_seen(self.tree)

    def start_scanning(self) -> None:
        assert self.tree is not None
        self._scanner = LoopingCall(self.record_tree)
        self._scanner.clock = self.clock
        self._scanner.start(SCAN_INTERVAL, now=False)

    def stop_scanning(self) -> None:
        if self._scanner is not None and self._scanner.running:
            self._scanner.stop()

    def signal_leader(self, signum: int) -> None:
        assert self.tree is not None
        self.record_tree()
        self.tree.signal_leader(signum)

    def signal_all(self, signum: int) -> None:
        assert self.tree is not None
        if self.exit is None:
            self.record_tree()
        self.tree.signal_all(signum)

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> IDelayedCall:
        return self.clock.callLater(delay, fn, *args)

    # ------------------------------------------------------------------- output

    def activity(self) -> None:
        """Output arrived: the no-output watchdog starts over (a no-op once it is over)."""
        if self.watchdog is not None:
            self.watchdog.touch()

    def line(self, machine: LineInputs, raw: bytes) -> None:
        if self.finished:
            return
        message = parse_line(raw)
        if message is None:
            text = raw.decode("utf-8", "replace")
            self.sink.server_event({"type": "raw_output", "line": text})
            return
        self.sink.claude_line(message, raw)
        if message.get("type") in ("control_request", "control_cancel_request"):
            self.asking.control(machine, message)
            return
        session_id = message.get("session_id")
        if (
            message.get("type") in ("system", "result")
            and isinstance(session_id, str)
            and session_id
            and session_id != self.session_id
        ):
            self.session_id = session_id
            self.sink.session_seen(session_id)
        if message.get("type") == "result" and self.result_line is None:
            self.result_line = message
            machine.result_seen()

    def send_interrupt(self) -> None:
        self.interrupted = True
        if self.stdin is not None:
            self.stdin.write_line(interrupt_line())

    def overlong(self, head: bytes, size: int) -> None:
        if self.finished:
            return
        self.sink.server_event(
            {
                "type": "raw_output",
                "line": head[:1024].decode("utf-8", "replace"),
                "truncated_from": size,
            }
        )

    def stderr(self, data: bytes) -> None:
        if self.finished:
            return
        self._stderr.append(data)
        self._stderr_size += len(data)
        while self._stderr_size - len(self._stderr[0]) >= STDERR_KEEP:
            self._stderr_size -= len(self._stderr.popleft())
        self.sink.server_event({"type": "stderr", "text": data.decode("utf-8", "replace")})

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr)[-STDERR_KEEP:].decode("utf-8", "replace")

    def output_ended(self) -> bool:
        """The pipes closed (or we gave up on them); True the first time."""
        if self.output_is_closed:
            return False
        self.output_is_closed = True
        self.flush_output()  # a last line without \n still counts
        return True

    # ------------------------------------------------------------------ the end

    def abandon_later(self, abandon: Callable[[], None]) -> None:
        """After SIGKILL: stop waiting for the pipes ``kill_grace`` from now."""
        self._abandon = self.later(self.timeouts.kill_grace, abandon)

    @property
    def prompts(self) -> OpenPrompts:
        return self.asking.open

    def conclude(self) -> None:
        """Decide and report the one outcome; called on entering ``finished`` only."""
        self.finished = self.asking.closed = True
        self.stop_scanning()
        if self._abandon is not None and self._abandon.active():
            self._abandon.cancel()
        self.result = self.decide()
        try:
            self.sink.finished(self.result)
        except Exception:
            self.log.failure("Reporting the end of run {run_id} failed", run_id=self.run_id)

    def decide(self) -> RunResult:
        if self.spawn_error is not None:
            return self._result(Outcome.FAILED, error=self.spawn_error, spawn_failed=True)
        if self.storage_error is not None:
            # Whatever claude said, the history of this run is incomplete.
            return self._result(
                Outcome.FAILED, error=self.storage_error, reason=str(StopReason.STORAGE)
            )
        status = self.exit or Exit(None, None)
        stop, result = self.stop, self.result_line
        if self.interrupted:
            # SPEC §10: accepted before the result, whatever the result then said; only
            # a kill or shutdown after it (before the result) makes it a kill.
            if stop is not None and stop.reason in _KILLS and not stop.after_result:
                return self._result(Outcome.KILLED, reason=str(stop.reason))
            return self._result(Outcome.INTERRUPTED, reason="interrupt")
        if result is not None and stop is not None and stop.after_result:
            # SPEC §5: a run that printed its result is decided by it, even when the
            # process then lingered or was stopped on the way out.
            if result.get("is_error"):
                return self._result(Outcome.FAILED, error=result_error(result))
            return self._result(Outcome.SUCCESS)
        reason = stop.reason if stop else None
        if reason in (StopReason.USER, StopReason.SHUTDOWN):
            return self._result(Outcome.KILLED, reason=str(reason))
        if reason in (StopReason.TIMEOUT, StopReason.NO_OUTPUT):
            timeouts = self.timeouts
            limit = timeouts.execution if reason is StopReason.TIMEOUT else timeouts.no_output
            what = "the run" if reason is StopReason.TIMEOUT else "no output"
            return self._result(
                Outcome.TIMEOUT, error=f"{what} exceeded {limit:g}s", reason=str(reason)
            )
        if result is not None:
            if result.get("is_error"):
                return self._result(Outcome.FAILED, error=result_error(result))
            if status.code == 0:
                return self._result(Outcome.SUCCESS)
        detail = self.stderr_tail.strip().splitlines()[-1:] or [""]
        if status.signal:
            error = f"claude was killed by {status.signal}"
        elif status.code == 0:
            error = "claude exited without a result"
        else:
            error = f"claude exited with status {status.code}"
        return self._result(Outcome.FAILED, error=f"{error}: {detail[0]}" if detail[0] else error)

    def _result(
        self,
        outcome: Outcome,
        error: str | None = None,
        reason: str | None = None,
        spawn_failed: bool = False,
    ) -> RunResult:
        status = self.exit or Exit(None, None)
        return RunResult(
            run_id=self.run_id,
            outcome=outcome,
            exit_code=status.code,
            signal=status.signal,
            duration_ms=int((self.clock.seconds() - self.started_at) * 1000),
            cost_usd=result_cost(self.result_line),
            session_id=self.session_id,
            error=error,
            reason=reason,
            spawn_failed=spawn_failed,
        )
