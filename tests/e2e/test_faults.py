"""The fault suite against the real daemon: crashes, a full disk, a swapped directory.

Each test injects the fault into a real ``twistd -n pocket-agent`` (SIGKILL, a small
tmpfs under the data directory, a symlink where the project was) and checks what a
user would: nothing acknowledged lost or duplicated, no process left behind, every
run closed in history, a clear error instead of silence. Issue 8.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_claude import FAKE_CLAUDE

from .daemon import Client, Daemon, DaemonPool, Proc, connect

pytestmark = pytest.mark.e2e

FAKE_PATH = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
SEED = 20261201
KILLS = 20
CONFIG = "timeouts:\n  kill_grace: 0.3s\n  shutdown: 5s\n"


def fake_env(tmp: Path) -> dict[str, str]:
    return {
        "PA_CLAUDE_BINARY": str(FAKE_CLAUDE),
        "PATH": FAKE_PATH,
        "FAKE_CLAUDE_LOG": str(tmp / "claude.log"),
        "FAKE_CLAUDE_PIDFILE": str(tmp / "children.pid"),
    }


def started_processes(tmp: Path, seen: dict[int, Proc]) -> None:
    """Every fake claude and every child it started so far, identified while alive."""
    pids = []
    if (tmp / "claude.log").exists():
        pids += [json.loads(line)["pid"] for line in (tmp / "claude.log").read_text().splitlines()]
    if (tmp / "children.pid").exists():
        pids += [int(p) for p in (tmp / "children.pid").read_text().split()]
    for pid in pids:
        if pid not in seen:
            proc = Proc.of(pid)
            if proc is not None:
                seen[pid] = proc


def running(seen: dict[int, Proc]) -> list[Proc]:
    """Still alive. A zombie has died: it only waits for init, its new parent, to reap it."""
    return [proc for proc in seen.values() if proc.state() not in (None, "X", "Z")]


def all_records(client: Client, pid: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        after = records[-1]["seq"] if records else 0
        page = client.request(
            "get_messages",
            {"after_seq": after, "limit": 1000},
            project_id=pid,
            request_id=f"h{after}",
        )["data"]
        records += page["messages"]
        if not page["has_more"]:
            return records


def join(client: Client, pid: str) -> None:
    client.request("project_join", project_id=pid, request_id="j")
    client.expect("project_join")
    client.backlog.clear()


def start_with_project(
    daemons: DaemonPool, root: Path, home: Path, env: dict[str, str]
) -> tuple[Daemon, Client, str]:
    (root / "config.yaml").write_text(CONFIG)
    daemon = daemons.start(root, home, env=env)
    (home / "app").mkdir()
    client = connect(daemon)
    reply = client.request("project_create", {"path": str(home / "app")}, request_id="c")
    return daemon, client, str(reply["project_id"])


@pytest.fixture
def seen() -> Iterator[dict[int, Proc]]:
    """What the runs started; anything still alive at teardown is SIGKILLed by pid."""
    procs: dict[int, Proc] = {}
    yield procs
    for proc in procs.values():
        proc.kill()


# ------------------------------------------------------------------- crashes


def test_sigkills_at_random_points_lose_nothing_and_leave_nothing_running(
    daemons: DaemonPool, root: Path, home: Path, tmp_path: Path, seen: dict[int, Proc]
) -> None:
    rng = random.Random(SEED)
    env = fake_env(tmp_path)
    daemon, client, pid = start_with_project(daemons, root, home, env)
    received: dict[int, dict[str, Any]] = {}  # every Record a client was sent
    cut_runs = []
    for i in range(KILLS):
        join(client, pid)
        scenario = rng.choice(["slow:400:0.005", "tree", "hang", "setsid_grandchild"])
        client.send("execute", {"prompt": f"fake:{scenario}"}, project_id=pid, request_id="x")
        run_id = client.expect("execute")["data"]["run_id"]
        cut_runs.append(run_id)
        wanted = rng.randint(2, 40 if scenario.startswith("slow") else 4)
        for _ in range(wanted):
            frame = client.expect("agent_message", timeout=20)
            received[frame["data"]["seq"]] = frame["data"]
        started_processes(tmp_path, seen)
        client.close()
        daemon.kill()  # SIGKILL: no shutdown, no execution_finished
        daemon = daemons.start(root, home, env=env)
        assert "Closed run" in daemon.output(), daemon.output()
        client = connect(daemon)
        assert running(seen) == [], f"kill {i} ({scenario}): still running"

    records = all_records(client, pid)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    by_seq = {r["seq"]: r for r in records}
    assert all(by_seq[seq] == record for seq, record in received.items())
    started = [r["run_id"] for r in records if r["message"]["type"] == "execution_started"]
    ends = {
        r["run_id"]: r["message"] for r in records if r["message"]["type"] == "execution_finished"
    }
    assert started == cut_runs
    assert all(
        (ends[run]["outcome"], ends[run]["reason"]) == ("killed", "server_crash")
        for run in started
    )
    client.close()
    assert "Traceback" not in daemon.output()


def test_what_ignores_sigterm_is_killed_by_the_sweep(
    daemons: DaemonPool, root: Path, home: Path, tmp_path: Path, seen: dict[int, Proc]
) -> None:
    """The fake and both children ignore SIGINT and SIGTERM: the sweep must escalate."""
    env = fake_env(tmp_path)
    daemon, client, pid = start_with_project(daemons, root, home, env)
    join(client, pid)
    client.send("execute", {"prompt": "fake:stubborn"}, project_id=pid, request_id="x")
    client.expect("execute")
    for _ in range(2):  # the assistant says "started <pid>" for each child
        client.expect(
            lambda m: (
                m["type"] == "agent_message"
                and m["data"]["message"].get("type") == "assistant"
                and '"started ' in json.dumps(m["data"]["message"])
            ),
            timeout=20,
        )
    started_processes(tmp_path, seen)
    assert len(seen) >= 3  # the fake and its two children, all ignoring SIGTERM
    client.close()
    daemon.kill()
    daemon = daemons.start(root, home, env=env)
    assert running(seen) == []
    assert "SIGKILL" in daemon.output()


# ----------------------------------------------------------------- full disk


@pytest.fixture
def small_data_dir(root: Path) -> Iterator[Path]:
    """``root/data`` on a 2 MiB tmpfs (CI runs as root), unmounted at teardown."""
    data = root / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """A file that takes all but ``leave`` bytes of the filesystem."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_stops_the_run_tells_everyone_and_recovers_by_itself(
    daemons: DaemonPool,
    root: Path,
    home: Path,
    tmp_path: Path,
    small_data_dir: Path,
    clients: Callable[..., Client],
) -> None:
    env = fake_env(tmp_path)
    (root / "config.yaml").write_text(CONFIG)
    daemon = daemons.start(root, home, env=env)
    (home / "app").mkdir()
    a, b = clients(daemon), clients(daemon)
    pid = a.request("project_create", {"path": str(home / "app")}, request_id="c")["project_id"]
    for client in (a, b):
        join(client, pid)
    filler = fill(small_data_dir, leave=48 * 1024)
    a.send("execute", {"prompt": "fake:slow:3000:0"}, project_id=pid, request_id="x")
    assert a.expect("execute")["data"]["status"] == "started"
    for client in (a, b):
        error = client.expect(
            lambda m: m["type"] == "error" and m["data"]["code"] == "STORAGE_ERROR", timeout=20
        )
        assert error["project_id"] == pid
        assert "No space left on device" in error["data"]["message"]
        finished = client.expect("execution_finished", timeout=20)["data"]
        assert (finished["outcome"], finished["reason"]) == ("failed", "storage")
        state = client.expect(
            lambda m: m["type"] == "project_state" and m["data"]["state"] != "EXECUTING"
        )
        assert state["data"]["state"] == "ERROR"
        assert "records of this run were not stored" in state["data"]["error_details"]
    health = a.request("health", request_id="h")["data"]
    assert health["status"] == "degraded" and health["storage"]["writable"] is False
    # Later requests get a clear answer, not INTERNAL_ERROR.
    again = a.request("execute", {"prompt": "hello"}, project_id=pid, request_id="y")
    assert again["type"] == "error" and again["data"]["code"] == "STORAGE_ERROR"

    filler.unlink()
    daemon.wait_for_line(__import__("re").compile("takes writes again"), timeout=10)
    assert a.request("health", request_id="h2")["data"]["storage"]["writable"] is True
    records = all_records(a, pid)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(seqs) + 1))  # what was written is intact
    assert records[-1]["message"]["type"] == "execution_finished"  # written once space came back
    a.backlog.clear()
    a.send("execute", {"prompt": "hello"}, project_id=pid, request_id="z")
    assert a.expect("execution_finished", timeout=20)["data"]["outcome"] == "success"
    log = (root / "server.log").read_text()
    assert log.count("Cannot write the data directory") == 1  # once, not once per line
    assert "Traceback" not in daemon.output()


# ----------------------------------------------------------- directory swap


def test_a_swapped_project_directory_starts_nothing(
    daemons: DaemonPool, root: Path, home: Path, tmp_path: Path
) -> None:
    env = fake_env(tmp_path)
    daemon: Daemon = daemons.start(root, home, env=env)
    (home / "swap").mkdir()
    client = connect(daemon)
    pid = client.request("project_create", {"path": str(home / "swap")}, request_id="c")[
        "project_id"
    ]
    (home / "swap").rmdir()
    (home / "swap").symlink_to("/")
    join(client, pid)
    reply = client.request("execute", {"prompt": "hello"}, project_id=pid, request_id="x")
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_PATH"
    assert "now resolves to /" in reply["data"]["message"]
    state = client.expect("project_state")["data"]
    assert state["state"] == "ERROR" and "now resolves to /" in state["error_details"]
    assert not (tmp_path / "claude.log").exists()  # claude was never started
    listed = client.request("project_list", request_id="l")["data"]["projects"]
    assert [p["state"] for p in listed if p["id"] == pid] == ["ERROR"]
    client.close()
