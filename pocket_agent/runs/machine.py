"""One Claude run as a state machine: spawn, stream, decide the outcome, kill everything.

::

    idle --start--> running --result--> winding_down
                       |  \\                 |
                     stop  exited          stop / exited
                       v      \\             v
                    stopping --exited--> reaping --done--> finished
                       (SIGINT, SIGTERM, SIGKILL)   (sweep what is left)

``spawn_failed`` and ``force_finish`` (shutdown out of time) go straight to finished.
Data that belongs to one state lives in that state (the deadlines of ``running``, the
linger timer of ``winding_down``, the escalation step of ``stopping``, the sweep of
``reaping``); facts that decide the outcome (the exit status, the stop reason, the
result line) are kept on the :class:`RunCore`. Entering ``finished`` reports exactly one
:class:`RunResult`; no input leaves it. The model is automat's ``TypeMachineBuilder`` as
Twisted's own ``ClientService`` uses it.

The run knows nothing of WebSocket or history files: lines go to a :class:`RunSink`.
"""

from __future__ import annotations

import signal
from typing import Any, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall

from .deadline import Deadline
from .outcome import Exit, StopReason
from .process import ClaudeProcessProtocol
from .runcore import RunCore, StopInfo
from .streamjson import user_message

SWEEP_POLL = 0.05


class RunInputs(Protocol):
    """Everything that can happen to a run; each is a method of the machine."""

    def start(self) -> None: ...
    def spawn_failed(self) -> None: ...
    def pause_clocks(self) -> None: ...
    def resume_clocks(self) -> None: ...
    def result_seen(self) -> None: ...
    def stop(self, reason: StopReason) -> None: ...
    def escalate(self) -> None: ...
    def kill_now(self) -> None: ...
    def exited(self, status: Exit) -> None: ...
    def sweep(self) -> None: ...
    def output_closed(self) -> None: ...
    def abandon_output(self) -> None: ...
    def done(self) -> None: ...
    def force_finish(self) -> None: ...


# ------------------------------------------------------------- state data


class _Timers:
    """State data that owns timers: leaving the state cancels them."""

    def cancel(self) -> None:
        raise NotImplementedError


@attrs.define
class Running(_Timers):
    execution: Deadline
    no_output: Deadline

    def cancel(self) -> None:
        self.execution.cancel()
        self.no_output.cancel()


@attrs.define
class WindingDown(_Timers):
    linger: IDelayedCall | None = None

    def cancel(self) -> None:
        _cancel(self.linger)


@attrs.define
class Stopping(_Timers):
    reason: StopReason
    step: int = 0  # 0: SIGINT sent, 1: SIGTERM sent, 2: SIGKILL sent
    timer: IDelayedCall | None = None

    def cancel(self) -> None:
        _cancel(self.timer)


@attrs.define
class Reaping(_Timers):
    deadline: float
    term_sent: bool = False
    kill_sent: bool = False
    swept: bool = False
    timer: IDelayedCall | None = None
    abandon: IDelayedCall | None = None

    def cancel(self) -> None:
        _cancel(self.timer)
        _cancel(self.abandon)


def _cancel(timer: IDelayedCall | None) -> None:
    if timer is not None and timer.active():
        timer.cancel()


# ----------------------------------------------------------------- machine

builder = TypeMachineBuilder(RunInputs, RunCore)
idle = builder.state("idle")


# Entering a state arms its timers (automat builds a state's data before the transition
# that enters it runs, and that transition then gets the old state's data).


def _running(inputs: RunInputs, core: RunCore) -> Running:
    data = Running(
        Deadline(core.clock, core.timeouts.execution, lambda: inputs.stop(StopReason.TIMEOUT)),
        Deadline(core.clock, core.timeouts.no_output, lambda: inputs.stop(StopReason.NO_OUTPUT)),
    )
    data.execution.start()
    data.no_output.start()
    # The hot path (every chunk of output) pushes the watchdog back without a machine
    # input; a watchdog that is cancelled with this state ignores it.
    core.watchdog = data.no_output
    return data


def _winding_down(inputs: RunInputs, core: RunCore) -> WindingDown:
    return WindingDown(core.later(core.timeouts.kill_grace, inputs.stop, StopReason.LINGERING))


def _stopping(inputs: RunInputs, core: RunCore, reason: StopReason) -> Stopping:
    return Stopping(reason, timer=core.later(core.timeouts.kill_grace, inputs.escalate))


def _reaping(inputs: RunInputs, core: RunCore, status: Exit) -> Reaping:
    return Reaping(deadline=core.clock.seconds() + core.timeouts.kill_grace)


running = builder.state("running", _running)
winding_down = builder.state("winding_down", _winding_down)
stopping = builder.state("stopping", _stopping)
reaping = builder.state("reaping", _reaping)
finished = builder.state("finished")


