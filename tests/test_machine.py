"""The run machine on its own: a RunCore, claude played by the test, a recording sink."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from pocket_agent.runs.outcome import Outcome, RunResult, StopReason
from pocket_agent.runs.run import Run
from pocket_agent.runs.runcore import RunCore, Timeouts
from tests.support import FakeProcess, FakeTree, ProcessReactor

SESSION = "1c354969-65b5-46b2-afc9-a7921a2306e3"
INIT = {"type": "system", "subtype": "init", "session_id": SESSION}
TEXT = {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "total_cost_usd": 0.25,
    "session_id": SESSION,
}
ERROR_RESULT = {**RESULT, "is_error": True, "subtype": "error", "result": "it broke"}
TIMEOUTS = Timeouts(execution=30, no_output=10, kill_grace=2)


class Sink:
    """Every call the run makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.results: list[RunResult] = []
        self.trees_seen = 0

    def claude_line(self, message: dict[str, Any], raw: bytes) -> None:
        self.calls.append(("claude", message))

    def server_event(self, message: dict[str, Any]) -> None:
        self.calls.append(("server", message))

    def session_seen(self, session_id: str) -> None:
        self.calls.append(("session", session_id))

    def processes_seen(self, tree: Any) -> None:
        self.trees_seen += 1

    def finished(self, result: RunResult) -> None:
        self.calls.append(("finished", result))
        self.results.append(result)


class Rig:
    def __init__(self, timeouts: Timeouts = TIMEOUTS) -> None:
        self.reactor = ProcessReactor()
        self.sink = Sink()
        self.core = RunCore(
            "run-1",
            "hello",
            ["/usr/bin/claude", "-p"],
            {"PATH": "/bin"},
            Path("/tmp"),
            self.reactor,
            self.reactor,
            timeouts,
            self.sink,
            None,
            self.reactor.tree,
        )
        self.run = Run(self.core)

    def start(self) -> FakeProcess:
        self.run.start()
        assert len(self.reactor.processes) == 1
        return self.reactor.processes[0]

    @property
    def tree(self) -> FakeTree:
        assert len(self.reactor.trees) == 1
        return self.reactor.trees[0]

    def pending(self) -> list[Any]:
        return [c for c in self.reactor.getDelayedCalls() if c.active()]


def reason(code: int, sig: int | None) -> Failure:
    if code == 0 and sig is None:
        return Failure(ProcessDone(0))
    return Failure(ProcessTerminated(code, sig))


# ------------------------------------------------------------------ one by one


def test_the_normal_path() -> None:
    rig = Rig()
    process = rig.start()
    assert process.executable == "/usr/bin/claude"
    assert json.loads(process.stdin)["message"]["content"][0]["text"] == "hello"
    assert not process.stdin_closed
    rig.reactor.advance(1.5)
    process.emit(INIT, TEXT, RESULT)
    assert process.stdin_closed  # the result ends the turn
    assert rig.sink.results == []
    process.exit(0)
    assert rig.run.finished
    [result] = rig.sink.results
    assert result.outcome is Outcome.SUCCESS
    assert (result.run_id, result.exit_code, result.signal) == ("run-1", 0, None)
    assert result.cost_usd == 0.25
    assert result.session_id == SESSION
    assert result.duration_ms == 1500
    assert result.error is None
    assert [name for name, _ in rig.sink.calls] == [
        "claude",
        "session",
        "claude",
        "claude",
        "finished",
    ]
    assert rig.tree.signals == []  # nothing to kill
    assert rig.pending() == []
    assert rig.run.stop_reason is None


def test_a_result_without_exit_is_stopped_but_still_succeeds() -> None:
    rig = Rig()
    process = rig.start()
    process.emit(RESULT)
    rig.reactor.advance(TIMEOUTS.kill_grace)
    assert rig.run.stop_reason is StopReason.LINGERING
    assert rig.tree.signals == [("leader", signal.SIGINT)]
    process.exit(0, signal.SIGINT)
    [result] = rig.sink.results
    assert result.outcome is Outcome.SUCCESS
    assert rig.pending() == []


