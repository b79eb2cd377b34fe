"""One Claude run as a state machine: spawn, stream, decide the outcome, kill everything.

::

    idle --start--> running <--asked / settled--> awaiting_approval
                       \\                              /
                        `---------interrupt----------'
                                      |
                                      v
                                interrupting

    running, awaiting_approval, interrupting  --result-->  winding_down
    running, awaiting_approval, interrupting,
      winding_down                            --stop---->  stopping
                                   (interrupting's fallback is a stop, reason interrupt)
    running ... stopping                      --exited-->  reaping --done--> finished
    (stopping: SIGINT, SIGTERM, SIGKILL, kill_grace apart; reaping: sweep what is left)

``spawn_failed`` and ``force_finish`` (shutdown out of time) go straight to finished.
``awaiting_approval`` holds while a permission prompt is open (its ``execution`` and
``no_output`` clocks paused: a human is deciding); ``interrupting`` after an interrupt
was sent to the CLI, until its ``result`` (or, ``kill_grace`` later, the SIGINT of the
escalation). Data that belongs to one state lives in that state (the linger timer of
``winding_down``, the escalation step of ``stopping``, the fallback of
``interrupting``, the sweep of ``reaping``); the facts that decide the outcome (the exit
status, the stop reason, the result line, an accepted interrupt), the clocks and the
open prompts are kept on the :class:`RunCore`. Entering ``finished`` reports exactly one
:class:`RunResult`; no input leaves it. The model is automat's ``TypeMachineBuilder`` as
Twisted's own ``ClientService`` uses it.

The run knows nothing of WebSocket or history files: lines go to a :class:`RunSink`.
"""

from __future__ import annotations

import signal
from typing import Any, Protocol

import attrs
from automat import TypeMachineBuilder

from .deadline import Deadline
from .outcome import Exit, StopReason
from .process import ClaudeProcessProtocol
from .prompts import Decision, Prompt, Resolution
from .runcore import Clocks, RunCore, StopInfo
from .statedata import (
    AwaitingApproval,
    Interrupting,
    Reaping,
    Running,
    Stopping,
    Timers,
    WindingDown,
)
from .streamjson import user_message

SWEEP_POLL = 0.05


class RunInputs(Protocol):
    """Everything that can happen to a run; each is a method of the machine."""

    def start(self) -> None: ...
    def spawn_failed(self) -> None: ...
    def permission_asked(self, prompt: Prompt) -> None: ...
    def permission_answered(self, permission_id: str, decision: Decision) -> None: ...
    def permission_withdrawn(self, request_id: str) -> None: ...
    def prompts_settled(self) -> None: ...
    def interrupt(self) -> None: ...
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


# ----------------------------------------------------------------- machine

builder = TypeMachineBuilder(RunInputs, RunCore)
idle = builder.state("idle")


# Entering a state arms its timers (automat builds a state's data before the transition
# that enters it runs, and that transition then gets the old state's data).


def _running(inputs: RunInputs, core: RunCore) -> Running:
    """The clocks start with the turn, and run again after every approval."""
    if core.clocks is None:
        core.clocks = Clocks(
            Deadline(core.clock, core.timeouts.execution, lambda: inputs.stop(StopReason.TIMEOUT)),
            Deadline(
                core.clock, core.timeouts.no_output, lambda: inputs.stop(StopReason.NO_OUTPUT)
            ),
        )
        # The hot path (every chunk of output) pushes the watchdog back without a machine
        # input; a watchdog that is paused or cancelled ignores it.
        core.watchdog = core.clocks.no_output
    core.clocks.start()
    return Running(core.clocks)


def _awaiting(inputs: RunInputs, core: RunCore, prompt: Prompt) -> AwaitingApproval:
    assert core.clocks is not None
    core.clocks.pause()
    return AwaitingApproval(core.clocks)


def _interrupting(inputs: RunInputs, core: RunCore) -> Interrupting:
    """No answer to the interrupt within ``kill_grace``: the escalation, starting with
    SIGINT, which the CLI also takes as an interrupt."""
    return Interrupting(core.later(core.timeouts.kill_grace, inputs.stop, StopReason.INTERRUPT))


def _winding_down(inputs: RunInputs, core: RunCore) -> WindingDown:
    return WindingDown(core.later(core.timeouts.kill_grace, inputs.stop, StopReason.LINGERING))


def _stopping(inputs: RunInputs, core: RunCore, reason: StopReason) -> Stopping:
    return Stopping(reason, timer=core.later(core.timeouts.kill_grace, inputs.escalate))


