"""Signals to the real daemon (SPEC §2, §9): SIGTERM at any moment of its life is one
clean shutdown (exit 0, no lock, no process left, the history closed), and SIGHUP
disturbs nobody.

"No process left" is checked twice: the pids the fake claude wrote to its pid file (and
its run's own pid from its log), identified by pid and start time, are gone; and no
live process carries the test's FAKE_CLAUDE_PIDFILE value in its environment, which
everything the daemon started (``claude --version`` probes included) inherits.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemon import (
    Client,
    Daemon,
    DaemonPool,
    FakeClaudeRig,
    Proc,
    read_jsonl,
    read_pids,
    said,
    wait_gone,
)

pytestmark = pytest.mark.e2e

KILL_GRACE = 0.5
SHUTDOWN = 5.0
EXIT_DEADLINE = SHUTDOWN + 2.0  # the process also has to unwind after the shutdown
GONE_DEADLINE = 2.0
CONFIG = f"timeouts:\n  kill_grace: {int(KILL_GRACE * 1000)}ms\n  shutdown: {int(SHUTDOWN)}s\n"
TRACEBACK = "Traceback (most recent call last)"


class Scene:
    """Daemons on one root with the fake claude (its ``--version`` hanging when asked)."""

    def __init__(
        self, daemons: DaemonPool, root: Path, home: Path, version_hang: bool = False
    ) -> None:
        extra = {"FAKE_CLAUDE_VERSION_HANG": "1"} if version_hang else {}
        self.rig = FakeClaudeRig(root.parent, extra)
        self.daemons = daemons
        self.root = root
        self.home = home
        (root / "config.yaml").write_text(CONFIG)
        (home / "app").mkdir()

    def start(self, wait_ready: bool = True) -> Daemon:
        return self.daemons.start(self.root, self.home, env=self.rig.env, wait_ready=wait_ready)

    def daemon_pids(self) -> list[int]:
        return [d.pid for d in self.daemons.daemons]

    def assert_nothing_left(self, procs: list[Proc]) -> None:
        left = wait_gone(procs, GONE_DEADLINE)
        assert not left, f"still there after the daemon exited: {left}"
        assert self.rig.strays(exclude=self.daemon_pids()) == []

    def cleanup(self) -> None:
        self.rig.kill_strays(exclude=self.daemon_pids())

    @property
    def server_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def scene(daemons: DaemonPool, root: Path, home: Path) -> Iterator[Scene]:
    s = Scene(daemons, root, home)
    yield s
    s.cleanup()


@pytest.fixture
def hanging_version_scene(daemons: DaemonPool, root: Path, home: Path) -> Iterator[Scene]:
    s = Scene(daemons, root, home, version_hang=True)
    yield s
    s.cleanup()


def exit_status(daemon: Daemon) -> int:
    """Waits for the exit; the status, with the output in the message if it fails."""
    started = time.monotonic()
    status = daemon.wait_exit(timeout=EXIT_DEADLINE)
    took = time.monotonic() - started
    assert status == 0, f"exit status {status} after {took:.2f}s:\n{daemon.output()}"
    return status


def assert_clean_output(scene: Scene, daemon: Daemon) -> None:
    assert TRACEBACK not in daemon.output(), daemon.output()
    assert TRACEBACK not in scene.server_log, scene.server_log


def project(scene: Scene, client: Client) -> str:
    reply = client.request("project_create", {"path": str(scene.home / "app")}, request_id="c")
    return str(reply["project_id"])


# ------------------------------------------------------------------ start-up

STARTUP_MOMENTS = {
    # twistd's first line: the plugin's makeService has run, the reactor has not
    "first_line": re.compile(r"starting up"),
    # the data-dir lock is held and the projects are loaded; no port is open yet
    "lock_taken": re.compile(r"Loaded \d+ projects"),
    # the ports are open; the reactor starts right after this line
    "ready": re.compile(r"listening on wss://"),
}


@pytest.mark.parametrize("moment", list(STARTUP_MOMENTS))
def test_sigterm_during_startup(hanging_version_scene: Scene, moment: str) -> None:
    scene = hanging_version_scene
    daemon = scene.start(wait_ready=False)
    daemon.wait_for_line(STARTUP_MOMENTS[moment], timeout=30)
    os.kill(daemon.pid, signal.SIGTERM)
    status = daemon.wait_exit(timeout=EXIT_DEADLINE)
    lock = daemon.lock.exists()
    assert (status, lock) == (0, False), (
        f"SIGTERM at {moment}: exit status {status}, data/.lock left: {lock}, "
        f"--version probes started: {read_pids(scene.rig.pidfile)}\n{daemon.output()}"
    )
    scene.assert_nothing_left([])  # the probes by their environment
    assert_clean_output(scene, daemon)


def test_sigterm_while_the_version_probe_hangs(
    hanging_version_scene: Scene, clients: Callable[..., Client]
) -> None:
    """A ``claude --version`` that never answers must not outlive the daemon."""
    scene = hanging_version_scene
    daemon = scene.start()
    client = clients(daemon)
    assert client.request("health", request_id="h")["type"] == "health_status"
    deadline = time.monotonic() + 10
    while not (pids := read_pids(scene.rig.pidfile)):  # the probe writes it, then hangs
        assert time.monotonic() < deadline, "no claude --version probe within 10s"
        time.sleep(0.01)  # a poll with a deadline: nothing tells us when another process writes
    probes = [Proc.of(pid) for pid in pids]
    assert None not in probes, f"the probe did not hang: {pids}"
    os.kill(daemon.pid, signal.SIGTERM)
    exit_status(daemon)
    assert not daemon.lock.exists()
    scene.assert_nothing_left([p for p in probes if p is not None])
    assert_clean_output(scene, daemon)


# ---------------------------------------------------------------- during runs


def start_run(
    scene: Scene, client: Client, scenario: str, children: int
) -> tuple[str, list[Proc]]:
    """Execute ``scenario`` and wait until it is under way; the project id and the
    processes of the run (the fake and the children it started)."""
    pid = project(scene, client)
    client.send("execute", {"prompt": f"fake:{scenario}"}, project_id=pid, request_id="x")
    if children:
        for _ in range(children):
            client.expect(lambda m: said(m).startswith("started "), 20)
    else:
        client.expect(lambda m: bool(said(m)), 20)
    pids = [*scene.rig.run_pids(), *read_pids(scene.rig.pidfile)]
    procs = [Proc.of(p) for p in pids]
    assert None not in procs, f"not running: {pids}"
    return pid, [p for p in procs if p is not None]


def history_after_restart(scene: Scene, clients: Callable[..., Client], pid: str) -> list[Any]:
    """The project's whole history, read from a fresh daemon on the same root."""
    client = clients(scene.start())
    page = client.request(
        "get_messages", {"after_seq": 0, "limit": 1000}, project_id=pid, request_id="g"
    )
    return [r["message"] for r in page["data"]["messages"]]


