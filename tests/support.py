"""In-memory test harness: the real server protocol and a real autobahn client, no sockets.

``Harness`` wires the same objects ``tap.build_service`` does (registry, domain,
authenticator, WebSocket factory) around a ``MemoryReactorClock``; ``Harness.connect``
joins a real autobahn client protocol to a server protocol through ``iosim``, so the
whole HTTP upgrade, framing and closing handshake run byte for byte, synchronously.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim

from pocket_agent.auth import Authenticator
from pocket_agent.config import Config, Overrides, ProjectsConfig, load_config
from pocket_agent.pathpolicy import PathPolicy
from pocket_agent.projects import ProjectRegistry, ProjectStore
from pocket_agent.server import PocketAgent
from pocket_agent.storage import DataDirLock
from pocket_agent.websocket import PocketAgentFactory

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


class Harness:
    def __init__(self, tmp_path: Path, **sections: dict[str, Any]) -> None:
        self.clock = MemoryReactorClock()
        # autobahn schedules its own timers (handshake, auto-ping) through txaio.
        self._previous_loop = txaio.config.loop
        txaio.config.loop = self.clock
        self.config = make_config(tmp_path, **sections)
        self.home = tmp_path / "home"
        config = self.config
        registry = ProjectRegistry(
            ProjectStore(config.data_dir),
            PathPolicy.build(config.projects.allowed_roots, config.root, config.data_dir),
            config.limits.max_projects,
            self.clock,
        )
        self.agent = PocketAgent(
            config,
            registry,
            self.clock,
            DataDirLock(config.data_dir / ".lock"),
            claude_path=lambda: "/usr/local/bin/claude",
        )
        self.agent.privilegedStartService()
        self.agent.startService()
        self.authenticator = Authenticator(lambda: TOKEN, config.auth.trust_loopback, self.clock)
        self.factory = PocketAgentFactory(self.agent, self.authenticator, config, self.clock)

    def connect(
        self,
        *,
        peer: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        protocols: list[str] | None = None,
        origin: str | None = None,
        query: str = "",
    ) -> Client:
        client_factory = WebSocketClientFactory(
            url=f"wss://localhost:8443/ws{query}",
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
        return Client(client, server, pump)

    def hello(self, **kwargs: Any) -> tuple[Client, dict[str, Any]]:
        """Connect and return the client with its ``server_hello``."""
        client = self.connect(**kwargs)
        messages = client.new()
        assert client.protocol.opened, client.protocol.wasNotCleanReason
        assert messages and messages[0]["type"] == "server_hello", messages
        return client, messages[0]

    def project_dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stop(self) -> None:
        self.agent.stopService()
        txaio.config.loop = self._previous_loop
