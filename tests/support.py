"""In-memory test harness: the real server protocol and a real autobahn client, no sockets.

``Harness`` builds the object graph with ``compose.build_app``, exactly as the daemon
does, around a ``MemoryReactorClock`` that also plays the process spawner; ``Harness.connect``
joins a real autobahn client protocol to a server protocol through ``iosim``, so the
whole HTTP upgrade, framing and closing handshake run byte for byte, synchronously.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from zope.interface import implementer

from pocket_agent.compose import build_app, find_setsid
from pocket_agent.config import Config, Overrides, ProjectsConfig, load_config
from pocket_agent.core.events import AuthFailed, Event, RecordAppended

TOKEN = "pairing-token-0123456789-abcdefghijklmnop"


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """The embedded defaults rooted in ``tmp_path/root``, projects allowed in ``tmp_path/home``;
    ``sections`` override fields of nested config sections, e.g. ``limits={"max_projects": 2}``."""
    root = tmp_path / "root"
    home = tmp_path / "home"
    root.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    config = load_config(Overrides(root=str(root)), environ={})
    config = attrs.evolve(config, projects=ProjectsConfig(allowed_roots=(home,)))
    for name, changes in sections.items():
        config = attrs.evolve(config, **{name: attrs.evolve(getattr(config, name), **changes)})
    return config


class EventRecorder:
    """An observer of the event bus that keeps every event but Records (those the
    clients see), for tests to count."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def observe(self, event: Event) -> None:
        if not isinstance(event, RecordAppended):
            self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@attrs.frozen
class ActiveRun:
    """Stands for a run in a project (``Project.run``) where no run machine is needed."""

    run_id: str


class RecordingClient(WebSocketClientProtocol):
    """A plain autobahn client that keeps everything the server said."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.opened = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = False

    def onConnect(self, response: Any) -> None:
        self.response = response

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.close_code = code if code is not None else self.remoteCloseCode
        self.close_reason = reason


@attrs.define
class Client:
    protocol: RecordingClient
    server: Any
    pump: iosim.IOPump
    _seen: int = 0

    def send_raw(self, payload: bytes | str, binary: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.protocol.sendMessage(data, isBinary=binary)
        self.pump.flush()

    def send(self, mtype: str, **fields: Any) -> None:
        self.send_raw(json.dumps({"type": mtype, **fields}))

    def new(self) -> list[dict[str, Any]]:
        """Messages received since the last call."""
        self.pump.flush()
        fresh = self.protocol.received[self._seen :]
        self._seen = len(self.protocol.received)
        return fresh

    def request(self, mtype: str, **fields: Any) -> list[dict[str, Any]]:
        self.send(mtype, **fields)
        return self.new()

    def one(self, mtype: str, **fields: Any) -> dict[str, Any]:
        replies = self.request(mtype, **fields)
        assert len(replies) == 1, replies
        return replies[0]

    def disconnect(self) -> None:
        self.protocol.sendClose(1000)
        self.pump.flush()


class FakeProcess:
    """What the run engine sees of a spawned claude; the test plays claude's part."""

    def workdir(self) -> str:
        """Where claude would run: the directory the server hands it as fd 3."""
        assert self.path == "/proc/self/fd/3" and self.child_fds is not None
        return os.readlink(f"/proc/self/fd/{self.child_fds[3]}")

    def __init__(
        self, protocol: Any, executable: str, args: list[str], env: Any, path: Any
    ) -> None:
        self.protocol = protocol
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.child_fds: dict[int, Any] | None = None
        self.pid = 4242 + id(self) % 1000
        self.stdin = b""
        self.stdin_closed = False
        self.lost = False
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def loseConnection(self) -> None:
        self.lost = True

    def signalProcess(self, signal: Any) -> None:
        raise AssertionError("runs signal through the process tree, not the transport")

    # The test's side -------------------------------------------------------------

    def emit(self, *messages: dict[str, Any] | bytes) -> None:
        for message in messages:
            line = message if isinstance(message, bytes) else json.dumps(message).encode()
            self.protocol.outReceived(line + b"\n")

    def stderr(self, text: str) -> None:
        self.protocol.errReceived(text.encode())

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        from twisted.internet.error import ProcessDone, ProcessTerminated
        from twisted.python.failure import Failure

        reason = Failure(
            ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
        )
        self.protocol.processExited(reason)
        self.protocol.processEnded(reason)


