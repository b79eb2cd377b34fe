"""SPEC §10 end to end: the daemon runs the fake claude, phones answer its permission
prompts over wss://, from any device, across a reconnect and a shutdown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .daemon import Client, DaemonPool, connect
from .test_runs import run_until_idle
from .test_runs import setup as two_followers

pytestmark = pytest.mark.e2e

RUN_WAIT = 20.0


def record_of(kind: str) -> Callable[[dict[str, Any]], bool]:
    def match(frame: dict[str, Any]) -> bool:
        return bool(frame["type"] == "agent_message" and frame["data"]["message"]["type"] == kind)

    return match


def awaiting(value: bool) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "project_state" and f["data"]["awaiting_approval"] is value


def history(root: Path, pid: str) -> list[dict[str, Any]]:
    stored = root / "data" / "projects" / pid / "logs" / "messages_current.jsonl"
    return [json.loads(line) for line in stored.read_text().splitlines()]


def test_one_device_asks_another_approves(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon, pid, a, b = two_followers(daemons, root, home, clients)
    projects_screen = clients(daemon)  # follows no project: hears only the flips
    a.send("execute", {"prompt": "fake:ask_write:new.txt:hello"}, project_id=pid, request_id="x")
    requests = [c.expect(record_of("permission_request"), RUN_WAIT)["data"] for c in (a, b)]
    assert requests[0] == requests[1]
    request = requests[0]["message"]
    assert (request["kind"], request["tool_name"]) == ("tool", "Write")
    assert request["preview"]["diff"].startswith("--- /dev/null\n+++ b/new.txt\n")
    for client in (a, b, projects_screen):
        state = client.expect(awaiting(True))["data"]
        assert (state["id"], state["state"]) == (pid, "EXECUTING")
        assert state["pending_permissions"] == [request]
    assert not (home / "app" / "new.txt").exists()

    permission_id = request["permission_id"]
    ok = b.request(
        "permission_response",
        {"permission_id": permission_id, "behavior": "allow"},
        project_id=pid,
        request_id="ok",
    )
    assert (ok["type"], ok["data"]) == (
        "permission_response",
        {"permission_id": permission_id, "status": "applied"},
    )
    late = a.request(
        "permission_response",
        {"permission_id": permission_id, "behavior": "deny"},
        project_id=pid,
        request_id="late",
    )
    assert late["data"] == {"permission_id": permission_id, "status": "already_resolved"}

    frames = run_until_idle(a)
    finished = next(f for f in frames if f["type"] == "execution_finished")["data"]
    assert finished["outcome"] == "success"
    assert not [f for f in frames if f["type"] == "error"]
    assert (home / "app" / "new.txt").read_text() == "hello\n"
    resolved = [
        f["data"]["message"] for f in a.backlog + frames if record_of("permission_resolved")(f)
    ]
    assert len(resolved) == 1
    assert (resolved[0]["behavior"], resolved[0]["reason"]) == ("allow", "user")
    assert b.hello is not None
    assert resolved[0]["by_connection_id"] == b.hello["data"]["connection_id"]
    assert projects_screen.expect(awaiting(False))["data"]["pending_permissions"] == []


def test_a_phone_that_reconnects_finds_the_open_prompt(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon, pid, a, b = two_followers(daemons, root, home, clients)
    a.send("execute", {"prompt": "fake:ask_write:new.txt:hello"}, project_id=pid, request_id="x")
    # b drops off once claude has asked, before the server has put the prompt to anyone.
    last_seen = b.expect(record_of("control_request"), RUN_WAIT)["data"]["seq"]
    b.close()
    request = a.expect(record_of("permission_request"), RUN_WAIT)["data"]
    assert request["seq"] > last_seen

    phone = clients(daemon)
    phone.send("project_join", {"after_seq": last_seen}, project_id=pid, request_id="j")
    state = phone.expect("project_state")["data"]
    assert state["awaiting_approval"] is True
    assert state["pending_permissions"] == [request["message"]]
    assert phone.expect("project_join")["data"]["last_seq"] >= request["seq"]
    replayed = phone.expect("message_history")["data"]["messages"]
    assert replayed[0]["seq"] == last_seen + 1
    assert request in replayed

    permission_id = request["message"]["permission_id"]
    ok = phone.request(
        "permission_response",
        {"permission_id": permission_id, "behavior": "allow"},
        project_id=pid,
        request_id="ok",
    )
    assert ok["data"]["status"] == "applied"
    frames = run_until_idle(phone)
    finished = next(f for f in frames if f["type"] == "execution_finished")["data"]
    assert finished["outcome"] == "success"
    assert (home / "app" / "new.txt").read_text() == "hello\n"


def test_shutdown_while_a_prompt_is_pending_resolves_it_before_the_end(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon, pid, a, _b = two_followers(daemons, root, home, clients)
    a.send("execute", {"prompt": "fake:ask_write:new.txt"}, project_id=pid, request_id="x")
    request = a.expect(record_of("permission_request"), RUN_WAIT)["data"]["message"]
    assert daemon.terminate() == 0

    messages = [r["message"] for r in history(root, pid)]
    kinds = [m["type"] for m in messages]
    resolved = [m for m in messages if m["type"] == "permission_resolved"]
    assert len(resolved) == 1
    assert (resolved[0]["permission_id"], resolved[0]["behavior"], resolved[0]["reason"]) == (
        request["permission_id"],
        "deny",
        "run_ended",
    )
    assert kinds.index("permission_resolved") < kinds.index("execution_finished")
    end = messages[-1]
    assert (end["type"], end["outcome"], end["reason"]) == (
        "execution_finished",
        "killed",
        "shutdown",
    )
    assert not (home / "app" / "new.txt").exists()

    # After a restart nobody is asked any more: the prompt is in the past.
    again = daemons.start(root, home, env={})
    phone = connect(again)
    try:
        state = phone.request("project_join", project_id=pid, request_id="j")["data"]
        assert (state["awaiting_approval"], state["pending_permissions"]) == (False, [])
        page = phone.request("get_messages", {"limit": 1000}, project_id=pid, request_id="m")
        assert [r["message"] for r in page["data"]["messages"]] == messages
    finally:
        phone.close()
