"""The SSH manhole: only when enabled, only on loopback, only for an authorized key.

The login tests run the real service tree on the real reactor (pytest-twisted), with
the manhole on 127.0.0.1 port 0, and log in with twisted.conch's own SSH client.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import channel, connection, session, transport, userauth
from twisted.conch.ssh.keys import Key
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from pocket_agent.compose import build_service
from pocket_agent.config import Config
from pocket_agent.errors import StartupError
from pocket_agent.ops.manhole import HOST_KEY_NAME, ManholeService
from pocket_agent.services import PocketAgentService
from tests.support import make_config

WAIT = 15.0  # a deadline, never a pause


def new_key() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


def manhole_config(tmp_path: Path, keys: list[Key], listen: str) -> Config:
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(
        "# the operator's keys\n"
        + "".join(k.public().toString("OPENSSH").decode() + " op@host\n" for k in keys)
    )
    return make_config(
        tmp_path,
        manhole={"enabled": True, "listen": listen, "authorized_keys": authorized},
        claude={"binary": str(tmp_path / "no-claude")},  # nothing to probe
        logging={"file": None},
    )


def manhole_of(service: PocketAgentService) -> ManholeService:
    [manhole] = [s for s in service if isinstance(s, ManholeService)]
    return manhole


# --------------------------------------------------------------- start-up rules


def test_off_by_default(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.manhole.enabled is False
    service = build_service(config, MemoryReactorClock())
    assert not [s for s in service if isinstance(s, ManholeService)]
    assert not (config.data_dir / HOST_KEY_NAME).exists()


def test_enabled_builds_it_with_a_host_key_made_once_mode_0600(tmp_path: Path) -> None:
    config = manhole_config(tmp_path, [new_key()], "tcp6:0:interface=\\:\\:1")
    reactor = MemoryReactorClock()
    service = build_service(config, reactor)
    host_key = config.data_dir / HOST_KEY_NAME
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    first = host_key.read_bytes()
    manhole_of(service).privilegedStartService()  # ::1 is loopback
    assert reactor.tcpServers[-1][3] == "::1"
    build_service(config, MemoryReactorClock())
    assert host_key.read_bytes() == first  # kept, so known_hosts stays valid


def test_pa_enable_manhole_turns_it_on(tmp_path: Path) -> None:
    from pocket_agent.config import Overrides, load_config

    config = load_config(Overrides(root=str(tmp_path)), environ={"PA_ENABLE_MANHOLE": "true"})
    assert config.manhole.enabled is True


@pytest.mark.parametrize("content", [None, "", "# only a comment\n"])
def test_no_authorized_key_is_a_start_up_error(tmp_path: Path, content: str | None) -> None:
    config = manhole_config(tmp_path, [], "tcp:0:interface=127.0.0.1")
    if content is None:
        config.manhole.authorized_keys.unlink()
    else:
        config.manhole.authorized_keys.write_text(content)
    with pytest.raises(StartupError, match=r"manhole\.authorized_keys") as caught:
        build_service(config, MemoryReactorClock())
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("listen", ["ssl:2222", "unix:/tmp/manhole.sock", "systemd:index=1"])
def test_only_tcp_listeners(tmp_path: Path, listen: str) -> None:
    config = manhole_config(tmp_path, [new_key()], listen)
    with pytest.raises(StartupError, match=r"manhole\.listen"):
        build_service(config, MemoryReactorClock())


def test_a_readable_host_key_is_refused(tmp_path: Path) -> None:
    config = manhole_config(tmp_path, [new_key()], "tcp:0:interface=127.0.0.1")
    build_service(config, MemoryReactorClock())
    (config.data_dir / HOST_KEY_NAME).chmod(0o644)
    with pytest.raises(StartupError, match="chmod 600"):
        build_service(config, MemoryReactorClock())


@pytest.mark.e2e
@pytest.mark.parametrize("listen", ["tcp:0", "tcp:0:interface=0.0.0.0"])
@pytest_twisted.inlineCallbacks
def test_refuses_to_listen_off_loopback(tmp_path: Path, listen: str) -> Generator[Any, Any, None]:
    """Judged on the address really bound (real reactor, real socket), then closed."""
    config = manhole_config(tmp_path, [new_key()], listen)
    manhole = manhole_of(build_service(config, reactor))
    with pytest.raises(StartupError, match="not on loopback") as caught:
        manhole.privilegedStartService()
    assert "\n" not in caught.value.message
    [listener] = list(manhole)
    port: Any = listener.port
    assert manhole.closing is not None
    yield manhole.closing.addTimeout(WAIT, reactor)
    assert port is not None and not port.connected  # closed again at once


# ------------------------------------------------------------ a real SSH client


class Shell(channel.SSHChannel):
    name = b"session"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output = b""
        self.waiting: list[tuple[bytes, defer.Deferred[bytes]]] = []
        self.opened: defer.Deferred[None] = defer.Deferred()

    def channelOpen(self, specificData: bytes) -> None:
        pty = session.packRequest_pty_req(b"xterm", (24, 80, 0, 0), b"")
        d = self.conn.sendRequest(self, b"pty-req", pty, wantReply=True)
        d.addCallback(lambda _: self.conn.sendRequest(self, b"shell", b"", wantReply=True))
        d.chainDeferred(self.opened)

    def dataReceived(self, data: bytes) -> None:
        self.output += data
        for item in list(self.waiting):
            if item[0] in self.output:
                self.waiting.remove(item)
                item[1].callback(self.output)

    def wait_for(self, text: bytes) -> defer.Deferred[bytes]:
        d: defer.Deferred[bytes] = defer.Deferred()
        self.waiting.append((text, d))
        self.dataReceived(b"")
        return d.addTimeout(WAIT, reactor)


class Connection(connection.SSHConnection):
    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.transport.factory.logged_in.callback(self)


class UserAuth(userauth.SSHUserAuthClient):
    """Offers one key, then gives up (no password, no keyboard-interactive)."""

    def __init__(self, user: bytes, key: Key, instance: Connection) -> None:
        super().__init__(user, instance)
        self.key: Key | None = key
        self.offered: Key | None = None

    def getPublicKey(self) -> Key | None:
        self.offered, self.key = self.key, None
        return self.offered.public() if self.offered else None

    def getPrivateKey(self) -> defer.Deferred[Key]:
        assert self.offered is not None
        return defer.succeed(self.offered)

    def getPassword(self, prompt: bytes | None = None) -> None:
        return None

    def getGenericAnswers(self, *args: Any) -> defer.Deferred[Any]:
        return defer.fail(NotImplementedError())


class ClientTransport(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        self.factory.host_keys.append(Key.fromString(hostKey))
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        self.requestService(UserAuth(b"admin", self.factory.key, Connection()))

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        self.factory.disconnect_reasons.append(reason)
        super().sendDisconnect(reason, desc)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if not self.factory.lost.called:
            self.factory.lost.callback(
                reason.value if reason else None
            )  # the exception: a Failure would errback


class SSHClient(ClientFactory):
    protocol = ClientTransport

    def __init__(self, key: Key) -> None:
        self.key = key
        self.host_keys: list[Key] = []
        self.disconnect_reasons: list[int] = []  # what this client told the server
        self.logged_in: defer.Deferred[Connection] = defer.Deferred()
        self.lost: defer.Deferred[BaseException] = defer.Deferred()


@pytest.fixture
def running(tmp_path: Path) -> Generator[Callable[[list[Key]], Any], None, None]:
    """Starts the whole server (manhole on 127.0.0.1:0) on the real reactor."""
    started: list[PocketAgentService] = []

    def start(keys: list[Key]) -> tuple[PocketAgentService, int]:
        config = manhole_config(tmp_path, keys, "tcp:0:interface=127.0.0.1")
        config = attrs.evolve(config, listen=("ssl:0:interface=127.0.0.1",))
        service = build_service(config, reactor)
        service.privilegedStartService()
        service.startService()
        started.append(service)
        address = manhole_of(service).address
        assert address.host == "127.0.0.1"
        return service, address.port

    yield start
    for service in started:
        pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


def connect(port: int, key: Key) -> SSHClient:
    client = SSHClient(key)
    reactor.connectTCP("127.0.0.1", port, client, timeout=WAIT)
    return client


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_the_authorized_key_gets_a_python_shell_over_the_live_objects(
    running: Callable[[list[Key]], Any],
) -> Generator[Any, Any, None]:
    operator = new_key()
    service, port = running([new_key(), operator])
    client = connect(port, operator)
    conn = yield client.logged_in.addTimeout(WAIT, reactor)
    shell = Shell(conn=conn)
    conn.openChannel(shell)
    yield shell.opened.addTimeout(WAIT, reactor)
    yield shell.wait_for(b">>> ")
    shell.write(
        b"(registry is app.registry, hub is app.hub, executor is app.executor,"
        b" config is app.config, service.app is app, reactor.running)\r"
    )
    output = yield shell.wait_for(b"(True, True, True, True, True, True)")
    assert b"Error" not in output
    host_key = Key.fromFile(str(service.app.config.data_dir / HOST_KEY_NAME))
    assert client.host_keys == [host_key.public()]
    conn.transport.loseConnection()
    yield client.lost.addTimeout(WAIT, reactor)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_another_key_is_refused(running: Callable[[list[Key]], Any]) -> Generator[Any, Any, None]:
    from twisted.logger import globalLogPublisher

    _, port = running([new_key()])
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        client = connect(port, new_key())
        reason = yield client.lost.addTimeout(WAIT, reactor)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [e for e in logged if e.get("log_format") == "Manhole key refused"]  # said
    assert not client.logged_in.called
    assert client.host_keys  # it got as far as the key exchange: refused by auth, not TCP
    assert isinstance(reason, ConnectionDone)
    # The client hung up because the server refused its only key.
    assert client.disconnect_reasons == [transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE]
