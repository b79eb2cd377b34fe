"""The per-message path stays lean (issue 12, docs/performance.rst): each of these would
fail if the work it rules out came back, and each checks the bytes stay what they were."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import autobahn.twisted.websocket as autobahn_twisted
import pytest
from autobahn.websocket.protocol import PreparedMessage
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogEvent, LogLevel, globalLogPublisher

from pocket_agent.core.projects import Project, ProjectSnapshot
from pocket_agent.ops.logs import DEBUG, LogService
from pocket_agent.wire import envelope as envelope_module
from pocket_agent.wire import messages as m
from pocket_agent.wire.envelope import decode_envelope, encode_envelope, envelope_head
from pocket_agent.wire.errors import ProtocolError
from pocket_agent.wire.framing import text_frame
from tests.support import Client, Harness
from tests.test_execution import INIT, RESULT, TEXT, setup, start


class Counter:
    """Wraps a callable and counts its calls."""

    def __init__(self, wrapped: Callable[..., Any]) -> None:
        self.wrapped = wrapped
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.wrapped(*args, **kwargs)


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


# ------------------------------------------------------------------------ framing


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20])
def test_a_text_frame_is_byte_for_byte_what_autobahn_would_send(size: int) -> None:
    payload = b"x" * size
    prepared = PreparedMessage(payload, isBinary=False, applyMask=False, doNotCompress=True)
    assert text_frame(payload) == prepared.payloadHybi


def test_a_frame_is_encoded_and_framed_once_however_often_it_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    framing = Counter(m.text_frame)
    monkeypatch.setattr(m, "text_frame", framing)
    message = m.AgentMessage("p1", b'{"seq":1}')
    assert message.frame is message.frame
    assert framing.calls == 1
    assert message.frame == text_frame(message.encode())


# ------------------------------------------------------------- one frame, many readers


def test_every_follower_gets_the_same_bytes_built_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, clients = setup(harness, followers=5)
    process, _ = start(harness, clients[0], pid)
    for client in clients:
        client.new()
    framing = Counter(m.text_frame)
    monkeypatch.setattr(m, "text_frame", framing)
    written: list[list[bytes]] = [[] for _ in clients]
    for i, client in enumerate(clients):
        transport = client.server.transport
        monkeypatch.setattr(transport, "write", Counter(lambda d, i=i: written[i].append(d)))

    process.emit(TEXT)

    assert framing.calls == 1  # one Record, one frame for all five
    assert all(w == written[0] for w in written) and len(written[0]) == 1
    [frame] = written[0]
    assert frame[0] == 0x81  # FIN + text, not masked
    record = json.loads(frame[2 + (2 if frame[1] == 126 else 0) :])
    assert (record["type"], record["data"]["message"]) == ("agent_message", TEXT)


def test_frames_do_not_go_through_autobahns_send_path(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, clients = setup(harness, followers=2)
    process, _ = start(harness, clients[0], pid)
    clients[1].new()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("autobahn's sendMessage/sendData on the hot path")

    for client in clients:
        monkeypatch.setattr(client.server, "sendMessage", refuse)
        monkeypatch.setattr(client.server, "sendData", refuse)
    process.emit(INIT, TEXT, RESULT)
    process.exit(0)
    kinds = [f["type"] for f in clients[1].new()]
    assert kinds.count("agent_message") >= 3 and "execution_finished" in kinds
    clients[0].new()
    assert clients[0].one("project_list")["type"] == "project_list_response"


def test_the_send_budget_counts_the_bytes_written(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    budget = client.server.budget
    budget.pauseProducing()
    sent: list[bytes] = []
    write = client.server.transport.write
    client.server.transport.write = lambda data: (sent.append(data), write(data))
    process.emit(TEXT, TEXT)
    assert budget.backlog == sum(len(d) for d in sent) and len(sent) == 2


# --------------------------------------------------------------- the receive path


def test_no_txaio_future_and_no_debug_arguments_per_message(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = harness.hello()
    server = client.server
    signals = Counter(server.fire)
    monkeypatch.setattr(server, "fire", signals)  # autobahn's onMessageEnd: one a message
    highlighted: list[Any] = []  # the client is autobahn's too: count the server's only

    def hltype(obj: Any) -> str:
        highlighted.append(getattr(obj, "__self__", None))
        return str(obj)

    monkeypatch.setattr(autobahn_twisted, "hltype", hltype)
    for _ in range(10):
        assert client.one("health")["type"] == "health_status"
    assert signals.calls == 0
    assert server not in highlighted and client.protocol in highlighted


def test_a_message_over_several_frames_is_still_one_message(harness: Harness) -> None:
    client, _ = harness.hello()
    payload = json.dumps({"type": "health", "request_id": "frag"}).encode()
    client.protocol.sendMessage(payload, fragmentSize=5)
    client.pump.flush()
    [reply] = client.new()
    assert (reply["type"], reply["request_id"]) == ("health_status", "frag")


def test_message_processed_is_logged_at_debug(
    harness: Harness, events: list[LogEvent], debug_logging: None
) -> None:
    client, hello = harness.hello()
    client.one("health")
    [line] = [e for e in events if e.get("log_format") == "Message processed"]
    assert line["message_type"] == "health"
    assert line["connection_id"] == hello["data"]["connection_id"]
    assert line["duration_ms"] >= 0


def test_no_debug_event_is_even_built_below_debug(
    harness: Harness, events: list[LogEvent]
) -> None:
    """Under twistd -n, twistd's own stdout observer filters nothing: a debug event that
    is built is a line on stdout."""
    client, _ = harness.hello()
    for _ in range(3):
        client.one("health")
        client.one("project_list")
    assert [e for e in events if e.get("log_level") == LogLevel.debug] == []


def test_the_idle_timer_is_armed_once_not_per_message(harness: Harness) -> None:
    client, _ = harness.hello()
    [timer] = [c for c in harness.clock.getDelayedCalls() if c.func == client.server._idle_check]
    for _ in range(20):
        harness.clock.advance(1)
        client.one("health")
    assert timer.active()
    assert [c for c in harness.clock.getDelayedCalls() if c.func == client.server._idle_check] == [
        timer
    ]


def reload_idle(harness: Harness, idle: float) -> None:
    """What a SIGHUP that changes ``timeouts.idle`` does (compose.App.reconfigure)."""
    config = harness.factory.config
    harness.factory.config = attrs.evolve(
        config, timeouts=attrs.evolve(config.timeouts, idle=idle)
    )


def test_idle_counts_from_the_last_message(harness: Harness) -> None:
    client, _ = harness.hello()
    idle = harness.config.timeouts.idle
    for _ in range(3):  # messages spread over more than one idle period
        harness.clock.advance(idle * 0.6)
        client.one("health")
    harness.clock.advance(idle - 0.5)
    client.pump.flush()
    assert not client.protocol.closed
    harness.clock.advance(0.5)
    client.pump.flush()
    assert client.protocol.closed and client.protocol.close_code == 1000


def test_idle_switched_on_by_sighup_starts_counting(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"idle": 0})
    client, _ = harness.hello()
    harness.clock.advance(10_000)
    assert not client.protocol.closed
    reload_idle(harness, 30.0)
    client.one("health")
    harness.clock.advance(30)
    client.pump.flush()
    assert client.protocol.closed


# ------------------------------------------------------------ replies and states


def test_replies_are_built_with_their_request_id_not_copied(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    evolve = attrs.evolve

    def refuse(instance: Any, **changes: Any) -> Any:
        if isinstance(instance, m.Outbound):
            raise AssertionError("a copy per reply")
        return evolve(instance, **changes)

    monkeypatch.setattr(attrs, "evolve", refuse)
    client, _ = harness.hello()
    path = harness.project_dir("app")
    created = client.request("project_create", request_id="c", data={"path": str(path)})
    pid = created[0]["project_id"]
    assert [c.get("request_id") for c in created] == ["c", None]  # the answer, then to all
    for mtype in ("health", "project_list"):
        assert client.one(mtype, request_id=f"r-{mtype}")["request_id"] == f"r-{mtype}"
    replies = client.request("project_join", project_id=pid, request_id="j", data={"after_seq": 0})
    assert [r["request_id"] for r in replies] == ["j", "j", "j"]
    assert client.one("get_messages", project_id=pid, request_id="g")["request_id"] == "g"


def projects(harness: Harness, client: Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        path = harness.project_dir(f"p{i}")
        ids.append(client.request("project_create", data={"path": str(path)})[0]["project_id"])
    return ids


def test_project_list_encodes_each_project_once_until_it_changes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = harness.hello()
    ids = projects(harness, client, 4)
    encoded = Counter(m.project_state_data)
    monkeypatch.setattr(m, "project_state_data", encoded)
    first = client.one("project_list")
    assert encoded.calls <= 4
    encoded.calls = 0
    for _ in range(5):
        assert client.one("project_list")["data"] == first["data"]
    assert encoded.calls == 0  # a join of cached bytes

    encoded.calls = 0
    client.request("project_join", project_id=ids[2])  # one subscriber more: its state
    listing = client.one("project_list")  # is encoded once, for the join's reply and this
    assert encoded.calls == 1
    counts = {p["id"]: p["subscriber_count"] for p in listing["data"]["projects"]}
    assert counts == {ids[0]: 0, ids[1]: 0, ids[2]: 1, ids[3]: 0}


def test_the_cached_state_is_the_state_now(harness: Harness) -> None:
    """Every kind of change shows at once: a field, followers, the server default."""
    pid, [client] = setup(harness)
    hub = harness.app.hub
    project = harness.app.registry.get(pid)

    def state() -> dict[str, Any]:
        [p] = [p for p in client.one("project_list")["data"]["projects"] if p["id"] == pid]
        return p

    assert state()["session_id"] is None
    project.session_id = "s-1"
    assert state()["session_id"] == "s-1"
    project.last_seq = 41
    assert state()["last_seq"] == 41
    hub.default_approvals = "off"
    assert state()["settings"]["approvals"] == "off"
    client.request("project_leave", project_id=pid)
    assert state()["subscriber_count"] == 0


def test_the_hub_hands_out_one_snapshot_per_state(harness: Harness) -> None:
    pid, _ = setup(harness)
    hub = harness.app.hub
    project = harness.app.registry.get(pid)
    first = hub.snapshot(project)
    assert hub.snapshot(project) is first
    project.error_details = "x"
    changed = hub.snapshot(project)
    assert changed is not first and changed.error_details == "x"
    assert hub.snapshot(project) is changed


@given(st.lists(st.sampled_from(["a", "é", "\n", '"', "\\", "\x00", "😀"]), max_size=8))
def test_a_cached_state_is_the_bytes_json_would_write(chars: list[str]) -> None:
    from datetime import UTC, datetime

    from pocket_agent.core.projects import ProjectStatus

    text = "".join(chars)
    state = ProjectSnapshot(
        id=f"id-{text}",
        path=f"/home/{text}",
        state=ProjectStatus.IDLE,
        session_id=text or None,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678000, UTC),
        last_active=datetime(2026, 1, 2, 3, 4, 5, 678000, UTC),
        last_seq=7,
        subscriber_count=1,
        error_details=text,
    )
    listing = m.ProjectListResponse([state, state], request_id="r")
    assert listing.encode() == encode_envelope(
        listing.TYPE, listing.data(), None, "r"
    )  # the bytes of before, not only the same JSON
    message = m.ProjectStateMessage.of(state, "q")
    assert message.encode() == encode_envelope(message.TYPE, message.data(), state.id, "q")


@given(st.text(min_size=1), st.none() | st.text(), st.none() | st.text())
def test_an_envelope_head_is_what_the_encoder_writes(
    mtype: str, project_id: str | None, request_id: str | None
) -> None:
    whole = encode_envelope(mtype, {}, project_id, request_id)
    assert envelope_head(mtype, project_id, request_id) + b"{}}" == whole


# ---------------------------------------------------------------- decoding requests


def old_rule(payload: bytes | str) -> bool:
    """Before: every frame was encoded again to look for lone surrogates."""
    try:
        obj = json.loads(payload)
    except Exception:
        return True
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


pieces = st.sampled_from(
    ["\\ud800", "\\uDFFF", "\\ud83d\\ude00", "\\uD83D", "\\\\ud800", "\\u00e9", "x", "é"]
)


@given(st.lists(pieces, max_size=4), st.sampled_from(["utf-8", "utf-16-le", "utf-32", "str"]))
def test_lone_surrogates_are_refused_exactly_as_before(parts: list[str], codec: str) -> None:
    text = '{"type":"health","data":{"x":"' + "".join(parts) + '"}}'
    payload: bytes | str = text if codec == "str" else text.encode(codec)
    try:
        decode_envelope(payload)
        accepted = True
    except ProtocolError as e:
        assert "surrogates" in e.message, e.message
        accepted = False
    assert accepted == old_rule(payload)


@pytest.mark.parametrize(
    "payload",
    [b'{"type":"x","d":"\xed\xa0\x80"}', '{"type":"x","d":"\ud800"}'],
    ids=["raw-bytes", "str"],
)
def test_a_raw_lone_surrogate_is_refused(payload: bytes | str) -> None:
    with pytest.raises(ProtocolError, match="surrogates"):
        decode_envelope(payload)


def test_a_plain_frame_is_decoded_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    dumps = Counter(json.dumps)
    monkeypatch.setattr(envelope_module.json, "dumps", dumps)
    decode_envelope(b'{"type":"project_list","request_id":"r-1","data":{"x":"\\u00e9"}}')
    assert dumps.calls == 0


def test_the_lean_protocol_overrides_exist_in_autobahn() -> None:
    """Ours replace autobahn methods of these names and call these: if autobahn renamed
    them, ours would silently stop being called (the tests above would then show the
    cost, not the cause)."""
    for name in ("dataReceived", "onMessageEnd", "_dataReceived", "_onMessage"):
        assert hasattr(autobahn_twisted.WebSocketServerProtocol, name), name


# ------------------------------------------------ found by the review (mutations)


def test_a_frame_waits_behind_autobahns_queued_writes(harness: Harness) -> None:
    client, _ = harness.hello()
    server = client.server
    written: list[bytes] = []
    server.transport.write = written.append
    server.sendData(b"A", sync=True)  # written now, B waits for the next reactor turn
    server.sendData(b"B", sync=True)
    message = m.HealthStatus({"status": "ok"})
    server.send(message)
    assert written == [b"A"]
    harness.clock.advance(0.001)
    harness.clock.advance(0.001)
    assert written[:2] == [b"A", b"B"] and message.encode() in b"".join(written[2:])


def test_sighup_switches_the_debug_gate(tmp_path: Path) -> None:
    service = LogService("info", "text", tmp_path / "x.log")
    try:
        service.privilegedStartService()
        assert not DEBUG.on
        service.set_level("debug")
        assert DEBUG.on
        service.set_level("info")
        assert not DEBUG.on
    finally:
        service.detach()
    assert not DEBUG.on


def test_a_log_service_that_stops_closes_the_gate(tmp_path: Path) -> None:
    service = LogService("debug", "text", tmp_path / "x.log")
    service.privilegedStartService()
    assert DEBUG.on
    service.detach()
    assert not DEBUG.on


def test_a_log_service_at_debug_opens_the_gate_when_it_starts(tmp_path: Path) -> None:
    service = LogService("debug", "text", tmp_path / "x.log")
    assert not DEBUG.on  # built, not started: nothing logs through it yet
    try:
        service.privilegedStartService()
        assert DEBUG.on
    finally:
        service.detach()


def test_a_run_alone_changes_the_listed_state(harness: Harness) -> None:
    pid, [client] = setup(harness)
    project = harness.app.registry.get(pid)

    class Run:
        run_id = "r"
        pending_permissions: tuple[dict[str, Any], ...] = ()

    def listed() -> dict[str, Any]:
        [p] = [p for p in client.one("project_list")["data"]["projects"] if p["id"] == pid]
        return p

    assert listed()["state"] == "IDLE"
    run = Run()
    project.run = run
    assert listed()["state"] == "EXECUTING"
    run.pending_permissions = ({"permission_id": "p1"},)  # no Project field assigned
    assert listed()["pending_permissions"] == [{"permission_id": "p1"}]
    run.pending_permissions = ({"permission_id": "p1", "input": {"n": True}},)
    assert listed()["pending_permissions"][0]["input"]["n"] is True
    run.pending_permissions = ({"permission_id": "p1", "input": {"n": 1}},)  # == the last
    n = listed()["pending_permissions"][0]["input"]["n"]
    project.run = None
    assert type(n) is int and n == 1  # not the True of the state before


def test_an_equal_snapshot_is_encoded_again(harness: Harness) -> None:
    """Python's == is looser than JSON's (1 == 1.0 == True): only the same snapshot
    object may reuse the bytes."""

    def state(value: object) -> ProjectSnapshot:
        from datetime import UTC, datetime

        from pocket_agent.core.projects import ProjectStatus

        at = datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)
        pending = ({"permission_id": "a", "input": {"n": value}},)
        return ProjectSnapshot(
            "same-id", "/p", ProjectStatus.EXECUTING, None, at, at, 1, 1,
            pending_permissions=pending,
        )  # fmt: skip

    assert b'"n":1' in m.project_state_bytes(state(1))
    assert b'"n":true' in m.project_state_bytes(state(True))


def test_the_state_cache_is_bounded_oldest_out(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(m, "_STATES", {})
    monkeypatch.setattr(m, "_STATES_KEPT", 3)
    client, _ = harness.hello()
    ids = projects(harness, client, 5)
    client.one("project_list")
    assert list(m._STATES) == ids[-3:]  # newest last, the oldest went first


def test_a_project_replaced_by_another_object_is_not_its_old_snapshot(
    harness: Harness,
) -> None:
    """A reload builds new Project objects whose revision may equal the old one's."""
    pid, _ = setup(harness)
    hub, registry = harness.app.hub, harness.app.registry
    old = registry.get(pid)
    hub.snapshot(old)
    new = attrs.evolve(old, session_id="other")
    new.revision = old.revision
    assert hub.snapshot(new).session_id == "other"


