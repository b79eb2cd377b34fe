"""Can we run claude, where is it, and which version is it (``claude --version``)?"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from pocket_agent.core.errors import ClaudeNotFound

from .command import find_binary


class _VersionProbe(ProcessProtocol):
    def __init__(self, done: Deferred[str | None]) -> None:
        self.done = done
        self.out = b""
        self.ended: Deferred[None] = Deferred()  # the process is gone, not only the answer
        self.process: IProcessTransport | None = None

    def connectionMade(self) -> None:
        self.process = self.transport

    def outReceived(self, data: bytes) -> None:
        self.out = (self.out + data)[:4096]

    def processEnded(self, reason: Failure) -> None:
        text = self.out.decode("utf-8", "replace").strip().splitlines()
        if not self.done.called:
            self.done.callback(text[0] if text and reason.check(ProcessDone) else None)
        self.ended.callback(None)

    def kill(self) -> None:
        if self.process is not None:
            try:
                self.process.signalProcess("KILL")
            except ProcessExitedAlready:
                pass


def _spawn_probe(
    reactor: Any, path: str, environ: dict[str, str], timeout: float
) -> _VersionProbe | None:
    done: Deferred[str | None] = Deferred()
    protocol = _VersionProbe(done)
    try:
        reactor.spawnProcess(protocol, path, [path, "--version"], env=environ)
    except OSError:
        return None

    def give_up() -> None:
        if not done.called:
            done.callback(None)
            protocol.kill()

    timer = reactor.callLater(timeout, give_up)
    done.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
    return protocol


def probe_version(
    reactor: Any, path: str, environ: dict[str, str], timeout: float = 10.0
) -> Deferred[str | None]:
    """``claude --version`` without blocking the reactor; None if it fails or hangs."""
    probe = _spawn_probe(reactor, path, environ, timeout)
    return succeed(None) if probe is None else probe.done


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
        self._running: set[_VersionProbe] = set()
        self._stopped = False

    def status(self) -> dict[str, Any]:
        try:
            path = find_binary(self.binary, self.environ.get("PATH"))
        except ClaudeNotFound as e:
            return {"available": False, "path": None, "version": None, "reason": e.message}
        if path not in self._versions and self.probe and not self._stopped:
            self._versions[path] = None
            self._start(path)
        return {"available": True, "path": path, "version": self._versions.get(path)}

    def _start(self, path: str) -> None:
        probe = _spawn_probe(self.reactor, path, self.environ, timeout=10.0)
        if probe is None:
            return
        self._running.add(probe)
        probe.done.addCallback(lambda version: self._versions.__setitem__(path, version))
        probe.ended.addCallback(lambda _: self._running.discard(probe))

    def stop(self) -> Deferred[Any]:
        """Shutdown: no probe outlives the server (one can hang for its whole timeout)."""
        self._stopped = True
        running = list(self._running)
        for probe in running:
            probe.kill()
        return DeferredList([p.ended for p in running]) if running else succeed(None)