@idle.upon(RunInputs.start).to(running)
def _start(inputs: RunInputs, core: RunCore) -> None:
    # An exit inside spawnProcess (claude dies at once) arrives as an input queued
    # behind this one, so it always finds a run that knows its transport.
    try:
        core.spawn(ClaudeProcessProtocol(core, inputs))
    except Exception as e:
        if not isinstance(e, OSError):
            core.log.failure("Starting claude for run {run_id} failed", run_id=core.run_id)
        core.spawn_error = f"cannot start claude: {e}"
        inputs.spawn_failed()
        return
    assert core.stdin is not None
    core.stdin.write_line(user_message(core.prompt))
    core.start_scanning()


@running.upon(RunInputs.spawn_failed).to(finished)
def _spawn_failed(inputs: RunInputs, core: RunCore, data: Running) -> None:
    data.cancel()
    core.conclude()


@running.upon(RunInputs.pause_clocks).loop()
def _pause_clocks(inputs: RunInputs, core: RunCore, data: Running) -> None:
    """A human is deciding (an approval): the agent's time does not run."""
    data.execution.pause()
    data.no_output.pause()


@running.upon(RunInputs.resume_clocks).loop()
def _resume_clocks(inputs: RunInputs, core: RunCore, data: Running) -> None:
    data.execution.resume()
    data.no_output.resume()


@running.upon(RunInputs.result_seen).to(winding_down)
def _turn_done(inputs: RunInputs, core: RunCore, data: Running) -> None:
    """A result ends the turn: close stdin (the CLI exits once it closes) and give it
    ``kill_grace`` to wind down before the escalation; the result decides now."""
    data.cancel()
    assert core.stdin is not None
    core.stdin.close()


@stopping.upon(RunInputs.result_seen).loop()
def _result_while_stopping(inputs: RunInputs, core: RunCore, data: Stopping) -> None:
    assert core.stdin is not None
    core.stdin.close()


def _begin_stop(inputs: RunInputs, core: RunCore, data: _Timers, reason: StopReason) -> None:
    """The escalation's first step: SIGINT to claude alone (it aborts cleanly)."""
    data.cancel()
    core.stop = StopInfo(reason, after_result=core.result_line is not None)
    core.log.info("Stopping run {run_id} ({reason})", run_id=core.run_id, reason=reason.value)
    core.signal_leader(signal.SIGINT)


running.upon(RunInputs.stop).to(stopping)(_begin_stop)
winding_down.upon(RunInputs.stop).to(stopping)(_begin_stop)


@stopping.upon(RunInputs.escalate).loop()
def _escalate(inputs: RunInputs, core: RunCore, data: Stopping) -> None:
    """SIGTERM to every recorded group, then SIGKILL; then stop waiting for the pipes."""
    data.step += 1
    core.signal_all(signal.SIGTERM if data.step == 1 else signal.SIGKILL)
    if data.step == 1:
        data.timer = core.later(core.timeouts.kill_grace, inputs.escalate)
    else:
        # Nothing outlives SIGKILL; if the pipes still do not close, give up on them.
        # The run's timer, not this state's: it still runs once claude has exited.
        core.abandon_later(inputs.abandon_output)


@stopping.upon(RunInputs.kill_now).loop()
def _kill_now(inputs: RunInputs, core: RunCore, data: Stopping) -> None:
    """Shutdown is running out of time: skip the grace periods."""
    if data.step >= 2:
        return
    data.cancel()
    data.step = 1
    _escalate(inputs, core, data)


@stopping.upon(RunInputs.abandon_output).loop()
def _abandon_while_stopping(inputs: RunInputs, core: RunCore, data: Stopping) -> None:
    _give_up_on_output(core)


def _claude_exited(inputs: RunInputs, core: RunCore, data: _Timers, status: Exit) -> None:
    data.cancel()
    core.exit = status
    if core.tree is not None:
        core.tree.leader_gone = True  # reaped: its pid is free for others now
    core.stop_scanning()
    inputs.sweep()


running.upon(RunInputs.exited).to(reaping)(_claude_exited)
winding_down.upon(RunInputs.exited).to(reaping)(_claude_exited)
stopping.upon(RunInputs.exited).to(reaping)(_claude_exited)


@reaping.upon(RunInputs.sweep).loop()
def _sweep(inputs: RunInputs, core: RunCore, data: Reaping) -> None:
    """After claude is gone, end whatever it left behind: TERM, then KILL at the deadline."""
    assert core.tree is not None
    if data.swept:
        return
    if not core.tree.remaining():
        _swept(inputs, core, data)
        return
    if core.clock.seconds() >= data.deadline:
        if data.kill_sent:
            # Not ours to kill (EPERM), or stuck in the kernel: say so, do not hang.
            core.log.error(
                "Run {run_id}: processes survived SIGKILL: {pids}",
                run_id=core.run_id,
                pids=sorted(core.tree.remaining()),
            )
            _swept(inputs, core, data)
            return
        data.kill_sent = True
        core.tree.signal_all(signal.SIGKILL)
        data.deadline = core.clock.seconds() + core.timeouts.kill_grace
    elif not data.term_sent:
        data.term_sent = True
        core.tree.signal_all(signal.SIGTERM)
    data.timer = core.later(SWEEP_POLL, inputs.sweep)


