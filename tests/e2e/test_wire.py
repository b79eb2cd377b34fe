"""The wire protocol over a real wss:// connection (SPEC §4)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .daemon import Client, DaemonPool

PROJECT_STATE_KEYS = {
    "id",
    "path",
    "state",
    "session_id",
    "created_at",
    "last_active",
    "last_seq",
    "subscriber_count",
}


def assert_invalid(message: dict[str, object], field: str | None = None) -> None:
    assert message["type"] == "error", message
    data = message["data"]
    assert isinstance(data, dict)
    assert data["code"] == "INVALID_MESSAGE", message
    assert isinstance(data["message"], str) and data["message"]
    if field is not None:
        assert data["details"]["field"] == field, message


@pytest.mark.e2e
def test_project_round_trip(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = daemons.start(root, home)
    owner = clients(daemon)
    watcher = clients(daemon)
    project_dir = home / "work" / "app"
    assert not project_dir.exists()

    # Create (the directory too): the reply echoes request_id and carries project_id.
    reply = owner.request(
        "project_create", {"path": str(project_dir), "create": True}, request_id="r-create"
    )
    assert reply["type"] == "project_state", reply
    state = reply["data"]
    assert PROJECT_STATE_KEYS <= set(state), state
    project_id = state["id"]
    assert reply["project_id"] == project_id
    assert state["path"] == os.path.realpath(project_dir)
    assert state["state"] == "IDLE"
    assert state["session_id"] is None
    assert state["last_seq"] == 0
    assert state["created_at"].endswith("Z")
    assert project_dir.is_dir()

    # Every connection hears about it, the creator included.
    for client in (watcher, owner):
        created = client.expect("project_created")
        assert created["project_id"] == project_id
        assert created["data"]["id"] == project_id
        assert created["data"]["path"] == state["path"]
        assert "request_id" not in created

    # Creating the same path again is idempotent: same project, no broadcast.
    again = owner.request("project_create", {"path": str(project_dir)}, request_id="r-again")
    assert again["type"] == "project_state"
    assert again["data"]["id"] == project_id

    listing = watcher.request("project_list", request_id="r-list")
    assert listing["type"] == "project_list_response"
    assert listing["data"]["total"] == 1
    assert [p["id"] for p in listing["data"]["projects"]] == [project_id]
    assert listing["data"]["projects"][0]["path"] == state["path"]

    # Join: project_state, then project_join, both echoing the request_id, in that order.
    owner.send("project_join", project_id=project_id, request_id="r-join")
    joined_state, joined = owner.replies("r-join", 2)
    assert joined_state["type"] == "project_state"
    assert joined_state["project_id"] == project_id
    assert joined_state["data"]["subscriber_count"] == 1
    assert joined["type"] == "project_join"
    assert joined["project_id"] == project_id
    assert joined["data"] == {
        "project_id": project_id,
        "state": "IDLE",
        "session_id": None,
        "last_seq": 0,
    }

    # Leave, addressed through the joined project (no project_id on the request).
    left = owner.request("project_leave", request_id="r-leave")
    assert left["type"] == "project_leave"
    assert left["data"] == {"project_id": project_id, "status": "left"}

    # Malformed frames: an INVALID_MESSAGE error each, and the connection stays usable.
    owner.send_raw("{this is not json")
    assert_invalid(owner.expect("error"), "frame")
    owner.send_raw("[1, 2, 3]")
    assert_invalid(owner.expect("error"), "frame")
    owner.send_raw(json.dumps({"data": {}}))
    assert_invalid(owner.expect("error"), "type")
    error = owner.request("no_such_request", request_id="r-unknown")
    assert_invalid(error, "type")
    error = owner.request("project_create", {"path": 42}, request_id="r-badpath")
    assert_invalid(error, "data.path")
    owner.ws.send_binary(b"\x00\x01")
    assert_invalid(owner.expect("error"))
    assert owner.request("health", request_id="r-health")["type"] == "health_status"

    # Delete: the reply to the requester, project_deleted to everyone else.
    deleted = owner.request("project_delete", project_id=project_id, request_id="r-delete")
    assert deleted["type"] == "project_delete"
    assert deleted["data"] == {"project_id": project_id, "status": "deleted"}
    gone = watcher.expect("project_deleted")
    assert gone["data"] == {"project_id": project_id}

    # The user's directory is never touched; the project is gone from the list.
    assert project_dir.is_dir()
    listing = watcher.request("project_list", request_id="r-list-2")
    assert listing["data"] == {"projects": [], "total": 0}
    error = owner.request("project_join", project_id=project_id, request_id="r-join-gone")
    assert error["type"] == "error"
    assert error["data"]["code"] == "PROJECT_NOT_FOUND"


@pytest.mark.e2e
def test_oversized_frame_closes_1009(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = daemons.start(root, home, env={"PA_MESSAGE_SIZE_LIMIT": "1KiB"})
    client = clients(daemon)
    assert client.hello is not None
    assert client.hello["data"]["limits"]["max_message_size"] == 1024

    # Under the limit: answered as usual.
    small = json.dumps({"type": "health", "request_id": "r" * 100})
    assert len(small) < 1024
    client.send_raw(small)
    assert client.expect("health_status")["request_id"] == "r" * 100

    big = json.dumps({"type": "project_list", "data": {"pad": ""}})
    big = big.replace('""', '"' + "x" * (4096 - len(big)) + '"')
    assert len(big) == 4096
    client.send_raw(big)
    closed = client.wait_close()
    assert closed.code == 1009, closed
