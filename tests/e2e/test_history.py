"""Durability end to end: SIGKILL the daemon mid-run, restart, nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pocket_agent.runs.tree import alive

from .daemon import Client, DaemonPool, run_console
from .test_runs import FAKE_ENV, run_until_idle

pytestmark = pytest.mark.e2e


@pytest.fixture
def claude_log(tmp_path: Path) -> Iterator[Path]:
    """The fake claude's invocation log; every fake still alive at the end is killed by pid."""
    log = tmp_path / "claude.jsonl"
    yield log
    if log.exists():
        for line in log.read_text().splitlines():
            pid = json.loads(line)["pid"]
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigkill_mid_run_loses_nothing_and_seq_continues(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client], claude_log: Path
) -> None:
    env = {**FAKE_ENV, "FAKE_CLAUDE_LOG": str(claude_log)}
    daemon = daemons.start(root, home, env=env)
    client = clients(daemon)
    (home / "app").mkdir()
    pid = client.request("project_create", {"path": str(home / "app")}, request_id="c")[
        "project_id"
    ]
    client.request("project_join", project_id=pid, request_id="j")
    client.send("execute", {"prompt": "fake:slow:200:0.02"}, project_id=pid, request_id="x")
    received: list[dict[str, Any]] = []
    while len([r for r in received if r["direction"] == "claude"]) < 20:
        frame = client.expect("agent_message", timeout=20)
        received.append(frame["data"])
    daemon.kill()  # SIGKILL: no shutdown, no fsync, nothing
    client.close()

    again = daemons.start(root, home, env=env)
    phone = clients(again)
    phone.send("project_join", {"after_seq": 0}, project_id=pid, request_id="r")
    history = phone.expect("message_history", timeout=20)["data"]
    stored = history["messages"]
    seqs = [m["seq"] for m in stored]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert received == stored[: len(received)]  # everything the client saw is there, unchanged
    phone.send("execute", {"prompt": "after the crash"}, project_id=pid, request_id="y")
    frames = run_until_idle(phone)
    new = [f["data"]["seq"] for f in frames if f["type"] == "agent_message"]
    assert new[0] == seqs[-1] + 1
    assert new == list(range(new[0], new[0] + len(new)))


def test_repair_command(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = daemons.start(root, home, env=FAKE_ENV)
    client = clients(daemon)
    (home / "app").mkdir()
    pid = client.request("project_create", {"path": str(home / "app")}, request_id="c")[
        "project_id"
    ]
    client.request("project_join", project_id=pid, request_id="j")
    client.send("execute", {"prompt": "hello"}, project_id=pid, request_id="x")
    run_until_idle(client)
    refused = run_console(["repair", "--root", str(root)], home, root)
    assert refused.returncode == 1 and "stop the server first" in refused.stderr
    client.close()
    assert daemon.terminate() == 0

    current = root / "data" / "projects" / pid / "logs" / "messages_current.jsonl"
    good = current.read_bytes()
    current.write_bytes(good + b"not a record\n" + b'{"seq":99,"timestamp"')
    done = run_console(["repair", "--root", str(root)], home, root)
    assert done.returncode == 0, done.stderr
    assert f"history of {pid}" in done.stdout
    assert "torn bytes" in done.stdout and "skipped 1 invalid lines" in done.stdout
    assert current.read_bytes() == good + b"not a record\n"
    assert list((root / "data" / "corrupted").iterdir())
    last = good.splitlines()[-1]
    assert f"last_seq={json.loads(last)['seq']}" in done.stdout
