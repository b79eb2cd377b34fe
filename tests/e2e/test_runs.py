"""Claude runs end to end over wss://, with the fake claude as the binary."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_claude import FAKE_CLAUDE

from .daemon import Client, DaemonPool

pytestmark = pytest.mark.e2e

FAKE_ENV = {
    "PA_CLAUDE_BINARY": str(FAKE_CLAUDE),
    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
}


def run_until_idle(client: Client) -> list[dict[str, Any]]:
    """Every frame up to and including the project_state that follows execution_finished."""
    frames: list[dict[str, Any]] = []
    finished = False
    while True:
        frame = client.expect(lambda m: True, timeout=20)
        frames.append(frame)
        if frame["type"] == "execution_finished":
            finished = True
        elif finished and frame["type"] == "project_state":
            return frames


def wait_for_assistant(client: Client) -> None:
    """Until claude has said something: the run is truly under way."""
    client.expect(
        lambda m: m["type"] == "agent_message" and m["data"]["message"].get("type") == "assistant",
        timeout=20,
    )


def setup(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> tuple[Any, str, Client, Client]:
    daemon = daemons.start(root, home, env=FAKE_ENV)
    a, b = clients(daemon), clients(daemon)
    (home / "app").mkdir()
    pid = a.request("project_create", {"path": str(home / "app")}, request_id="c")["project_id"]
    for client in (a, b):
        client.request("project_join", project_id=pid, request_id="j")
        client.expect("project_join")
        client.backlog.clear()
    return daemon, pid, a, b


def test_execute_streams_to_every_follower(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    _daemon, pid, a, b = setup(daemons, root, home, clients)
    a.send("execute", {"prompt": "fake:replay:hello"}, project_id=pid, request_id="x")
    frames_a = run_until_idle(a)
    frames_b = run_until_idle(b)
    types = [f["type"] for f in frames_a]
    assert types[0] == "project_state" and frames_a[0]["data"]["state"] == "EXECUTING"
    assert types[1] == "execute" and frames_a[1]["request_id"] == "x"
    assert "project_update" in types
    finished = next(f for f in frames_a if f["type"] == "execution_finished")["data"]
    assert finished["outcome"] == "success" and finished["exit_code"] == 0
    assert finished["cost_usd"] == pytest.approx(0.2679075)
    assert frames_a[-1]["data"]["state"] == "IDLE"
    assert [f for f in frames_a if f["type"] != "execute"] == frames_b
    records = [f["data"] for f in frames_a if f["type"] == "agent_message"]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    claude = [r["message"]["type"] for r in records if r["direction"] == "claude"]
    assert claude == ["system", "assistant", "result"]
    stored = (root / "data" / "projects" / pid / "logs" / "messages_current.jsonl").read_text()
    assert [json.loads(line) for line in stored.splitlines()] == records


def test_kill_over_the_wire(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    _daemon, pid, a, b = setup(daemons, root, home, clients)
    a.send("execute", {"prompt": "fake:hang"}, project_id=pid, request_id="x")
    wait_for_assistant(a)
    ack = a.request("agent_kill", project_id=pid, request_id="k")
    assert ack["data"] == {"status": "killed"}
    frames = run_until_idle(a)
    finished = next(f for f in frames if f["type"] == "execution_finished")["data"]
    assert (finished["outcome"], finished["reason"]) == ("killed", "user")
    assert not [f for f in frames if f["type"] == "error"]
    assert frames[-1]["data"]["state"] == "IDLE"
    assert b.expect("process_killed")["project_id"] == pid


def test_shutdown_during_a_run_records_it_and_exits_zero(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon, pid, a, _b = setup(daemons, root, home, clients)
    a.send("execute", {"prompt": "fake:hang"}, project_id=pid, request_id="x")
    wait_for_assistant(a)
    assert daemon.terminate() == 0
    lines = (
        (root / "data" / "projects" / pid / "logs" / "messages_current.jsonl")
        .read_text()
        .splitlines()
    )
    last = json.loads(lines[-1])["message"]
    assert (last["type"], last["outcome"], last["reason"]) == (
        "execution_finished",
        "killed",
        "shutdown",
    )
