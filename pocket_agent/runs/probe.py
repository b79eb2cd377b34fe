"""Can we run claude, where is it, and which version is it (``claude --version``)?"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from pocket_agent.core.errors import ClaudeNotFound

from .command import find_binary


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


class ClaudeProbe:
    """For ``health``: the binary's status, its version probed once per path in the
    background (the first report after a change says null)."""

    def __init__(
        self, reactor: Any, binary: str, environ: dict[str, str], probe: bool = True
    ) -> None:
        self.reactor = reactor
        self.binary = binary
        self.environ = environ
        self.probe = probe
        self._versions: dict[str, str | None] = {}

    def status(self) -> dict[str, Any]:
        try:
            path = find_binary(self.binary, self.environ.get("PATH"))
        except ClaudeNotFound as e:
            return {"available": False, "path": None, "version": None, "reason": e.message}
        if path not in self._versions and self.probe:
            self._versions[path] = None
            probe_version(self.reactor, path, self.environ).addCallback(
                lambda version: self._versions.__setitem__(path, version)
            )
        return {"available": True, "path": path, "version": self._versions.get(path)}
