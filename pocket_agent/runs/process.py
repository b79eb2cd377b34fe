"""Claude's pipes: the process protocol turns bytes into calls on the run (lines to its
core, state changes as machine inputs) and nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .outcome import Exit
from .streamjson import LineSplitter
from .tree import SIGNAL_NAMES

if TYPE_CHECKING:
    from .prompts import Prompt
    from .runcore import RunCore


class RunInputs(Protocol):
    """The machine inputs the pipes drive (a subset of ``machine.RunInputs``)."""

    def result_seen(self) -> None: ...
    def permission_asked(self, prompt: Prompt) -> None: ...
    def permission_withdrawn(self, request_id: str) -> None: ...
    def exited(self, status: Exit) -> None: ...
    def output_closed(self) -> None: ...


class ClaudeProcessProtocol(ProcessProtocol):
    def __init__(self, core: RunCore, machine: RunInputs) -> None:
        self.core = core
        self.machine = machine
        self.splitter = LineSplitter(lambda raw: core.line(machine, raw), core.overlong)
        core.flush_output = self.splitter.finish

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.core.connected(self.transport)

    def outReceived(self, data: bytes) -> None:
        self.core.activity()
        self.splitter.feed(data)

    def errReceived(self, data: bytes) -> None:
        self.core.activity()
        self.core.stderr(data)

    def processExited(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone):
            status = Exit(0, None)
        elif isinstance(value, ProcessTerminated):
            signame = SIGNAL_NAMES.get(value.signal) if value.signal else None
            status = Exit(value.exitCode, signame)
        else:  # pragma: no cover - Twisted only reports those two
            status = Exit(None, None)
        self.machine.exited(status)

    def processEnded(self, reason: Failure) -> None:
        if self.core.output_ended():
            self.machine.output_closed()