def _swept(inputs: RunInputs, core: RunCore, data: Reaping) -> None:
    data.swept = True
    if core.output_is_closed:
        inputs.done()
    else:
        # Pipes held open by something that is not ours any more: stop waiting.
        data.abandon = core.later(core.timeouts.kill_grace, inputs.abandon_output)


@reaping.upon(RunInputs.output_closed).loop()
def _output_closed(inputs: RunInputs, core: RunCore, data: Reaping) -> None:
    if data.swept:
        inputs.done()


@reaping.upon(RunInputs.abandon_output).loop()
def _abandon_while_reaping(inputs: RunInputs, core: RunCore, data: Reaping) -> None:
    _give_up_on_output(core)
    if data.swept:
        inputs.done()


def _give_up_on_output(core: RunCore) -> None:
    if core.transport is not None:
        core.transport.loseConnection()
    core.output_ended()


@reaping.upon(RunInputs.done).to(finished)
def _done(inputs: RunInputs, core: RunCore, data: Reaping) -> None:
    data.cancel()
    core.conclude()


def _force_finish(inputs: RunInputs, core: RunCore, data: _Timers) -> None:
    """Shutdown is out of time: report what we know and stop waiting."""
    data.cancel()
    if core.exit is None:
        core.exit = Exit(None, None)
    try:
        core.flush_output()
    except Exception:
        # Entering finished reports the outcome, whatever became of the last line.
        core.log.failure("Flushing the output of run {run_id} failed", run_id=core.run_id)
    core.conclude()


running.upon(RunInputs.force_finish).to(finished)(_force_finish)
winding_down.upon(RunInputs.force_finish).to(finished)(_force_finish)
stopping.upon(RunInputs.force_finish).to(finished)(_force_finish)
reaping.upon(RunInputs.force_finish).to(finished)(_force_finish)


def _ignore(inputs: RunInputs, core: RunCore, *args: object) -> None:
    """Nothing to do in this state (a late timer, a repeated request)."""


# Inputs that mean nothing in a state (a late timer, a repeated request). Only a
# running turn has clocks to pause: winding down and stopping run on their own timers.
_CLOCKS = ("pause_clocks", "resume_clocks")
_LATE = ("escalate", "sweep", "abandon_output", "done")
_IGNORED_WITHOUT_DATA: dict[Any, tuple[str, ...]] = {
    idle: ("stop", "kill_now", "force_finish", "result_seen", *_CLOCKS),
    finished: (
        *("result_seen", "stop", "kill_now", "exited", "output_closed"),
        *("force_finish", "spawn_failed", *_LATE, *_CLOCKS),
    ),
}
_IGNORED_WITH_DATA: dict[Any, tuple[str, ...]] = {
    running: ("kill_now", "output_closed", *_LATE),
    winding_down: ("result_seen", "kill_now", "output_closed", *_LATE, *_CLOCKS),
    stopping: ("stop", "output_closed", "sweep", "done", *_CLOCKS),
    reaping: ("result_seen", "stop", "escalate", "kill_now", "exited", *_CLOCKS),
}
for _plain, _names in _IGNORED_WITHOUT_DATA.items():
    for _name in _names:
        _plain.upon(getattr(RunInputs, _name)).loop()(_ignore)
for _with_data, _names in _IGNORED_WITH_DATA.items():
    for _name in _names:
        _with_data.upon(getattr(RunInputs, _name), nodata=True).loop()(_ignore)

RunMachine = builder.build()


class Run:
    """A run as the executor sees it: its id, its stop reason, and the inputs it may send."""

    def __init__(self, core: RunCore) -> None:
        self.core = core
        self.machine: RunInputs = RunMachine(core)

    @property
    def run_id(self) -> str:
        return self.core.run_id

    @property
    def stop_reason(self) -> StopReason | None:
        return self.core.stop.reason if self.core.stop else None

    @property
    def finished(self) -> bool:
        return self.core.finished

    def start(self) -> None:
        self.machine.start()

    def stop(self, reason: StopReason) -> None:
        self.machine.stop(reason)

    def kill_now(self) -> None:
        self.machine.kill_now()

    def pause_clocks(self) -> None:
        """Stop the ``execution`` and ``no_output`` clocks (while a human decides)."""
        self.machine.pause_clocks()

    def resume_clocks(self) -> None:
        self.machine.resume_clocks()

    def force_finish(self) -> None:
        self.machine.force_finish()
