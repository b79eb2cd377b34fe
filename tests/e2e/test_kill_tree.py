"""``agent_kill`` against the real daemon: nothing a run started survives it (SPEC §5).

Each case starts a fake claude that leaves something hard to kill behind, waits until
it exists (the fake writes each child's pid to FAKE_CLAUDE_PIDFILE before it says
"started <pid>"; its own pid is in FAKE_CLAUDE_LOG) or until the flood is pouring, sends
``agent_kill`` and checks that the run ends ``killed`` within a bounded time and that
every one of those processes is gone: not alive, not a zombie, identified by pid and
start time. Every process the test's environment reached (its FAKE_CLAUDE_PIDFILE
value is in the environment of the daemon, claude and everything claude started) is
accounted for by a scan of ``/proc`` and SIGKILLed at teardown if a test failed.

``timeouts.kill_grace`` is 500ms, so the whole SIGINT ▸ SIGTERM ▸ SIGKILL escalation
takes about a second.
"""

from __future__ import annotations

import json
import threading
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
    ServerClosed,
    proc_environ,
    proc_stat,
    read_pids,
    said,
    wait_gone,
)

pytestmark = pytest.mark.e2e

KILL_GRACE = 0.5
# SIGINT, a grace, SIGTERM, a grace, SIGKILL, the reaping sweep: about 2 graces, and
# room for a busy machine.
KILL_DEADLINE = 4 * KILL_GRACE + 2.0
GONE_DEADLINE = 2.0  # after execution_finished nothing should be left at all
FLOOD = 1 << 30
FLOOD_STREAMING = 32 << 20  # bytes written by the fake: the daemon is reading the flood
MAX_DAEMON_HWM_KB = 300 * 1024  # a daemon buffering the flood would be far over this


class Scene:
    """One daemon running the fake claude, and a project directory for it."""

    def __init__(self, daemons: DaemonPool, root: Path, home: Path) -> None:
        self.rig = FakeClaudeRig(root.parent)
        self.daemons = daemons
        self.root = root
        self.home = home
        self.project_dir = home / "app"
        self.project_dir.mkdir()

    def start(self, config: str = "") -> Daemon:
        """The daemon, with a fast kill escalation and ``config`` (YAML) added."""
        timeouts = f"timeouts:\n  kill_grace: {int(KILL_GRACE * 1000)}ms\n"
        (self.root / "config.yaml").write_text(timeouts + config)
        self.daemon = self.daemons.start(self.root, self.home, env=self.rig.env)
        return self.daemon

    def fake_pid(self) -> int:
        """The pid of the run's fake claude."""
        (pid,) = self.rig.run_pids()
        return pid

    def strays(self) -> list[int]:
        """Live processes the test's environment reached, the daemons aside."""
        return self.rig.strays(exclude=[d.pid for d in self.daemons.daemons])

    def cleanup(self) -> None:
        self.rig.kill_strays(exclude=[d.pid for d in self.daemons.daemons])


@pytest.fixture
def scene(daemons: DaemonPool, root: Path, home: Path) -> Iterator[Scene]:
    s = Scene(daemons, root, home)
    yield s
    s.cleanup()  # before the daemons go: a failed test leaves nothing running


def project(scene: Scene, client: Client) -> str:
    reply = client.request("project_create", {"path": str(scene.project_dir)}, request_id="c")
    return str(reply["project_id"])


def describe(proc: Proc) -> str:
    """Where a process stands, for failure messages: state, parent, group, session and
    the run marker the server puts in claude's environment."""
    stat = proc_stat(proc.pid) or ["?", "?", "?", "?", "?"]
    run_ids = [e for e in proc_environ(proc.pid) if e.startswith("POCKET_AGENT_RUN_ID=")]
    return (
        f"pid {proc.pid} state {proc.state()} ppid {stat[1]} pgrp {stat[2]} sid {stat[3]} "
        f"run marker {run_ids or 'none'}"
    )