def test_a_user_stop_escalates_int_term_kill_then_abandons_the_pipes() -> None:
    rig = Rig()
    process = rig.start()
    rig.run.stop(StopReason.USER)
    rig.run.stop(StopReason.TIMEOUT)  # a second stop changes nothing
    assert rig.run.stop_reason is StopReason.USER
    assert rig.tree.signals == [("leader", signal.SIGINT)]
    rig.reactor.advance(TIMEOUTS.kill_grace)
    assert rig.tree.signals[-1] == ("all", signal.SIGTERM)
    rig.reactor.advance(TIMEOUTS.kill_grace)
    assert rig.tree.signals[-1] == ("all", signal.SIGKILL)
    assert not process.lost
    rig.reactor.advance(TIMEOUTS.kill_grace)
    assert process.lost  # stopped waiting for the pipes
    assert rig.sink.results == []
    process.protocol.processExited(reason(0, signal.SIGKILL))
    [result] = rig.sink.results
    assert result.outcome is Outcome.KILLED
    assert result.reason == "user"
    assert result.signal == "SIGKILL"
    assert rig.pending() == []


def test_kill_now_skips_the_grace_periods() -> None:
    rig = Rig()
    process = rig.start()
    rig.run.kill_now()  # running: nothing to hurry yet
    assert rig.tree.signals == []
    rig.run.stop(StopReason.SHUTDOWN)
    rig.run.kill_now()
    assert rig.tree.signals == [("leader", signal.SIGINT), ("all", signal.SIGKILL)]
    rig.run.kill_now()
    rig.reactor.advance(TIMEOUTS.kill_grace)
    assert len(rig.tree.signals) == 2  # no SIGTERM after the SIGKILL
    assert process.lost  # and then it stopped waiting for the pipes
    process.exit(0, signal.SIGKILL)
    [result] = rig.sink.results
    assert result.outcome is Outcome.KILLED
    assert result.reason == "shutdown"


def test_the_no_output_watchdog_restarts_on_output() -> None:
    rig = Rig(Timeouts(execution=100, no_output=10, kill_grace=2))
    process = rig.start()
    for _ in range(4):
        rig.reactor.advance(TIMEOUTS.no_output - 1)
        process.emit(TEXT)
    assert rig.run.stop_reason is None
    rig.reactor.advance(TIMEOUTS.no_output)
    assert rig.run.stop_reason is StopReason.NO_OUTPUT
    process.exit(0, signal.SIGINT)
    [result] = rig.sink.results
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "no output exceeded 10s"


def test_the_execution_timeout_counts_from_the_start_despite_output() -> None:
    rig = Rig()
    process = rig.start()
    for _ in range(5):
        rig.reactor.advance(5)
        process.emit(TEXT)
    assert rig.run.stop_reason is None
    rig.reactor.advance(5)
    assert rig.run.stop_reason is StopReason.TIMEOUT
    process.exit(1)
    [result] = rig.sink.results
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "the run exceeded 30s"


def test_survivors_are_swept_term_then_kill() -> None:
    rig = Rig()
    process = rig.start()
    rig.tree.left = {999: 999}
    process.emit(RESULT)
    process.exit(0)
    assert rig.tree.signals == [("all", signal.SIGTERM)]
    assert rig.sink.results == []
    rig.reactor.advance(TIMEOUTS.kill_grace + 0.1)
    assert rig.tree.signals[-1] == ("all", signal.SIGKILL)
    rig.tree.left = {}
    rig.reactor.advance(0.1)
    [result] = rig.sink.results
    assert result.outcome is Outcome.SUCCESS
    assert rig.pending() == []