@pytest.mark.parametrize(("scenario", "children"), [("hang", 0), ("stubborn", 2)])
def test_sigterm_during_a_run(
    scene: Scene, clients: Callable[..., Client], scenario: str, children: int
) -> None:
    daemon = scene.start()
    pid, procs = start_run(scene, clients(daemon), scenario, children)
    os.kill(daemon.pid, signal.SIGTERM)
    exit_status(daemon)
    assert not daemon.lock.exists()
    scene.assert_nothing_left(procs)
    assert_clean_output(scene, daemon)
    finished = [
        m for m in history_after_restart(scene, clients, pid) if m["type"] == "execution_finished"
    ]
    assert [(m["outcome"], m.get("reason")) for m in finished] == [("killed", "shutdown")]


@pytest.mark.parametrize("when", ["back_to_back", "during_the_shutdown"])
def test_sigterm_twice_is_one_clean_shutdown(
    scene: Scene, clients: Callable[..., Client], when: str
) -> None:
    """Two SIGTERMs in a row may reach the process as one (a pending signal is not
    queued twice), so the second one also comes once the first has been logged."""
    daemon = scene.start()
    pid, procs = start_run(scene, clients(daemon), "hang", 0)
    os.kill(daemon.pid, signal.SIGTERM)
    if when == "during_the_shutdown":
        daemon.wait_for_line(re.compile("Received SIGTERM"), timeout=10)
    os.kill(daemon.pid, signal.SIGTERM)
    exit_status(daemon)
    assert not daemon.lock.exists()
    scene.assert_nothing_left(procs)
    assert_clean_output(scene, daemon)
    output = daemon.output()
    assert output.count("Server Shut Down.") == 1, output
    log = scene.root / "data" / "projects" / pid / "logs" / "messages_current.jsonl"
    messages = [r["message"] for r in read_jsonl(log)]
    finished = [m for m in messages if m["type"] == "execution_finished"]
    assert [(m["outcome"], m.get("reason")) for m in finished] == [("killed", "shutdown")]