def _reaping(inputs: RunInputs, core: RunCore, status: Exit) -> Reaping:
    return Reaping(deadline=core.clock.seconds() + core.timeouts.kill_grace)


running = builder.state("running", _running)
awaiting_approval = builder.state("awaiting_approval", _awaiting)
interrupting = builder.state("interrupting", _interrupting)
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


# ----------------------------------------------------------- approvals


@running.upon(RunInputs.permission_asked).to(awaiting_approval)
def _first_prompt(inputs: RunInputs, core: RunCore, data: Running, prompt: Prompt) -> None:
    """A human is deciding: the agent's time does not run (the new state paused it)."""
    core.asking.open_prompt(prompt, inputs)


@awaiting_approval.upon(RunInputs.permission_asked).loop()
def _another_prompt(
    inputs: RunInputs, core: RunCore, data: AwaitingApproval, prompt: Prompt
) -> None:
    core.asking.open_prompt(prompt, inputs)


@awaiting_approval.upon(RunInputs.permission_answered).loop()
def _answered(
    inputs: RunInputs,
    core: RunCore,
    data: AwaitingApproval,
    permission_id: str,
    decision: Decision,
) -> None:
    if core.asking.answer(permission_id, decision) and not core.prompts:
        inputs.prompts_settled()


@awaiting_approval.upon(RunInputs.permission_withdrawn).loop()
def _withdrawn(inputs: RunInputs, core: RunCore, data: AwaitingApproval, request_id: str) -> None:
    if core.asking.withdraw(request_id) and not core.prompts:
        inputs.prompts_settled()


@awaiting_approval.upon(RunInputs.prompts_settled).to(running)
def _settled(inputs: RunInputs, core: RunCore, data: AwaitingApproval) -> None:
    """Nothing is open any more: the clocks run again (the new state resumed them)."""


def _too_late(reason: Resolution) -> Any:
    def refuse(inputs: RunInputs, core: RunCore, data: Timers, prompt: Prompt) -> None:
        core.asking.refuse(prompt, reason)

    return refuse


interrupting.upon(RunInputs.permission_asked).loop()(_too_late(Resolution.INTERRUPTED))
for _ending in (winding_down, stopping, reaping):
    _ending.upon(RunInputs.permission_asked).loop()(_too_late(Resolution.RUN_ENDED))


# ----------------------------------------------------------- interrupt


@running.upon(RunInputs.interrupt).to(interrupting)
def _interrupt(inputs: RunInputs, core: RunCore, data: Running) -> None:
    """The stdio ``interrupt``: the CLI stops the turn and prints its result."""
    data.cancel()
    core.send_interrupt()


@awaiting_approval.upon(RunInputs.interrupt).to(interrupting)
def _interrupt_prompts(inputs: RunInputs, core: RunCore, data: AwaitingApproval) -> None:
    """The open prompts are resolved first; the CLI cancels them itself on the interrupt."""
    data.cancel()
    core.asking.close_all(Resolution.INTERRUPTED, tell=False)
    core.send_interrupt()


# ---------------------------------------------------------- end of turn


def _turn_done(inputs: RunInputs, core: RunCore, data: Timers) -> None:
    """A result ends the turn: close stdin (the CLI exits once it closes) and give it
    ``kill_grace`` to wind down before the escalation; the result decides now."""
    data.cancel()
    core.asking.close_all(Resolution.RUN_ENDED, tell=True)
    assert core.stdin is not None
    core.stdin.close()


running.upon(RunInputs.result_seen).to(winding_down)(_turn_done)
awaiting_approval.upon(RunInputs.result_seen).to(winding_down)(_turn_done)
interrupting.upon(RunInputs.result_seen).to(winding_down)(_turn_done)


@stopping.upon(RunInputs.result_seen).loop()
def _result_while_stopping(inputs: RunInputs, core: RunCore, data: Stopping) -> None:
    assert core.stdin is not None
    core.stdin.close()


def _begin_stop(inputs: RunInputs, core: RunCore, data: Timers, reason: StopReason) -> None:
    """The escalation's first step: SIGINT to claude alone (it aborts cleanly). What is
    still open is denied first (``run_ended``), so no prompt outlives its run."""
    data.cancel()
    core.asking.close_all(Resolution.RUN_ENDED, tell=True)
    core.stop = StopInfo(reason, after_result=core.result_line is not None)
    if reason is StopReason.INTERRUPT and core.result_line is None:
        core.interrupted = True  # approvals off, or the CLI did not answer the interrupt
    core.log.info("Stopping run {run_id} ({reason})", run_id=core.run_id, reason=reason.value)
    core.signal_leader(signal.SIGINT)


