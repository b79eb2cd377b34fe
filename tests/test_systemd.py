"""sd_notify: the datagrams systemd would get, received on a unix datagram socket the
test creates and names in ``$NOTIFY_SOCKET``; time is a ``MemoryReactorClock``."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from pocket_agent.compose import build_service
from pocket_agent.ops.systemd import (
    Notifier,
    SystemdNotifyService,
    socket_address,
    systemd_service,
    watchdog_interval,
)
from tests.support import make_config

ETC = Path(__file__).parent.parent / "etc"


class NotifySocket:
    """The receiving end systemd holds: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str | bytes, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.name = name  # what goes into $NOTIFY_SOCKET

    def received(self) -> list[dict[str, str]]:
        """Every datagram that arrived since the last call, each as its KEY=VALUE lines."""
        messages: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return messages
            messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    name = f"pocket-agent-test-{os.getpid()}-{id(object())}"
    receiver = NotifySocket(b"\0" + name.encode(), "@" + name)
    yield receiver
    receiver.close()


@pytest.fixture
def path_socket() -> Iterator[NotifySocket]:
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    directory = tempfile.mkdtemp(prefix="pa-sd-", dir="/tmp")
    path = os.path.join(directory, "notify")
    receiver = NotifySocket(path, path)
    yield receiver
    receiver.close()
    shutil.rmtree(directory)


def test_abstract_names_start_with_a_nul_byte() -> None:
    assert socket_address("@/org/freedesktop/systemd1/notify") == (
        b"\0/org/freedesktop/systemd1/notify"
    )
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None
    assert watchdog_interval({}, pid=7) is None


def test_without_notify_socket_nothing_is_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd_service({}, MemoryReactorClock()) is None
    service = build_service(make_config(tmp_path), MemoryReactorClock())
    assert not [s for s in service if isinstance(s, SystemdNotifyService)]


def test_ready_only_once_every_listener_is_up_and_stopping_at_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", abstract_socket.name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    config = make_config(tmp_path)
    reactor = MemoryReactorClock()
    service = build_service(config, reactor)
    children = list(service)
    assert isinstance(children[-1], SystemdNotifyService)  # started last, stopped first

    service.privilegedStartService()
    assert reactor.tcpServers  # listening, but not started: not ready yet
    assert abstract_socket.received() == []
    service.startService()
    [ready] = abstract_socket.received()
    assert ready["READY"] == "1"
    assert ready["MAINPID"] == str(os.getpid())
    assert all(child.running for child in children)  # the announcement has been made

    stopped = service.stopService()
    [stopping] = abstract_socket.received()
    assert stopping["STOPPING"] == "1"
    assert stopped.called


def test_a_path_socket_gets_the_datagrams_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_socket: NotifySocket
) -> None:
    notifier = systemd_service({"NOTIFY_SOCKET": path_socket.name}, MemoryReactorClock())
    assert notifier is not None
    notifier.startService()
    assert path_socket.received()[0]["READY"] == "1"
    notifier.stopService()
    assert path_socket.received()[0]["STOPPING"] == "1"


def test_watchdog_every_half_period_on_the_reactor_clock(abstract_socket: NotifySocket) -> None:
    clock = MemoryReactorClock()
    environ = {"NOTIFY_SOCKET": abstract_socket.name, "WATCHDOG_USEC": "4000000"}
    notifier = systemd_service(environ, clock)
    assert notifier is not None and notifier.watchdog == 2.0
    notifier.startService()
    ready, first_ping = abstract_socket.received()
    assert ready["READY"] == "1" and first_ping == {"WATCHDOG": "1"}
    clock.advance(1.9)
    assert abstract_socket.received() == []
    clock.advance(0.1)
    assert abstract_socket.received() == [{"WATCHDOG": "1"}]
    clock.advance(2.0)
    clock.advance(2.0)
    assert abstract_socket.received() == [{"WATCHDOG": "1"}, {"WATCHDOG": "1"}]
    notifier.stopService()
    assert [m.get("STOPPING") for m in abstract_socket.received()] == ["1"]
    clock.advance(10.0)
    assert abstract_socket.received() == []  # no pings once stopping
    assert not clock.getDelayedCalls()


def test_no_watchdog_for_another_pid(abstract_socket: NotifySocket) -> None:
    clock = MemoryReactorClock()
    environ = {
        "NOTIFY_SOCKET": abstract_socket.name,
        "WATCHDOG_USEC": "4000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    notifier = systemd_service(environ, clock)
    assert notifier is not None
    notifier.startService()
    clock.advance(10.0)
    assert [m.get("READY") for m in abstract_socket.received()] == ["1"]
    notifier.stopService()


def test_an_unreachable_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.send("READY=1") is False


# ------------------------------------------------------------------ etc/ files


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ETC / name)
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_the_unit_file_has_the_required_directives() -> None:
    service = unit("pocket-agent-server.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["LimitNOFILE"] == "65536"
    assert service["KillMode"] == "mixed"
    assert seconds(service["TimeoutStopSec"]) > 30  # timeouts.shutdown's default, 30s
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] in ("full", "strict")
    assert "twistd -n" in service["ExecStart"] or "pocket-agent-server" in service["ExecStart"]
    assert service["Restart"] == "on-failure"
    assert "WatchdogSec" in service


def test_the_socket_unit_feeds_the_systemd_endpoint() -> None:
    socket_unit = unit("pocket-agent-server.socket")
    assert socket_unit["Socket"]["ListenStream"]
    assert socket_unit["Socket"]["Service"] == "pocket-agent-server.service"
    assert "systemd:domain=INET:index=0" in (ETC / "pocket-agent-server.socket").read_text()


def test_the_nginx_block_proxies_websockets_and_never_trusts_loopback() -> None:
    text = (ETC / "nginx-pocket-agent.conf").read_text()
    assert "location /ws" in text
    assert re.search(r"proxy_http_version\s+1\.1;", text)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", text)
    assert re.search(r'proxy_set_header\s+Connection\s+"?upgrade"?;', text)
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for;", text)
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", text)
    assert timeout and int(timeout.group(1)) >= 3600
    assert "trusted_proxies" in text