def test_a_re_encoded_state_is_the_newest_in_the_cache(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(m, "_STATES", {})
    monkeypatch.setattr(m, "_STATES_KEPT", 4)
    client, _ = harness.hello()
    ids = projects(harness, client, 3)
    client.one("project_list")
    harness.app.registry.get(ids[0]).session_id = "changed"
    client.one("project_list")
    assert list(m._STATES) == [ids[1], ids[2], ids[0]]  # so it is not the next one out


def test_a_deleted_project_leaves_no_snapshot(harness: Harness) -> None:
    pid, [client] = setup(harness)
    hub = harness.app.hub
    client.one("project_list")
    assert pid in hub._snapshots
    client.request("project_delete", project_id=pid)
    assert pid not in hub._snapshots


def test_every_project_field_bumps_the_revision(harness: Harness) -> None:
    pid, _ = setup(harness)
    project = harness.app.registry.get(pid)
    for field in attrs.fields(Project):
        if field.name == "revision":
            continue
        before = project.revision
        setattr(project, field.name, getattr(project, field.name))
        assert project.revision == before + 1, field.name


def test_idle_lowered_by_sighup_counts_from_the_next_message(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"idle": 300})
    client, _ = harness.hello()
    reload_idle(harness, 30.0)
    harness.clock.advance(1)
    client.one("health")  # the last message: idle is 30 s from here
    harness.clock.advance(29)
    client.pump.flush()
    assert not client.protocol.closed
    harness.clock.advance(1)
    client.pump.flush()
    assert client.protocol.closed


def test_idle_raised_by_sighup_counts_from_the_last_message(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"idle": 30})
    client, _ = harness.hello()
    reload_idle(harness, 60.0)
    client.one("health")
    harness.clock.advance(59)
    client.pump.flush()
    assert not client.protocol.closed
    harness.clock.advance(1)
    client.pump.flush()
    assert client.protocol.closed