def until_finished(client: Client, timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Frames up to execution_finished; its data and all the frames read."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = client.expect(lambda m: True, timeout=max(0.0, deadline - time.monotonic()))
        frames.append(frame)
        if frame["type"] == "execution_finished":
            return frame["data"], frames


@pytest.mark.parametrize(
    ("scenario", "children"),
    [("ignore_term_child", 1), ("double_fork", 1), ("stubborn", 2)],
)
def test_kill_leaves_nothing_behind(
    scene: Scene, clients: Callable[..., Client], scenario: str, children: int
) -> None:
    client = clients(scene.start())
    pid = project(scene, client)
    client.send("execute", {"prompt": f"fake:{scenario}"}, project_id=pid, request_id="x")
    started = [
        client.expect(lambda m: said(m).startswith("started "), 20) for _ in range(children)
    ]
    pids = read_pids(scene.rig.pidfile)
    assert [said(m) for m in started] == [f"started {p}" for p in pids]
    procs = [Proc.of(p) for p in (scene.fake_pid(), *pids)]
    assert None not in procs, f"not running before the kill: {procs}"
    tracked = [p for p in procs if p is not None]
    before = {p.pid: describe(p) for p in tracked}

    sent = time.monotonic()
    ack = client.request("agent_kill", project_id=pid, request_id="k", timeout=KILL_DEADLINE)
    assert ack["data"] == {"status": "killed"}
    finished, frames = until_finished(client, KILL_DEADLINE)
    took = time.monotonic() - sent
    left = wait_gone(tracked, GONE_DEADLINE)

    assert (finished["outcome"], finished.get("reason")) == ("killed", "user"), finished
    assert not [f for f in frames if f["type"] == "error"]
    assert not left, (
        f"{scenario}: still there {GONE_DEADLINE}s after execution_finished "
        f"(kill took {took:.2f}s): {[describe(p) for p in left]}; at the start: {before}"
    )
    assert scene.strays() == []
    assert took < KILL_DEADLINE, f"the kill took {took:.2f}s"
    client.expect(lambda m: m["type"] == "project_state" and m["data"]["state"] == "IDLE")


class Drain(threading.Thread):
    """Reads a follower's frames as fast as they come (the flood must not make it a slow
    consumer by our fault) until execution_finished or the close."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.records = 0
        self.finished: dict[str, Any] | None = None
        self.finished_at: float | None = None
        self.closed: ServerClosed | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                frame = self.client._read(60.0)
                if frame["type"] == "agent_message":
                    self.records += 1
                elif frame["type"] == "execution_finished":
                    self.finished, self.finished_at = frame["data"], time.monotonic()
                    return
        except ServerClosed as closed:
            self.closed = closed
        except BaseException as e:  # reported by the test
            self.error = e


def written_by(pid: int) -> int:
    """Bytes a process has written so far (``/proc/<pid>/io`` wchar); -1 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return -1
    return int(next(line for line in text.splitlines() if line.startswith("wchar:")).split()[1])


def high_water_kb(daemon: Daemon) -> int:
    text = Path(f"/proc/{daemon.pid}/status").read_text()
    return int(next(line for line in text.splitlines() if line.startswith("VmHWM:")).split()[1])


@pytest.mark.parametrize(
    "scenario",
    [
        f"flood:{FLOOD}",  # one 1 GiB line: past the 16 MiB line limit; SIGINT stops it
        f"flood:{FLOOD}:65536:deaf",  # 16384 JSON lines of 64 KiB; only SIGTERM stops it
    ],
    ids=["one_line", "lines_deaf"],
)
def test_kill_during_a_1gib_flood(
    scene: Scene, clients: Callable[..., Client], scenario: str
) -> None:
    # The follower is a Python thread on a shared machine: a bigger send buffer than the
    # default 8MiB keeps it from being dropped as a slow consumer (SPEC §9) most of the
    # time. When it is dropped all the same, a new follower learns how the run ended.
    daemon = scene.start("limits:\n  send_buffer: 64MiB\n")
    watcher, controller = clients(daemon), clients(daemon)
    pid = project(scene, controller)
    watcher.send("execute", {"prompt": f"fake:{scenario}"}, project_id=pid, request_id="x")
    watcher.expect(lambda m: said(m) == f"flooding {FLOOD} bytes", 20)
    poured_from = time.monotonic()
    drain = Drain(watcher)
    drain.start()
    fake = Proc.of(scene.fake_pid())
    assert fake is not None
    deadline = time.monotonic() + 20
    while (written := written_by(fake.pid)) < FLOOD_STREAMING:
        assert written >= 0, "the fake ended before the flood was under way"
        assert time.monotonic() < deadline, f"the daemon read only {written} bytes in 20s"
        time.sleep(0.005)  # a poll with a deadline: /proc/<pid>/io has no event to await
    started = time.monotonic()
    rate = written / (started - poured_from) / 1e6

    ack = controller.request("agent_kill", project_id=pid, request_id="k", timeout=KILL_DEADLINE)
    acked = time.monotonic() - started
    drain.join(KILL_DEADLINE)
    finished, finished_at, late = drain.finished, drain.finished_at, None
    if finished is None and not drain.is_alive():  # the follower was dropped
        late = clients(daemon)
        joined = late.request(
            "project_join", project_id=pid, request_id="j", timeout=KILL_DEADLINE
        )
        if late.expect("project_join")["data"]["state"] == "EXECUTING":
            finished, _ = until_finished(late, KILL_DEADLINE)
        else:  # over already: the history has its end
            page = late.request("get_messages", {"limit": 1}, project_id=pid, request_id="g")
            finished = page["data"]["messages"][0]["message"]
        finished_at = time.monotonic()
        assert joined["type"] == "project_state"
    finished_after = finished_at - started if finished_at else None
    left = wait_gone([fake], GONE_DEADLINE)
    report = (
        f"{scenario}: {written >> 20} MiB read by the daemon at the kill ({rate:.0f} MB/s), "
        f"ack after {acked:.2f}s, execution_finished after {finished_after}s, "
        f"{drain.records} records to the follower, dropped: {drain.closed or drain.error!r}"
        f"{' (the end read by a new follower)' if late else ''}"
    )

    assert ack["data"] == {"status": "killed"}, report
    assert finished is not None, report
    assert finished["outcome"] == "killed", (finished, report)
    assert not left, f"{report}; the fake is still there: {left}"
    assert scene.strays() == []
    assert finished_after is not None and finished_after < KILL_DEADLINE, report
    hwm = high_water_kb(daemon)
    assert hwm < MAX_DAEMON_HWM_KB, f"{report}; the daemon's peak RSS was {hwm} kB"
    # The daemon is not stuck behind the flood: it answers, and the history ends the run.
    page = controller.request("get_messages", {"limit": 1}, project_id=pid, request_id="g")
    (last,) = page["data"]["messages"]
    assert last["message"]["type"] == "execution_finished", json.dumps(last)[:500]
    assert controller.request("health", request_id="h")["type"] == "health_status"