def test_claude_dying_inside_spawn_finishes_once_failed() -> None:
    rig = Rig()
    rig.reactor.exit_at_spawn = 1
    process = rig.start()
    assert rig.run.finished
    [result] = rig.sink.results
    assert result.outcome is Outcome.FAILED
    assert result.exit_code == 1
    assert result.error == "claude exited with status 1"
    assert not result.spawn_failed
    assert rig.pending() == []
    process.emit(RESULT)
    rig.run.stop(StopReason.USER)
    rig.run.force_finish()
    rig.reactor.advance(100)
    assert len(rig.sink.results) == 1
    assert [name for name, _ in rig.sink.calls] == ["finished"]


def test_a_spawn_error_finishes_once_as_spawn_failed() -> None:
    rig = Rig()
    rig.reactor.spawn_error = OSError(2, "No such file or directory")
    rig.run.start()
    assert rig.run.finished
    [result] = rig.sink.results
    assert result.outcome is Outcome.FAILED
    assert result.spawn_failed
    assert result.error is not None and "cannot start claude" in result.error
    assert rig.pending() == []


def test_force_finish_reports_what_is_known_and_flushes_the_last_line() -> None:
    rig = Rig()
    process = rig.start()
    process.protocol.outReceived(json.dumps(TEXT).encode())  # no newline yet
    rig.run.force_finish()
    assert [name for name, _ in rig.sink.calls] == ["claude", "finished"]
    [result] = rig.sink.results
    assert result.outcome is Outcome.FAILED
    assert (result.exit_code, result.signal) == (None, None)
    assert rig.pending() == []
    process.exit(0)
    assert len(rig.sink.calls) == 2


# ------------------------------------------------------------- any sequence

LINES: dict[str, bytes] = {
    "init": json.dumps(INIT).encode() + b"\n",
    "text": json.dumps(TEXT).encode() + b"\n",
    "result": json.dumps(RESULT).encode() + b"\n",
    "error_result": json.dumps(ERROR_RESULT).encode() + b"\n",
    "garbage": b"not json\n",
    "partial_result": json.dumps(RESULT).encode(),  # its \n never comes
}

actions = st.one_of(
    st.tuples(st.just("line"), st.sampled_from(sorted(LINES))),
    st.tuples(st.just("stderr"), st.just(None)),
    st.tuples(st.just("stop"), st.sampled_from(list(StopReason))),
    st.tuples(st.just("kill_now"), st.just(None)),
    st.tuples(st.just("force_finish"), st.just(None)),
    st.tuples(
        st.just("exit"),
        st.sampled_from([(0, None), (1, None), (0, signal.SIGINT), (0, signal.SIGKILL)]),
    ),
    st.tuples(st.just("output_end"), st.just(None)),
    st.tuples(st.just("advance"), st.sampled_from([0.05, 0.5, 1.0, 2.0, 5.0, 11.0, 31.0])),
    st.tuples(st.just("survivors"), st.booleans()),
)


class Claude:
    """Plays claude as the OS would: one exit, the pipes end after it, no output then."""

    def __init__(self, rig: Rig, process: FakeProcess) -> None:
        self.rig = rig
        self.process = process
        self.exited = False
        self.ended = False

    def do(self, action: str, arg: Any) -> None:
        rig, protocol = self.rig, self.process.protocol
        if action == "line":
            if not self.ended and not self.process.lost:
                protocol.outReceived(LINES[arg])
        elif action == "stderr":
            if not self.ended and not self.process.lost:
                protocol.errReceived(b"warning\n")
        elif action == "stop":
            rig.run.stop(arg)
        elif action == "kill_now":
            rig.run.kill_now()
        elif action == "force_finish":
            rig.run.force_finish()
        elif action == "exit":
            if not self.exited:
                self.exited = True
                protocol.processExited(reason(*arg))
        elif action == "output_end":
            if self.exited and not self.ended:
                self.ended = True
                protocol.processEnded(reason(0, None))
        elif action == "advance":
            rig.reactor.advance(arg)
        elif action == "survivors":
            rig.tree.left = {31337: 31337} if arg else {}


