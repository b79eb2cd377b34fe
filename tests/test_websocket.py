"""The protocol over a real WebSocket handshake, in memory: every request and every error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import TOKEN, ActiveRun, Client, Harness


def refused_status(client: Client) -> str:
    assert not client.protocol.opened
    return str(client.protocol.wasNotCleanReason)


def create(client: Client, harness: Harness, name: str, **data: Any) -> dict[str, Any]:
    path = data.pop("path", None) or str(harness.project_dir(name))
    replies = client.request("project_create", data={"path": path, **data})
    assert replies[0]["type"] == "project_state", replies
    return replies[0]


# ----------------------------------------------------------------------------- hello


def test_hello_describes_the_connection(harness: Harness) -> None:
    _, hello = harness.hello()
    data = hello["data"]
    assert data["protocol_version"] == 1
    assert data["authenticated_as"] == "loopback"
    assert data["server_version"]
    assert data["connection_id"]
    assert data["limits"]["max_message_size"] == harness.config.limits.max_message_size


def test_each_connection_gets_its_own_id(harness: Harness) -> None:
    ids = {harness.hello()[1]["data"]["connection_id"] for _ in range(3)}
    assert len(ids) == 3


# ------------------------------------------------------------------------------ auth


def test_forwarded_request_without_token_is_refused_before_upgrade(harness: Harness) -> None:
    client = harness.connect(headers={"X-Forwarded-For": "203.0.113.9"})
    assert "401" in refused_status(client)
    assert harness.app.hub.connection_count == 0


@pytest.mark.parametrize("header", ["X-Real-IP", "Forwarded"])
def test_any_proxy_header_removes_loopback_trust(harness: Harness, header: str) -> None:
    assert "401" in refused_status(harness.connect(headers={header: "for=203.0.113.9"}))


def test_remote_peer_without_token_is_refused(harness: Harness) -> None:
    assert "401" in refused_status(harness.connect(peer="192.0.2.10"))


def test_wrong_token_is_refused_even_from_loopback(harness: Harness) -> None:
    client = harness.connect(headers={"Authorization": "Bearer not-the-token"})
    assert "401" in refused_status(client)


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"Authorization": f"Bearer {TOKEN}"}},
        {"headers": {"authorization": f"bearer {TOKEN}"}},
        {"query": f"?token={TOKEN}"},
        {"protocols": ["pocket-agent.v1", f"bearer.{TOKEN}"]},
    ],
    ids=["header", "header-lowercase", "query", "subprotocol"],
)
def test_token_is_accepted_from_a_remote_peer(harness: Harness, how: dict[str, Any]) -> None:
    _client, hello = harness.hello(peer="192.0.2.10", **how)
    assert hello["data"]["authenticated_as"] == "token"


def test_subprotocol_selected_is_ours_never_the_token(harness: Harness) -> None:
    client, _ = harness.hello(peer="192.0.2.10", protocols=["pocket-agent.v1", f"bearer.{TOKEN}"])
    assert client.protocol.websocket_protocol_in_use == "pocket-agent.v1"
    only_token, _ = harness.hello(peer="192.0.2.10", protocols=[f"bearer.{TOKEN}"])
    assert only_token.protocol.websocket_protocol_in_use is None


def test_ten_failures_in_a_minute_lock_the_address_out(harness: Harness) -> None:
    bad = {"peer": "192.0.2.10", "headers": {"Authorization": "Bearer wrong"}}
    for _ in range(10):
        assert "401" in refused_status(harness.connect(**bad))
    good = {"peer": "192.0.2.10", "headers": {"Authorization": f"Bearer {TOKEN}"}}
    assert "429" in refused_status(harness.connect(**good))
    # Another address is not affected.
    harness.hello(peer="192.0.2.11", headers={"Authorization": f"Bearer {TOKEN}"})
    harness.clock.advance(61)
    harness.hello(**good)
    assert harness.auth_failures == 11


def test_loopback_trust_can_be_turned_off(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(auth={"trust_loopback": False})
    assert "401" in refused_status(harness.connect())
    _, hello = harness.hello(headers={"Authorization": f"Bearer {TOKEN}"})
    assert hello["data"]["authenticated_as"] == "token"


def test_cross_site_browser_origin_is_refused(harness: Harness) -> None:
    assert "403" in refused_status(harness.connect(origin="https://evil.example"))


def test_same_origin_and_listed_origins_are_accepted(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(auth={"allowed_origins": ("https://app.example",)})
    harness.hello(origin="https://localhost:8443")
    token = {"Authorization": f"Bearer {TOKEN}"}
    harness.hello(origin="https://app.example", headers=token)
    # A listed page is not this machine: it gets no loopback trust.
    assert "401" in refused_status(harness.connect(origin="https://app.example"))
    assert "403" in refused_status(harness.connect(origin="https://localhost:9999"))
    assert "403" in refused_status(harness.connect(origin="null"))


def test_dns_rebinding_gets_no_loopback_trust(harness: Harness) -> None:
    client = harness.connect(origin="https://evil.example:8443", host="evil.example")
    assert "401" in refused_status(client)
    _, hello = harness.hello(host="evil.example", headers={"Authorization": f"Bearer {TOKEN}"})
    assert hello["data"]["authenticated_as"] == "token"


def test_cross_site_pages_cannot_lock_the_operator_out(harness: Harness) -> None:
    for _ in range(20):
        assert "403" in refused_status(
            harness.connect(origin="https://evil.example", query="?token=x")
        )
    harness.hello()  # loopback, no token: still fine
    assert harness.auth_failures == 0


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("not json", "frame"),
        ("[1, 2]", "frame"),
        ("{}", "type"),
        ('{"type": 3}', "type"),
        ('{"type": ""}', "type"),
        ('{"type": "no_such_thing"}', "type"),
        ('{"type": "health", "request_id": 7}', "request_id"),
        (json.dumps({"type": "health", "request_id": "r" * 129}), "request_id"),
        ('{"type": "health", "data": [1]}', "data"),
        ('{"type": "project_join", "project_id": 5}', "project_id"),
        ('{"type": "project_join", "data": {"project_id": 5}}', "data.project_id"),
        ('{"type": "project_create"}', "data.path"),
        ('{"type": "project_create", "data": {"path": 7}}', "data.path"),
        ('{"type": "project_create", "data": {"path": "/x", "create": "yes"}}', "data.create"),
        (
            '{"type": "project_join", "project_id": "p", "data": {"after_seq": -1}}',
            "data.after_seq",
        ),
        (
            '{"type": "project_join", "project_id": "p", "data": {"after_seq": "1"}}',
            "data.after_seq",
        ),
        (
            '{"type": "project_join", "project_id": "p", "data": {"after_seq": true}}',
            "data.after_seq",
        ),
        ('{"type": "project_join"}', "project_id"),
    ],
)
def test_malformed_frames_get_invalid_message_and_keep_the_connection(
    harness: Harness, frame: str, field: str
) -> None:
    client, _ = harness.hello()
    client.send_raw(frame)
    [error] = client.new()
    assert error["type"] == "error"
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert error["data"]["details"]["field"] == field
    assert client.one("health")["type"] == "health_status"


def test_binary_frames_are_refused_but_not_fatal(harness: Harness) -> None:
    client, _ = harness.hello()
    client.send_raw(b'{"type": "health"}', binary=True)
    [error] = client.new()
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert client.one("health")["type"] == "health_status"


def test_request_id_is_echoed_on_errors_even_for_bad_fields(harness: Harness) -> None:
    client, _ = harness.hello()
    error = client.one("project_create", request_id="r-1", data={"path": 7})
    assert error["request_id"] == "r-1"
    error = client.one("project_join", request_id="r-2", project_id="nope")
    assert (error["request_id"], error["data"]["code"]) == ("r-2", "PROJECT_NOT_FOUND")


def test_a_bug_is_an_internal_error_not_a_crash(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = harness.hello()

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.app.claude, "status", broken)
    error = client.one("health", request_id="h")
    assert (error["data"]["code"], error["request_id"]) == ("INTERNAL_ERROR", "h")
    assert "boom" not in error["data"]["message"]
    assert client.one("project_list")["type"] == "project_list_response"


# -------------------------------------------------------------------------- health


@pytest.mark.parametrize("mtype", ["health", "health_check"])
def test_health_reports_the_server(harness: Harness, mtype: str) -> None:
    client, _ = harness.hello()
    reply = client.one(mtype, request_id="h1")
    assert (reply["type"], reply["request_id"]) == ("health_status", "h1")
    data = reply["data"]
    assert data["status"] == "healthy"
    assert data["connections"] == {"active": 1, "max": 100}
    assert data["projects"] == {"count": 0, "max": 100}
    assert data["executions"] == {"active": 0, "max": 10}
    assert data["claude"] == {"available": True, "path": "/bin/sh", "version": None}
    assert data["disk"]["free_bytes"] > 0
    assert data["timestamp"].endswith("Z")


# ------------------------------------------------------------------------ projects


def test_create_replies_then_announces_to_every_connection(harness: Harness) -> None:
    client, _ = harness.hello()
    other, _ = harness.hello()
    path = harness.project_dir("app")
    reply, announced = client.request("project_create", request_id="c1", data={"path": str(path)})
    assert reply["type"] == "project_state"
    assert reply["request_id"] == "c1"
    state = reply["data"]
    assert reply["project_id"] == state["id"]
    assert state["path"] == str(path)
    assert (state["state"], state["session_id"], state["last_seq"]) == ("IDLE", None, 0)
    assert state["created_at"] == "1970-01-01T00:00:00.000Z"
    assert announced == {"type": "project_created", "project_id": state["id"], "data": state}
    assert other.new() == [announced]


def test_create_is_idempotent_for_the_same_path(harness: Harness) -> None:
    client, _ = harness.hello()
    other, _ = harness.hello()
    first = create(client, harness, "app")
    other.new()
    again = client.request("project_create", data={"path": first["data"]["path"] + "/"})
    assert [m["type"] for m in again] == ["project_state"]
    assert again[0]["project_id"] == first["project_id"]
    assert other.new() == []


def test_create_true_makes_the_directory(harness: Harness) -> None:
    client, _ = harness.hello()
    target = harness.home / "new" / "deep"
    reply = client.request("project_create", data={"path": str(target), "create": True})[0]
    assert reply["type"] == "project_state"
    assert target.is_dir()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("relative/path", "INVALID_PATH"),
        ("/etc", "INVALID_PATH"),
        ("{home}/missing", "INVALID_PATH"),
        ("{home}/app/inner", "PROJECT_NESTING"),
        ("{home}", "PROJECT_NESTING"),
    ],
)
def test_create_refusals(harness: Harness, path: str, code: str) -> None:
    client, _ = harness.hello()
    create(client, harness, "app")
    (harness.home / "app" / "inner").mkdir()
    error = client.one("project_create", data={"path": path.format(home=harness.home)})
    assert error["type"] == "error"
    assert error["data"]["code"] == code


def test_project_limit(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"max_projects": 2})
    client, _ = harness.hello()
    create(client, harness, "a")
    create(client, harness, "b")
    error = client.one("project_create", data={"path": str(harness.project_dir("c"))})
    assert error["data"]["code"] == "PROJECT_LIMIT"
    assert error["data"]["details"] == {"resource": "projects", "limit": 2}


def test_list_is_oldest_first(harness: Harness) -> None:
    client, _ = harness.hello()
    assert client.one("project_list")["data"] == {"projects": [], "total": 0}
    ids = []
    for name in ("b", "a", "c"):
        ids.append(create(client, harness, name)["project_id"])
        harness.clock.advance(1)
    listing = client.one("project_list", request_id="l")
    assert listing["type"] == "project_list_response"
    assert listing["request_id"] == "l"
    assert [p["id"] for p in listing["data"]["projects"]] == ids
    assert listing["data"]["total"] == 3


def test_join_sends_state_then_join(harness: Harness) -> None:
    client, _ = harness.hello()
    pid = create(client, harness, "app")["project_id"]
    state, joined = client.request("project_join", project_id=pid, request_id="j")
    assert (state["type"], state["request_id"], state["project_id"]) == ("project_state", "j", pid)
    assert state["data"]["subscriber_count"] == 1
    assert joined == {
        "type": "project_join",
        "project_id": pid,
        "request_id": "j",
        "data": {"project_id": pid, "state": "IDLE", "session_id": None, "last_seq": 0},
    }


def test_join_with_after_seq_replays_history(harness: Harness) -> None:
    client, _ = harness.hello()
    pid = create(client, harness, "app")["project_id"]
    replies = client.request("project_join", project_id=pid, data={"after_seq": 0})
    assert [m["type"] for m in replies] == ["project_state", "project_join", "message_history"]
    assert replies[2]["data"]["messages"] == []
    assert replies[2]["data"]["has_more"] is False


def test_project_id_may_come_from_data(harness: Harness) -> None:
    client, _ = harness.hello()
    pid = create(client, harness, "app")["project_id"]
    replies = client.request("project_join", data={"project_id": pid})
    assert replies[1]["data"]["project_id"] == pid


def test_a_connection_follows_several_projects_and_defaults_to_the_last_joined(
    harness: Harness,
) -> None:
    client, _ = harness.hello()
    first = create(client, harness, "a")["project_id"]
    second = create(client, harness, "b")["project_id"]
    client.request("project_join", project_id=first)
    client.request("project_join", project_id=second)
    assert set(harness.app.hub.following(client.server.connection)) == {first, second}
    left = client.one("project_leave")  # no project_id: the last joined
    assert left["data"] == {"project_id": second, "status": "left"}
    left = client.one("project_leave")
    assert left["data"] == {"project_id": first, "status": "left"}
    error = client.one("project_leave")
    assert error["data"]["code"] == "INVALID_MESSAGE"


def test_subscriber_count_follows_joins_leaves_and_disconnects(harness: Harness) -> None:
    a, _ = harness.hello()
    b, _ = harness.hello()
    pid = create(a, harness, "app")["project_id"]
    b.new()
    a.request("project_join", project_id=pid)
    state = b.request("project_join", project_id=pid)[0]
    assert state["data"]["subscriber_count"] == 2
    b.one("project_leave", project_id=pid)
    assert a.one("project_list")["data"]["projects"][0]["subscriber_count"] == 1
    a.disconnect()
    assert b.one("project_list")["data"]["projects"][0]["subscriber_count"] == 0


def test_unknown_project(harness: Harness) -> None:
    client, _ = harness.hello()
    for mtype in ("project_join", "project_leave", "project_delete"):
        error = client.one(mtype, project_id="no-such-id")
        assert error["data"]["code"] == "PROJECT_NOT_FOUND"
        assert error["data"]["details"] == {"project_id": "no-such-id"}


def test_delete_replies_then_announces_and_keeps_the_directory(harness: Harness) -> None:
    client, _ = harness.hello()
    other, _ = harness.hello()
    state = create(client, harness, "app")
    pid = state["project_id"]
    (harness.home / "app" / "work.txt").write_text("mine")
    other.request("project_join", project_id=pid)
    reply, announced = client.request("project_delete", project_id=pid, request_id="d")
    assert reply == {
        "type": "project_delete",
        "project_id": pid,
        "request_id": "d",
        "data": {"project_id": pid, "status": "deleted"},
    }
    assert announced["type"] == "project_deleted"
    assert announced["data"] == {"project_id": pid}
    assert other.new() == [announced]
    assert (harness.home / "app" / "work.txt").read_text() == "mine"
    assert not (harness.config.data_dir / "projects" / pid).exists()
    assert harness.app.hub.following(other.server.connection) == []
    assert client.one("project_join", project_id=pid)["data"]["code"] == "PROJECT_NOT_FOUND"


def test_delete_while_running_is_refused(harness: Harness) -> None:
    client, _ = harness.hello()
    pid = create(client, harness, "app")["project_id"]
    project = harness.app.registry.get(pid)
    project.run = ActiveRun("run-1")
    error = client.one("project_delete", project_id=pid)
    assert error["data"]["code"] == "PROCESS_ACTIVE"
    assert len(harness.app.registry) == 1
    project.run = None  # no run machine to stop at shutdown


# ---------------------------------------------------------------- connection limits


def test_max_connections_sends_resource_limit_then_closes_1013(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"max_connections": 1})
    first, _ = harness.hello()
    second = harness.connect()
    [error] = second.new()
    assert error["data"]["code"] == "RESOURCE_LIMIT"
    assert error["data"]["details"] == {"resource": "connections", "limit": 1}
    assert second.protocol.closed and second.protocol.close_code == 1013
    assert harness.app.hub.connection_count == 1
    first.disconnect()
    harness.hello()


def test_oversized_message_closes_1009(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"max_message_size": 1024})
    client, _ = harness.hello()
    client.send_raw(json.dumps({"type": "health", "pad": "x" * 900}))
    assert client.new()[0]["type"] == "health_status"
    client.send_raw(json.dumps({"type": "health", "pad": "x" * 2000}))
    assert client.protocol.closed and client.protocol.close_code == 1009
    assert harness.app.hub.connection_count == 0


def test_oversized_fragmented_message_closes_1009(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"max_message_size": 1024})
    client, _ = harness.hello()
    client.protocol.sendMessage(b"x" * 3000, fragmentSize=500)
    client.pump.flush()
    assert client.protocol.close_code == 1009


def test_outgoing_messages_are_not_capped_by_the_inbound_limit(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"max_message_size": 1024})
    client, _ = harness.hello()
    for i in range(30):
        create(client, harness, f"project-{i:02d}-{'x' * 40}")
    listing = client.one("project_list")
    assert len(json.dumps(listing)) > 4096
    assert listing["data"]["total"] == 30


# ------------------------------------------------------------------------- timers


def test_idle_connection_is_closed(harness: Harness) -> None:
    client, _ = harness.hello()
    idle = harness.config.timeouts.idle
    harness.clock.advance(idle - 1)
    client.one("health")  # activity resets the timer
    harness.clock.advance(idle - 1)
    client.pump.flush()
    assert not client.protocol.closed
    harness.clock.advance(1)
    client.pump.flush()
    assert client.protocol.closed
    assert client.protocol.close_code == 1000
    assert harness.app.hub.connection_count == 0


def test_a_follower_is_never_idle(harness: Harness) -> None:
    client, _ = harness.hello()
    pid = create(client, harness, "app")["project_id"]
    client.request("project_join", project_id=pid)
    harness.clock.advance(harness.config.timeouts.idle * 3)
    client.pump.flush()
    assert not client.protocol.closed


def test_auto_ping_settings_come_from_config(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"ping_interval": 7.0, "pong_timeout": 11.0})
    client, _ = harness.hello()
    assert client.server.autoPingInterval == 7.0
    assert client.server.autoPingTimeout == 11.0


def test_a_peer_that_never_answers_pings_is_dropped(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"ping_interval": 5.0, "pong_timeout": 10.0})
    client, _ = harness.hello()
    pid = create(client, harness, "app")["project_id"]
    client.request("project_join", project_id=pid)  # so the idle timer cannot be the cause
    # Stop the client from ever answering: its transport goes nowhere.
    client.protocol.sendMessage = lambda *a, **k: None  # type: ignore[method-assign]
    client.protocol._onPing = lambda payload: None  # type: ignore[method-assign]
    client.protocol.onPing = lambda payload: None  # type: ignore[method-assign]
    harness.clock.advance(5.0)
    client.pump.flush()
    assert harness.app.hub.connection_count == 1
    for _ in range(4):
        harness.clock.advance(5.0)
        client.pump.flush()
    assert harness.app.hub.connection_count == 0


# ----------------------------------------------------------------------- shutdown


def test_shutdown_closes_connections_with_1001_and_releases_the_lock(harness: Harness) -> None:
    client, _ = harness.hello()
    done = harness.service.stopService()
    client.pump.flush()
    assert client.protocol.close_code == 1001
    assert done.called
    assert not (harness.config.data_dir / ".lock").exists()


def test_shutdown_drops_connections_that_never_close(harness: Harness) -> None:
    _client, _ = harness.hello()
    done = harness.service.stopService()  # nothing pumped: the client never answers
    assert not done.called
    harness.clock.advance(harness.config.timeouts.shutdown)
    assert done.called
    assert harness.app.hub.connection_count == 0
    assert not (harness.config.data_dir / ".lock").exists()


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000,
        '{"type": "health", "request_id": "\\ud800"}',
        '{"type": "project_join", "project_id": "\\udc00"}',
        '{"type": "project_create", "data": {"path": "/x\\ud800"}}',
        '{"type": "execute", "project_id": "p", "data": {"prompt": "hello \\ud83d"}}',
    ],
)
def test_hostile_frames_get_invalid_message_and_keep_the_connection(
    harness: Harness, frame: str
) -> None:
    client, _ = harness.hello()
    client.send_raw(frame)
    [error] = client.new()
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert client.one("health")["type"] == "health_status"
    assert harness.clock.processes == []


def test_rotating_the_token_closes_connections_that_used_the_old_one(tmp_path: Any) -> None:
    from twisted.internet.task import Clock

    from pocket_agent.net.auth import TokenFile, write_token
    from pocket_agent.net.tokenwatch import TokenWatch

    harness = Harness(tmp_path)
    try:
        paired, _ = harness.hello(peer="192.0.2.10", headers={"Authorization": f"Bearer {TOKEN}"})
        local, _ = harness.hello()
        path = tmp_path / "token"
        write_token(path, TOKEN)
        clock = Clock()
        watch = TokenWatch(TokenFile(path), harness.app.hub, clock)
        watch.startService()
        clock.advance(TokenWatch.INTERVAL)
        paired.pump.flush()
        assert not paired.protocol.closed
        write_token(path, "n" * 43)
        clock.advance(TokenWatch.INTERVAL)
        paired.pump.flush()
        local.pump.flush()
        assert (paired.protocol.closed, paired.protocol.close_code) == (True, 1008)
        assert not local.protocol.closed  # loopback never used the token
        watch.stopService()
    finally:
        harness.stop()


def test_a_connection_arriving_during_shutdown_is_told_so(harness: Harness) -> None:
    harness.app.hub.accepting = False
    client = harness.connect()
    assert client.new() == []
    assert client.protocol.close_code == 1001


@pytest.mark.parametrize("char", ["\x85", "\u202e", "\u2028", "\u200f"])
def test_paths_with_invisible_characters_are_refused(harness: Harness, char: str) -> None:
    client, _ = harness.hello()
    error = client.one(
        "project_create", data={"path": str(harness.home / f"a{char}b"), "create": True}
    )
    assert error["data"]["code"] == "INVALID_PATH"
