"""Claude's pipes: stdout and stderr in, the stdin channel out.

The process protocol turns bytes into calls on the run (lines to its core, state
changes as machine inputs) and nothing else. The stdin channel is the one way to
write to claude: the prompt now, control responses (approvals, interrupts) next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .outcome import Exit
from .streamjson import LineSplitter
from .tree import SIGNAL_NAMES

if TYPE_CHECKING:
    from .core import RunCore
    from .machine import RunInputs


class StdinChannel:
    """Whole lines to claude's stdin, until it is closed (which ends the CLI's turn loop)."""

    def __init__(self, transport: IProcessTransport) -> None:
        self._transport = transport
        self.closed = False

    def write_line(self, line: bytes) -> bool:
        """False when the channel is already closed (the line is dropped)."""
        if self.closed:
            return False
        self._transport.write(line if line.endswith(b"\n") else line + b"\n")
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._transport.closeStdin()


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
        self.machine.activity()
        self.splitter.feed(data)

    def errReceived(self, data: bytes) -> None:
        self.machine.activity()
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
