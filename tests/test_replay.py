"""get_messages and replay on join, over the in-memory WebSocket, with a run streaming."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Client, Harness
from tests.test_execution import INIT, RESULT, TEXT, setup, start


def history_of(client: Client, pid: str, **data: Any) -> dict[str, Any]:
    reply = client.one("get_messages", project_id=pid, request_id="g", data=data)
    assert reply["type"] == "message_history", reply
    assert reply["request_id"] == "g"
    return reply["data"]


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


def run_once(harness: Harness, client: Client, pid: str) -> list[dict[str, Any]]:
    process, replies = start(harness, client, pid)
    process.emit(INIT, TEXT, RESULT)
    process.exit(0)
    frames = replies + client.new()
    return [f["data"] for f in frames if f["type"] == "agent_message"]


def test_history_equals_what_was_streamed(harness: Harness) -> None:
    pid, [client] = setup(harness)
    live = run_once(harness, client, pid) + run_once(harness, client, pid)
    page = history_of(client, pid)
    assert page["messages"] == live
    assert (page["has_more"], page["first_seq"], page["last_seq"], page["project_last_seq"]) == (
        False,
        1,
        12,
        12,
    )


def test_paging_and_filters(harness: Harness) -> None:
    pid, [client] = setup(harness)
    live = run_once(harness, client, pid) + run_once(harness, client, pid)
    newest = history_of(client, pid, limit=4)
    assert seqs(newest["messages"]) == [9, 10, 11, 12] and newest["has_more"]
    older = history_of(client, pid, limit=4, before_seq=9)
    assert seqs(older["messages"]) == [5, 6, 7, 8] and older["has_more"]
    after = history_of(client, pid, after_seq=10)
    assert seqs(after["messages"]) == [11, 12] and not after["has_more"]
    claude_only = history_of(client, pid, direction="claude")
    assert [m["direction"] for m in claude_only["messages"]] == ["claude"] * 6
    since = history_of(client, pid, since=live[5]["timestamp"].replace("Z", "+00:00"))
    assert all(m["timestamp"] > live[5]["timestamp"] for m in since["messages"])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"limit": 0}, "data.limit"),
        ({"limit": 1001}, "data.limit"),
        ({"limit": "10"}, "data.limit"),
        ({"since": "yesterday"}, "data.since"),
        ({"since": "2026-01-01T00:00:00"}, "data.since"),
        ({"direction": "up"}, "data.direction"),
        ({"after_seq": -1}, "data.after_seq"),
        ({"before_seq": 1.5}, "data.before_seq"),
    ],
)
def test_bad_query_values(harness: Harness, data: dict[str, Any], field: str) -> None:
    pid, [client] = setup(harness)
    error = client.one("get_messages", project_id=pid, data=data)
    assert (error["data"]["code"], error["data"]["details"]["field"]) == ("INVALID_MESSAGE", field)


def test_unknown_project(harness: Harness) -> None:
    client, _ = harness.hello()
    error = client.one("get_messages", project_id="nope")
    assert error["data"]["code"] == "PROJECT_NOT_FOUND"


def test_join_replays_what_was_missed_while_a_run_streams(harness: Harness) -> None:
    pid, [watcher] = setup(harness)
    process, replies = start(harness, watcher, pid)
    process.emit(INIT, TEXT)
    seen_before = [
        f["data"]["seq"] for f in replies + watcher.new() if f["type"] == "agent_message"
    ]
    assert seen_before == [1, 2, 3, 4]
    # A phone that had seen up to seq 2 reconnects while records keep coming.
    phone, _ = harness.hello()
    phone.send("project_join", project_id=pid, data={"after_seq": 2})
    process.emit(TEXT)
    phone.send("health")
    process.emit(RESULT)
    process.exit(0)
    frames = phone.new()
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["project_state", "project_join", "message_history"]
    history = frames[2]["data"]
    assert seqs(history["messages"]) == [3, 4] and not history["has_more"]
    live = [f["data"]["seq"] for f in frames[3:] if f["type"] == "agent_message"]
    assert seqs(history["messages"]) + live == list(
        range(3, harness.app.registry.get(pid).last_seq + 1)
    )


def test_join_replay_is_capped_at_a_thousand_with_has_more(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    pid, [client] = setup(harness)
    history = harness.app.registry.history(pid)
    for i in range(1205):
        history.append(None, "server", {"type": "stderr", "text": str(i)})
    replies = client.request("project_join", project_id=pid, data={"after_seq": 0})
    page = replies[2]["data"]
    assert len(page["messages"]) == 1000 and page["has_more"]
    assert (page["first_seq"], page["last_seq"], page["project_last_seq"]) == (1, 1000, 1205)
    rest = history_of(client, pid, after_seq=1000, limit=1000)
    assert seqs(rest["messages"]) == list(range(1001, 1206)) and not rest["has_more"]