# ---------------------------------------------------------------------- SIGHUP

SIGHUP_DONE = re.compile(r"SIGHUP: ")
PARTS = 20


def records_until_finished(client: Client) -> list[dict[str, Any]]:
    """The Records a follower receives up to and including execution_finished."""
    records = []
    while True:
        frame = client.expect(lambda m: m["type"] == "agent_message", timeout=20)
        records.append(frame["data"])
        if frame["data"]["message"]["type"] == "execution_finished":
            return records


def test_sighup_while_two_clients_stream(scene: Scene, clients: Callable[..., Client]) -> None:
    daemon = scene.start()
    a, b = clients(daemon), clients(daemon)
    pid = project(scene, a)
    for client in (a, b):
        client.request("project_join", project_id=pid, request_id="j")
        client.expect("project_join")
        client.backlog.clear()
    a.send("execute", {"prompt": f"fake:slow:{PARTS}:0.05"}, project_id=pid, request_id="x")
    # A SIGHUP at the first part, two back to back at the fifth (they may arrive as
    # one), one at the tenth; the daemon's log line for it is awaited each time.
    hups = {f"part {n}/{PARTS}": count for n, count in ((1, 1), (5, 2), (10, 1))}
    got_a: list[dict[str, Any]] = []
    while not got_a or got_a[-1]["message"]["type"] != "execution_finished":
        frame = a.expect(lambda m: m["type"] == "agent_message", timeout=20)
        got_a.append(frame["data"])
        for _ in range(hups.get(said(frame), 0)):
            os.kill(daemon.pid, signal.SIGHUP)
        if said(frame) in hups:
            daemon.wait_for_line(SIGHUP_DONE, timeout=10)
    # Both clients got every record, in order and without a gap, the run ended well,
    # and nobody was disconnected.
    got_b = records_until_finished(b)
    assert got_a == got_b
    seqs = [r["seq"] for r in got_a]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    parts = [
        said({"type": "agent_message", "data": r})
        for r in got_a
        if r["message"]["type"] == "assistant"
    ]
    assert parts == [f"part {i}/{PARTS}" for i in range(1, PARTS + 1)]
    assert got_a[-1]["message"]["outcome"] == "success", got_a[-1]
    page = a.request(
        "get_messages", {"after_seq": 0, "limit": 1000}, project_id=pid, request_id="g"
    )
    assert page["data"]["messages"] == got_a
    for client in (a, b):
        client.expect(lambda m: m["type"] == "project_state" and m["data"]["state"] == "IDLE")
        assert client.request("health", request_id="h")["type"] == "health_status"
    assert daemon.proc.poll() is None
    assert_clean_output(scene, daemon)
    os.kill(daemon.pid, signal.SIGTERM)
    exit_status(daemon)
    scene.assert_nothing_left([])
    assert_clean_output(scene, daemon)
    assert 3 <= len(re.findall(SIGHUP_DONE, daemon.output())) <= 4, daemon.output()
    for line in scene.server_log.splitlines():  # the JSON log is intact
        json.loads(line)