class FakeTree:
    """A process tree that records the signals a run sends instead of sending them."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pgid = pid
        self.proc = Path("/nonexistent/proc")  # the fake pids are nobody's
        self.signals: list[tuple[str, int]] = []
        self.left: dict[int, int] = {}
        self.recorded: dict[int, int] = {}

    def record(self) -> bool:
        return False

    def remaining(self) -> dict[int, int]:
        return dict(self.left)

    def survivors(self) -> dict[int, int]:
        return dict(self.left)

    def signal_leader(self, signum: int) -> None:
        self.signals.append(("leader", signum))

    def signal_all(self, signum: int) -> None:
        self.signals.append(("all", signum))


@implementer(IReactorProcess)
class ProcessReactor(MemoryReactorClock):
    """A MemoryReactorClock that can 'spawn' FakeProcesses."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.trees: list[FakeTree] = []
        self.spawn_error: OSError | None = None
        self.exit_at_spawn: int | None = None  # claude dies before spawnProcess returns

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: Any = None,
        path: Any = None,
        **kw: Any,
    ) -> FakeProcess:
        if self.spawn_error is not None:
            raise self.spawn_error
        process = FakeProcess(protocol, executable, list(args), env, path)
        process.child_fds = kw.get("childFDs")
        self.processes.append(process)
        if self.exit_at_spawn is not None:
            process.exit(self.exit_at_spawn)
        return process

    def tree(self, pid: int) -> FakeTree:
        tree = FakeTree(pid)
        self.trees.append(tree)
        return tree


class Harness:
    def __init__(self, tmp_path: Path, **sections: dict[str, Any]) -> None:
        self.clock = ProcessReactor()
        sections.setdefault("claude", {"binary": "/bin/sh"})  # never run: processes are fakes
        # autobahn schedules its own timers (handshake, auto-ping) through txaio.
        self._previous_loop = txaio.config.loop
        txaio.config.loop = self.clock
        self.config = make_config(tmp_path, **sections)
        self.home = tmp_path / "home"
        self.app = build_app(
            self.config,
            self.clock,
            lambda: TOKEN,
            environ={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")},
            tree_factory=self.clock.tree,
            setsid=find_setsid(),
            probe_versions=False,
        )
        self.events = EventRecorder()
        self.app.bus.subscribe(self.events)
        self.service = self.app.service
        self.service.privilegedStartService()
        self.service.startService()
        self.pumps: list[iosim.IOPump] = []
        self.authenticator = self.app.authenticator
        self.factory = self.app.ws_factory

    def connect(
        self,
        *,
        peer: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        protocols: list[str] | None = None,
        origin: str | None = None,
        query: str = "",
        host: str = "localhost",
    ) -> Client:
        client_factory = WebSocketClientFactory(
            url=f"wss://{host}:8443/ws{query}",
            headers=headers or {},
            protocols=protocols,
            origin=origin,
            reactor=self.clock,
        )
        client_factory.protocol = RecordingClient
        server = self.factory.buildProtocol(IPv4Address("TCP", peer, 50000))
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
        pump = iosim.connect(
            server,
            iosim.FakeTransport(
                server,
                isServer=True,
                hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
                peerAddress=IPv4Address("TCP", peer, 50000),
            ),
            client,
            iosim.FakeTransport(client, isServer=False),
            greet=True,
        )
        pump.flush()
        self.pumps.append(pump)
        return Client(client, server, pump)

    def hello(self, **kwargs: Any) -> tuple[Client, dict[str, Any]]:
        """Connect and return the client with its ``server_hello``."""
        client = self.connect(**kwargs)
        messages = client.new()
        assert client.protocol.opened, client.protocol.wasNotCleanReason
        assert messages and messages[0]["type"] == "server_hello", messages
        return client, messages[0]

    @property
    def auth_failures(self) -> int:
        return len(self.events.of(AuthFailed))

    def project_dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stop(self) -> None:
        if self.service.running:
            self.service.stopService()
            for pump in self.pumps:
                pump.flush()
        txaio.config.loop = self._previous_loop
