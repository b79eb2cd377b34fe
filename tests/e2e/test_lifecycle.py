"""Start-up, shutdown and restart of the real daemon (SPEC §2, §6, §9)."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .daemon import Client, DaemonPool, https_get

SHUTDOWN_DEADLINE = 5.0


@pytest.mark.e2e
def test_restart_keeps_projects(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    first = daemons.start(root, home)
    client = clients(first)
    ids = []
    for i, name in enumerate(("alpha", "beta")):
        reply = client.request(
            "project_create", {"path": str(home / name), "create": True}, request_id=f"c{i}"
        )
        assert reply["type"] == "project_state", reply
        ids.append(reply["project_id"])
    before = client.request("project_list", request_id="l1")["data"]["projects"]
    assert [p["id"] for p in before] == ids
    client.close()

    # The exit status is checked last, so a wrong one does not hide the restart checks.
    first_status = first.terminate()
    assert not first.lock.exists(), "data/.lock left behind by a clean shutdown"

    second = daemons.start(root, home)
    client = clients(second)
    after = client.request("project_list", request_id="l2")["data"]
    assert after["total"] == 2

    def identity(projects: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(p["id"], p["path"], p["created_at"]) for p in projects]

    assert identity(after["projects"]) == identity(before)
    assert [p["state"] for p in after["projects"]] == ["IDLE", "IDLE"]
    assert first_status == 0, f"SIGTERM: exit status {first_status}\n{first.output()}"


@pytest.mark.e2e
def test_sigterm_closes_connections_with_1001(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = daemons.start(root, home)
    client = clients(daemon)
    idle = clients(daemon)
    reply = client.request(
        "project_create", {"path": str(home / "p"), "create": True}, request_id="c"
    )
    client.send("project_join", project_id=reply["project_id"], request_id="j")
    client.replies("j", 2)

    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    for connection in (client, idle):
        closed = connection.wait_close(timeout=SHUTDOWN_DEADLINE)
        assert closed.code == 1001, closed
    status = daemon.wait_exit(timeout=SHUTDOWN_DEADLINE)
    assert time.monotonic() - started < SHUTDOWN_DEADLINE
    assert not daemon.lock.exists()
    assert status == 0, f"SIGTERM: exit status {status}\n{daemon.output()}"


@pytest.mark.e2e
def test_second_server_on_same_root_refuses(daemons: DaemonPool, root: Path, home: Path) -> None:
    first = daemons.start(root, home)
    assert first.lock.read_text().strip() == str(first.pid)

    second = daemons.start(root, home, wait_ready=False)
    status = second.wait_exit()
    output = second.output()
    assert status != 0, output
    assert re.search(rf"\b{first.pid}\b", output), output
    assert "listening on" not in output

    # The refused start did not disturb the running server.
    assert first.proc.poll() is None
    assert first.lock.read_text().strip() == str(first.pid)
    assert first.port is not None
    status, _, _ = https_get(first.port, "/health", first.tls_context())
    assert status == 200


@pytest.mark.e2e
def test_port_in_use_fails_startup(daemons: DaemonPool, root: Path, home: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemons.start(
            root, home, listen=f"ssl:{port}:interface=127.0.0.1", wait_ready=False
        )
        status = daemon.wait_exit()
        output = daemon.output()
    assert status != 0, output
    assert "cannot listen" in output, output
    assert str(port) in output

    # The failed start leaves at most a stale lock, which the next start takes over.
    daemons.start(root, home)


@pytest.mark.e2e
def test_sighup_reloads_and_keeps_serving(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = daemons.start(root, home)
    client = clients(daemon)
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_line(re.compile("SIGHUP: TLS certificate"), timeout=10)
    assert client.request("health", request_id="h")["type"] == "health_status"
    assert daemon.terminate() == 0
