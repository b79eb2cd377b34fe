"""The real daemon under systemd's protocols, played by the test: ``$NOTIFY_SOCKET``
(sd_notify datagrams on a socket the test holds) and socket activation (a listening
socket the test opens and hands over as fd 3 with ``$LISTEN_FDS``/``$LISTEN_PID``)."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon import (
    TWISTD,
    Daemon,
    DaemonPool,
    daemon_env,
    https_get,
    tls_context,
)

pytestmark = pytest.mark.e2e

DEADLINE = 30.0
# What systemd does before exec: the socket at fd 3, LISTEN_PID = the exec'd pid.
ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="pocket-agent-server.socket")
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"pocket-agent-e2e-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(DEADLINE)  # a deadline for a foreign process, not a pause
    yield sock, "@" + name
    sock.close()


def datagram(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_then_watchdog_then_stopping(
    daemons: DaemonPool,
    root: Path,
    home: Path,
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, name = notify_socket
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s
    daemon = daemons.start(root, home, env=env, wait_ready=False)
    ready = datagram(sock)
    assert ready["READY"] == "1" and ready["MAINPID"] == str(daemon.pid)
    port = daemon.wait_ready()
    status, _, _ = https_get(port, "/health", tls_context(daemon.cert))
    assert status == 200  # READY meant serving
    assert datagram(sock) == {"WATCHDOG": "1"}  # sent with READY
    assert datagram(sock) == {"WATCHDOG": "1"}  # and again half a period later
    assert daemon.terminate() == 0
    seen = [datagram(sock)]
    while "STOPPING" not in seen[-1]:
        seen.append(datagram(sock))
    assert all(m == {"WATCHDOG": "1"} for m in seen[:-1])


class ActivatedDaemon(Daemon):
    """``twistd -n pocket-agent --listen systemd:domain=INET:index=0`` started the way
    systemd starts it: the listening socket as fd 3, ``LISTEN_PID`` its own pid."""

    def __init__(self, root: Path, home: Path, listening: socket.socket) -> None:
        self.root = root
        self.home = home
        fd = listening.fileno()
        twistd = [str(TWISTD), "-n", "--pidfile=", "pocket-agent", "--root", str(root)]
        twistd += ["--listen", "systemd:domain=INET:index=0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ACTIVATE, str(fd), *twistd],
            cwd=root,
            env=daemon_env(home),
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.port = None
        self._lines = []
        self._queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def test_socket_activation_serves_tls_on_the_inherited_socket(
    daemons: DaemonPool, root: Path, home: Path
) -> None:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    try:
        daemon = ActivatedDaemon(root, home, listening)
        daemons.daemons.append(daemon)  # stopped by pid at teardown
    finally:
        listening.close()  # the daemon holds its own copy
    assert daemon.wait_ready() == port
    status, _, body = https_get(port, "/health", tls_context(daemon.cert))
    assert status == 200 and b"status" in body
    assert daemon.terminate() == 0
