"""The wire both ways: typed requests round-trip, frames encode, events become frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocket_agent.core import events as ev
from pocket_agent.core.projects import ProjectSnapshot, ProjectStatus
from pocket_agent.history import Page, Record, encode_record
from pocket_agent.runs import events as rev
from pocket_agent.runs.options import BYPASS, PERMISSION_MODES, RunOptions
from pocket_agent.runs.outcome import Outcome, RunResult
from pocket_agent.times import rfc3339
from pocket_agent.wire import messages as m
from pocket_agent.wire.envelope import decode_envelope
from pocket_agent.wire.errors import ErrorCode, ProtocolError
from pocket_agent.wire.requests import (
    AgentInterruptRequest,
    AgentKillRequest,
    AgentNewSessionRequest,
    ExecuteRequest,
    GetMessagesRequest,
    HealthRequest,
    PermissionResponseRequest,
    ProjectCreateRequest,
    ProjectDeleteRequest,
    ProjectJoinRequest,
    ProjectLeaveRequest,
    ProjectListRequest,
    ProjectSettingsRequest,
    Request,
    encode_request,
    parse_request,
)
from pocket_agent.wire.translate import frames_for

PID = "0b8f2f5e-3c1a-4b55-9a8e-0d6c1f1e2a77"
T = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
SNAPSHOT = ProjectSnapshot(PID, "/home/u/app", ProjectStatus.IDLE, "s1", T, T, 7, 2)
FAILED_SNAPSHOT = ProjectSnapshot(
    PID, "/home/u/app", ProjectStatus.ERROR, None, T, T, 0, 0, error_details="it broke"
)


def round_trip(
    request: Request, project_id: str | None = None, request_id: str | None = None
) -> Request:
    envelope = decode_envelope(encode_request(request, project_id, request_id))
    assert envelope.type == request.TYPE
    assert (envelope.project_id, envelope.request_id) == (project_id, request_id)
    return parse_request(envelope)


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


# ------------------------------------------------------------------- requests

FULL_OPTIONS = RunOptions(
    model="opus",
    fallback_model="haiku",
    permission_mode="acceptEdits",
    allowed_tools=("Read", "Bash(git *)"),
    disallowed_tools=("WebFetch",),
    append_system_prompt="be brief",
    add_dirs=("/home/u/lib",),
    mcp_config='{"mcpServers": {}}',
    dangerously_skip_permissions=True,
)

REQUESTS: list[Request] = [
    HealthRequest(),
    ProjectListRequest(),
    ProjectCreateRequest("/home/u/app"),
    ProjectCreateRequest("/home/u/new", create=True),
    ProjectDeleteRequest(),
    ProjectJoinRequest(),
    ProjectJoinRequest(after_seq=0),
    ProjectJoinRequest(after_seq=41),
    ProjectLeaveRequest(),
    ExecuteRequest("hello"),
    ExecuteRequest("with options", FULL_OPTIONS),
    ExecuteRequest("bypass", RunOptions(permission_mode=BYPASS)),
    AgentKillRequest(),
    AgentNewSessionRequest(),
    AgentInterruptRequest(),
    PermissionResponseRequest("perm-1", "allow"),
    PermissionResponseRequest(
        "perm-2",
        "allow",
        updated_input={"command": "ls -la"},
        answers={"Proceed?": "Yes"},
        remember=True,
    ),
    PermissionResponseRequest("perm-3", "deny", message="not that file"),
    ProjectSettingsRequest(),
    ProjectSettingsRequest(allowed_tools=("Read", "Bash(git:*)"), approvals="off"),
    ExecuteRequest("no approvals", RunOptions(approvals="off")),
    GetMessagesRequest(),
    GetMessagesRequest(after_seq=3, before_seq=9, limit=1000, direction="claude"),
    GetMessagesRequest(since="2026-01-02T03:04:05.678Z", limit=1, direction="server"),
]


def test_every_request_type_is_covered() -> None:
    assert {type(r) for r in REQUESTS} == all_subclasses(Request)


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_encode_request_decodes_back_to_an_equal_request(request_: Request) -> None:
    project_id = PID if request_.NEEDS_PROJECT else None
    assert round_trip(request_, project_id, "req-1") == request_
    assert round_trip(request_) == request_


def test_defaults_are_left_out_of_the_frame() -> None:
    wire = json.loads(encode_request(ProjectJoinRequest(), PID))
    assert wire == {"type": "project_join", "project_id": PID, "data": {}}
    wire = json.loads(encode_request(ExecuteRequest("hi", FULL_OPTIONS)))
    assert wire["data"]["options"]["mcp_config"] == FULL_OPTIONS.mcp_config  # not redacted
    assert wire["data"]["options"]["allowed_tools"] == ["Read", "Bash(git *)"]


option_text = st.text(min_size=1, max_size=20).filter(
    lambda s: "\x00" not in s and not s.startswith("-")
)
option_texts = st.lists(option_text, max_size=3).map(tuple)
options = st.builds(
    RunOptions,
    model=st.none() | option_text,
    fallback_model=st.none() | option_text,
    permission_mode=st.none() | st.sampled_from([*PERMISSION_MODES, BYPASS]),
    allowed_tools=option_texts,
    disallowed_tools=option_texts,
    append_system_prompt=st.none() | option_text,
    add_dirs=option_texts,
    mcp_config=st.none() | option_text,
    dangerously_skip_permissions=st.booleans(),
)
prompts = st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s)


@given(prompt=prompts, options=options, request_id=st.none() | st.text(max_size=128))
def test_any_valid_execute_request_round_trips(
    prompt: str, options: RunOptions, request_id: str | None
) -> None:
    request = ExecuteRequest(prompt, options)
    assert round_trip(request, PID, request_id) == request


@given(
    after_seq=st.none() | st.integers(min_value=0, max_value=2**53),
    before_seq=st.none() | st.integers(min_value=0, max_value=2**53),
    since=st.none()
    | st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
    ).map(rfc3339),
    limit=st.integers(min_value=1, max_value=1000),
    direction=st.sampled_from([None, "client", "claude", "server"]),
)
def test_any_valid_get_messages_request_round_trips(
    after_seq: int | None,
    before_seq: int | None,
    since: str | None,
    limit: int,
    direction: str | None,
) -> None:
    request = GetMessagesRequest(after_seq, since, before_seq, limit, direction)
    assert round_trip(request, PID) == request


# ------------------------------------------------------------ outbound frames

RESULT = RunResult("r1", Outcome.SUCCESS, 0, None, 1234, 0.5, "s1")
RECORD_LINE = encode_record(8, "2026-01-02T03:04:05.678Z", "r1", "claude", b'{"type":"x"}')
PAGE = Page([RECORD_LINE], has_more=True, first_seq=8, last_seq=8, project_last_seq=9)

FRAMES: list[tuple[m.Outbound, dict[str, Any]]] = [
    (
        m.ServerHello("1.0", 1, "c1", "token", {"max_message_bytes": 10}),
        {
            "server_version": "1.0",
            "protocol_version": 1,
            "connection_id": "c1",
            "authenticated_as": "token",
            "limits": {"max_message_bytes": 10},
        },
    ),
    (m.HealthStatus({"status": "ok"}), {"status": "ok"}),
    (
        m.ProjectListResponse([SNAPSHOT, FAILED_SNAPSHOT]),
        {
            "projects": [m.project_state_data(SNAPSHOT), m.project_state_data(FAILED_SNAPSHOT)],
            "total": 2,
        },
    ),
    (m.ProjectStateMessage.of(SNAPSHOT), m.project_state_data(SNAPSHOT)),
    (m.ProjectCreated(SNAPSHOT, project_id=PID), m.project_state_data(SNAPSHOT)),
    (m.ProjectDeleted(project_id=PID), {"project_id": PID}),
    (m.ProjectDeleteReply(project_id=PID), {"project_id": PID, "status": "deleted"}),
    (
        m.ProjectJoinReply(SNAPSHOT, project_id=PID),
        {"project_id": PID, "state": "IDLE", "session_id": "s1", "last_seq": 7},
    ),
    (m.ProjectLeaveReply(project_id=PID), {"project_id": PID, "status": "left"}),
    (m.ExecuteReply("r1", project_id=PID), {"run_id": "r1", "status": "started"}),
    (m.AgentKillReply("idle", project_id=PID), {"status": "idle"}),
    (m.AgentInterruptReply("interrupting", project_id=PID), {"status": "interrupting"}),
    (
        m.PermissionResponseReply("perm-1", "applied", project_id=PID),
        {"permission_id": "perm-1", "status": "applied"},
    ),
    (
        m.AgentNewSessionReply(None, project_id=PID),
        {"old_session_id": None, "status": "reset"},
    ),
    (m.ProjectUpdate("s2", project_id=PID), {"session_id": "s2"}),
    (m.ProcessKilled("r1", project_id=PID), {"type": "process_killed", "run_id": "r1"}),
    (m.SessionReset("s1", project_id=PID), {"type": "session_reset", "old_session_id": "s1"}),
    (m.ExecutionFinished(RESULT, project_id=PID), RESULT.as_record()),
    (
        m.ErrorMessage("PROJECT_NOT_FOUND", "no such project", {"project_id": "x"}),
        {
            "code": "PROJECT_NOT_FOUND",
            "message": "no such project",
            "details": {"project_id": "x"},
        },
    ),
    (m.ErrorMessage("INTERNAL_ERROR", "oops"), {"code": "INTERNAL_ERROR", "message": "oops"}),
    (m.AgentMessage(PID, RECORD_LINE), json.loads(RECORD_LINE)),
    (
        m.HistoryMessage(PAGE, project_id=PID),
        {
            "messages": [json.loads(RECORD_LINE)],
            "has_more": True,
            "first_seq": 8,
            "last_seq": 8,
            "project_last_seq": 9,
        },
    ),
]


def test_every_outbound_frame_class_is_covered() -> None:
    assert {type(f) for f, _ in FRAMES} == all_subclasses(m.Outbound)


@pytest.mark.parametrize("frame,data", FRAMES, ids=lambda f: getattr(f, "TYPE", ""))
def test_every_frame_encodes_to_its_type_ids_and_data(
    frame: m.Outbound, data: dict[str, Any]
) -> None:
    wire = json.loads(frame.encode())
    assert wire["type"] == frame.TYPE == frame.type
    assert wire.get("project_id") == frame.project_id
    assert "request_id" not in wire
    assert wire["data"] == data
    assert frame.to_wire() == wire
    envelope = decode_envelope(frame.encode())
    assert (envelope.type, envelope.project_id) == (frame.TYPE, frame.project_id)


@pytest.mark.parametrize(
    "frame",
    [f for f, _ in FRAMES if not isinstance(f, m.AgentMessage)],  # a stream record: no reply
    ids=lambda f: f.TYPE,
)
def test_a_reply_echoes_the_request_id(frame: m.Outbound) -> None:
    reply = attrs.evolve(frame, request_id="req-7")
    wire = json.loads(reply.encode())
    assert wire["request_id"] == "req-7"
    assert wire["type"] == frame.TYPE
    assert decode_envelope(reply.encode()).request_id == "req-7"


def test_error_of_a_protocol_error() -> None:
    error = ProtocolError(ErrorCode.INVALID_MESSAGE, "bad", {"field": "type"})
    wire = json.loads(m.ErrorMessage.of(error, "r1", PID).encode())
    assert wire == {
        "type": "error",
        "project_id": PID,
        "request_id": "r1",
        "data": {"code": "INVALID_MESSAGE", "message": "bad", "details": {"field": "type"}},
    }


def test_frames_keep_non_ascii_text() -> None:
    frame = m.ErrorMessage("INTERNAL_ERROR", "héllo ✓")
    assert "héllo ✓".encode() in frame.encode()
    assert json.loads(frame.encode())["data"]["message"] == "héllo ✓"


# --------------------------------------------------------- events as frames


def wire_of(event: ev.Event) -> list[dict[str, Any]]:
    return [json.loads(f.encode()) for f in frames_for(event)]


def result(outcome: Outcome, **kw: Any) -> RunResult:
    return RunResult("r1", outcome, 1, None, 10, None, None, **kw)


def test_answers_go_back_with_the_request_id() -> None:
    cause = ev.Cause("c1", "req-3")
    cases: list[tuple[ev.Answer, str, dict[str, Any]]] = [
        (ev.ProjectAnswer(SNAPSHOT), "project_state", m.project_state_data(SNAPSHOT)),
        (ev.DeleteAnswer(PID), "project_delete", {"project_id": PID, "status": "deleted"}),
        (rev.RunAccepted(PID, "r1"), "execute", {"run_id": "r1", "status": "started"}),
        (rev.KillAnswer(PID, "killed"), "agent_kill", {"status": "killed"}),
        (rev.InterruptAnswer(PID, "idle"), "agent_interrupt", {"status": "idle"}),
        (
            rev.PermissionAnswered(PID, "perm-1", "already_resolved"),
            "permission_response",
            {"permission_id": "perm-1", "status": "already_resolved"},
        ),
        (rev.SettingsAnswer(SNAPSHOT), "project_state", m.project_state_data(SNAPSHOT)),
        (
            rev.SessionResetAnswer(PID, "s1"),
            "agent_new_session",
            {"old_session_id": "s1", "status": "reset"},
        ),
    ]
    assert {type(a) for a, _, _ in cases} == all_subclasses(ev.Answer)
    for answer, mtype, data in cases:
        [frame] = wire_of(ev.Answered(cause, answer))
        assert frame == {"type": mtype, "project_id": PID, "request_id": "req-3", "data": data}
        [no_id] = wire_of(ev.Answered(ev.Cause("c1"), answer))
        assert "request_id" not in no_id


def test_an_unknown_answer_has_no_frame() -> None:
    class Strange(ev.Answer):
        pass

    with pytest.raises(TypeError):
        frames_for(ev.Answered(ev.Cause("c1"), Strange()))


def test_project_and_session_events_as_frames() -> None:
    record = Record(8, "2026-01-02T03:04:05.678Z", "r1", "claude", {"type": "x"}, RECORD_LINE)
    cases: list[tuple[ev.Event, str, dict[str, Any]]] = [
        (ev.ProjectCreated(SNAPSHOT), "project_created", m.project_state_data(SNAPSHOT)),
        (ev.ProjectDeleted(PID), "project_deleted", {"project_id": PID}),
        (
            ev.ProjectChanged(FAILED_SNAPSHOT),
            "project_state",
            m.project_state_data(FAILED_SNAPSHOT),
        ),
        (ev.RecordAppended(PID, record), "agent_message", json.loads(RECORD_LINE)),
        (rev.SessionChanged(PID, "s2"), "project_update", {"session_id": "s2"}),
        (
            rev.SessionReset(PID, None),
            "session_reset",
            {"type": "session_reset", "old_session_id": None},
        ),
        (rev.RunKilled(PID, "r1"), "process_killed", {"type": "process_killed", "run_id": "r1"}),
    ]
    for event, mtype, data in cases:
        assert wire_of(event) == [{"type": mtype, "project_id": PID, "data": data}]
    assert m.project_state_data(FAILED_SNAPSHOT)["error_details"] == "it broke"
    assert "error_details" not in m.project_state_data(SNAPSHOT)


def test_events_without_frames() -> None:
    """RunStarted shows as its execution_started Record; the rest are for observers only."""
    assert frames_for(rev.RunStarted(PID, "r1", None)) == []
    assert frames_for(ev.SlowConsumerDropped("c1", 100)) == []
    assert frames_for(ev.AuthFailed("10.0.0.1", "bad token", True)) == []


def test_a_successful_or_killed_run_is_only_execution_finished() -> None:
    for outcome in (Outcome.SUCCESS, Outcome.KILLED):
        finished = result(outcome, reason="user" if outcome is Outcome.KILLED else None)
        [frame] = wire_of(rev.RunFinished(PID, finished))
        assert frame == {
            "type": "execution_finished",
            "project_id": PID,
            "data": finished.as_record(),
        }


@pytest.mark.parametrize(
    "finished,code,message",
    [
        (result(Outcome.FAILED, error="claude exited with status 1"), "EXECUTION_FAILED", None),
        (result(Outcome.FAILED), "EXECUTION_FAILED", "failed"),
        (result(Outcome.TIMEOUT, error="the run exceeded 30s"), "EXECUTION_TIMEOUT", None),
        (
            result(Outcome.FAILED, error="cannot start claude: nope", spawn_failed=True),
            "CLAUDE_NOT_FOUND",
            None,
        ),
    ],
    ids=["failed", "failed-without-error", "timeout", "spawn-failed"],
)
def test_an_unsuccessful_run_is_execution_finished_then_an_error(
    finished: RunResult, code: str, message: str | None
) -> None:
    frames = wire_of(rev.RunFinished(PID, finished))
    assert [f["type"] for f in frames] == ["execution_finished", "error"]
    assert frames[0]["data"] == finished.as_record()
    assert frames[0]["data"]["outcome"] == str(finished.outcome)
    error = frames[1]
    assert error["project_id"] == PID
    assert error["data"] == {
        "code": code,
        "message": message or finished.error,
        "details": {"run_id": "r1"},
    }


def test_a_domain_error_subclass_answers_with_its_parents_code() -> None:
    from pocket_agent.core.errors import ProjectNotFound
    from pocket_agent.net.errors import wire_error

    class Archived(ProjectNotFound):
        pass

    assert wire_error(Archived("p1")).code == ErrorCode.PROJECT_NOT_FOUND