@given(st.lists(actions, max_size=30))
def test_any_sequence_reports_one_result_then_nothing(steps: list[tuple[str, Any]]) -> None:
    rig = Rig()
    claude = Claude(rig, rig.start())
    calls_when_finished: int | None = None

    def check() -> None:
        nonlocal calls_when_finished
        assert len(rig.sink.results) <= 1
        assert rig.run.finished == bool(rig.sink.results)
        if rig.sink.results:
            if calls_when_finished is None:
                calls_when_finished = len(rig.sink.calls)
                assert rig.sink.calls[-1][0] == "finished"
            assert len(rig.sink.calls) == calls_when_finished  # nothing after the end
            assert rig.pending() == []

    for action, arg in steps:
        claude.do(action, arg)
        check()

    # Whatever happened, claude goes away at last and the run ends, exactly once.
    claude.do("survivors", False)
    claude.do("exit", (0, signal.SIGKILL))
    claude.do("output_end", None)
    for _ in range(10):
        rig.reactor.advance(TIMEOUTS.kill_grace)
    check()
    [result] = rig.sink.results
    assert result.run_id == "run-1"
    assert not result.spawn_failed

    stop, status = rig.core.stop, rig.core.exit
    if result.outcome is Outcome.SUCCESS:
        assert rig.core.result_line == RESULT
    if result.outcome is Outcome.KILLED:
        assert stop is not None and stop.reason in (StopReason.USER, StopReason.SHUTDOWN)
    if result.outcome is Outcome.TIMEOUT:
        assert stop is not None and stop.reason in (StopReason.TIMEOUT, StopReason.NO_OUTPUT)
    if rig.core.result_line == RESULT and (
        (stop is None and status is not None and status.code == 0)
        or (stop is not None and stop.after_result)
    ):
        # a good result decides: exit 0, or stopped on the way out after it
        assert result.outcome is Outcome.SUCCESS


def test_the_pipes_are_given_up_kill_grace_after_sigkill_even_once_claude_exited() -> None:
    """Survivors holding the pipes open: the run ends when the sweep is over, not one
    more grace later (the give-up timer armed at SIGKILL outlives claude's exit)."""
    rig = Rig()
    process = rig.start()
    grace = TIMEOUTS.kill_grace
    rig.run.stop(StopReason.USER)
    rig.reactor.advance(grace)  # SIGTERM
    rig.reactor.advance(grace)  # SIGKILL
    assert rig.tree.signals[-1] == ("all", signal.SIGKILL)
    rig.tree.left = {999: 999}  # a descendant that will not die, holding the pipes
    rig.reactor.advance(0.1)
    process.protocol.processExited(reason(0, signal.SIGKILL))
    rig.reactor.advance(grace)  # the give-up timer from SIGKILL has fired meanwhile
    assert process.lost and rig.sink.results == []
    rig.reactor.advance(grace + 0.1)  # the sweep's own SIGKILL deadline: it survived
    [result] = rig.sink.results
    assert result.outcome is Outcome.KILLED
    assert rig.pending() == []


def test_force_finish_reports_even_when_the_last_line_cannot_be_recorded() -> None:
    rig = Rig()
    process = rig.start()

    def full_disk(session_id: str) -> None:
        raise OSError(28, "No space left on device")

    rig.sink.session_seen = full_disk  # type: ignore[method-assign]
    process.protocol.outReceived(json.dumps(INIT).encode())  # no newline yet
    rig.run.force_finish()
    assert len(rig.sink.results) == 1
    assert rig.run.finished
    process.exit(0)
    assert len(rig.sink.results) == 1


def test_a_spawn_that_raises_something_else_still_ends_the_run_and_its_clocks() -> None:
    rig = Rig()
    rig.reactor.spawn_error = RuntimeError("a bug in the spawner")  # type: ignore[assignment]
    rig.run.start()
    [result] = rig.sink.results
    assert result.outcome is Outcome.FAILED and result.spawn_failed
    assert "a bug in the spawner" in (result.error or "")
    assert rig.pending() == []
    rig.reactor.advance(TIMEOUTS.execution + 60)  # nothing left to fire