running.upon(RunInputs.stop).to(stopping)(_begin_stop)
awaiting_approval.upon(RunInputs.stop).to(stopping)(_begin_stop)
interrupting.upon(RunInputs.stop).to(stopping)(_begin_stop)
winding_down.upon(RunInputs.stop).to(stopping)(_begin_stop)


@stopping.upon(RunInputs.stop).loop()
def _stop_again(inputs: RunInputs, core: RunCore, data: Stopping, reason: StopReason) -> None:
    """Already stopping: only a kill (or shutdown) after an interrupt's SIGINT changes
    what the run is stopping for (SPEC §10: it then ends ``killed``)."""
    assert core.stop is not None
    if core.stop.reason is StopReason.INTERRUPT and reason in (
        StopReason.USER,
        StopReason.SHUTDOWN,
    ):
        core.stop = attrs.evolve(core.stop, reason=reason)


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


def _claude_exited(inputs: RunInputs, core: RunCore, data: Timers, status: Exit) -> None:
    data.cancel()
    core.asking.close_all(Resolution.RUN_ENDED, tell=False)
    core.exit = status
    if core.tree is not None:
        core.tree.leader_gone = True  # reaped: its pid is free for others now
    core.stop_scanning()
    inputs.sweep()


running.upon(RunInputs.exited).to(reaping)(_claude_exited)
awaiting_approval.upon(RunInputs.exited).to(reaping)(_claude_exited)
interrupting.upon(RunInputs.exited).to(reaping)(_claude_exited)
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


def _force_finish(inputs: RunInputs, core: RunCore, data: Timers) -> None:
    """Shutdown is out of time: report what we know and stop waiting."""
    data.cancel()
    core.asking.close_all(Resolution.RUN_ENDED, tell=False)
    if core.exit is None:
        core.exit = Exit(None, None)
    try:
        core.flush_output()
    except Exception:
        # Entering finished reports the outcome, whatever became of the last line.
        core.log.failure("Flushing the output of run {run_id} failed", run_id=core.run_id)
    core.conclude()


running.upon(RunInputs.force_finish).to(finished)(_force_finish)
awaiting_approval.upon(RunInputs.force_finish).to(finished)(_force_finish)
interrupting.upon(RunInputs.force_finish).to(finished)(_force_finish)
winding_down.upon(RunInputs.force_finish).to(finished)(_force_finish)
stopping.upon(RunInputs.force_finish).to(finished)(_force_finish)
reaping.upon(RunInputs.force_finish).to(finished)(_force_finish)


def _ignore(inputs: RunInputs, core: RunCore, *args: object) -> None:
    """Nothing to do in this state (a late timer, a repeated request)."""


# Inputs that mean nothing in a state (a late timer, a repeated request, an answer to a
# prompt that is no longer open, an interrupt once the turn is over).
_LATE = ("escalate", "sweep", "abandon_output", "done")
_ANSWERS = ("permission_answered", "permission_withdrawn", "prompts_settled")
_IGNORED_WITHOUT_DATA: dict[Any, tuple[str, ...]] = {
    idle: ("stop", "kill_now", "force_finish", "result_seen", "interrupt", *_ANSWERS),
    finished: (
        *("result_seen", "stop", "kill_now", "exited", "output_closed"),
        *("force_finish", "spawn_failed", *_LATE, *_ANSWERS),
        *("permission_asked", "interrupt"),
    ),
}
_IGNORED_WITH_DATA: dict[Any, tuple[str, ...]] = {
    running: ("kill_now", "output_closed", *_LATE, *_ANSWERS),
    awaiting_approval: ("kill_now", "output_closed", "spawn_failed", *_LATE),
    interrupting: ("kill_now", "output_closed", "spawn_failed", "interrupt", *_LATE, *_ANSWERS),
    winding_down: ("result_seen", "kill_now", "output_closed", "interrupt", *_LATE, *_ANSWERS),
    stopping: ("output_closed", "sweep", "done", "interrupt", *_ANSWERS),
    reaping: ("result_seen", "stop", "escalate", "kill_now", "exited", "interrupt", *_ANSWERS),
}
for _plain, _names in _IGNORED_WITHOUT_DATA.items():
    for _name in _names:
        _plain.upon(getattr(RunInputs, _name)).loop()(_ignore)
for _with_data, _names in _IGNORED_WITH_DATA.items():
    for _name in _names:
        _with_data.upon(getattr(RunInputs, _name), nodata=True).loop()(_ignore)

RunMachine = builder.build()
