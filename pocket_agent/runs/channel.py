"""The one way to write to claude: whole lines to its stdin.

The prompt now; control responses (approvals) and control requests (interrupts) next.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProcessTransport


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
