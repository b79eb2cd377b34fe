"""The codec: envelopes in, typed messages out."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocket_agent.core.projects import ProjectSnapshot as ProjectState
from pocket_agent.core.projects import ProjectStatus
from pocket_agent.times import parse_time, rfc3339
from pocket_agent.wire.envelope import decode_envelope, encode_envelope, request_id_of
from pocket_agent.wire.errors import ErrorCode, ProtocolError
from pocket_agent.wire.messages import ErrorMessage, project_state_data
from pocket_agent.wire.requests import (
    REQUEST_TYPES,
    GetMessagesRequest,
    ProjectCreateRequest,
    ProjectJoinRequest,
    parse_request,
)
from tests.support import Harness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    mtype=st.text(min_size=1),
    project_id=st.none() | st.text(min_size=1),
    request_id=st.none() | st.text(max_size=128),
    data=st.dictionaries(st.text(), json_values, max_size=4),
)
def test_message_encode_decodes_back_to_the_same_envelope(
    mtype: str, project_id: str | None, request_id: str | None, data: dict[str, Any]
) -> None:
    encoded = encode_envelope(mtype, data, project_id=project_id, request_id=request_id)
    envelope = decode_envelope(encoded)
    assert (envelope.type, envelope.project_id, envelope.request_id) == (
        mtype,
        project_id,
        request_id,
    )
    assert envelope.data == data


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(payload: bytes) -> None:
    try:
        envelope = decode_envelope(payload)
        parse_request(envelope)
    except ProtocolError as e:
        assert e.code is ErrorCode.INVALID_MESSAGE
        assert e.details and "field" in e.details
    request_id_of(payload)


@given(json_values)
def test_arbitrary_json_never_raises_anything_but_protocol_errors(value: Any) -> None:
    for payload in (value, {"type": "project_create", "data": value}, {"type": value}):
        try:
            parse_request(decode_envelope(json.dumps(payload)))
        except ProtocolError as e:
            assert e.code is ErrorCode.INVALID_MESSAGE


def test_requests_parse_to_typed_values() -> None:
    envelope = decode_envelope('{"type":"project_create","data":{"path":"/p","create":true}}')
    assert parse_request(envelope) == ProjectCreateRequest(path="/p", create=True)
    envelope = decode_envelope('{"type":"project_join","data":{"after_seq":5}}')
    assert parse_request(envelope) == ProjectJoinRequest(after_seq=5)
    assert {"health", "health_check", "project_list", "project_create"} <= REQUEST_TYPES


def test_null_data_is_an_empty_object() -> None:
    assert decode_envelope('{"type":"health","data":null}').data == {}


def test_target_project_prefers_top_level() -> None:
    envelope = decode_envelope('{"type":"x","project_id":"a","data":{"project_id":"b"}}')
    assert envelope.target_project_id == "a"
    assert decode_envelope('{"type":"x","data":{"project_id":"b"}}').target_project_id == "b"
    assert decode_envelope('{"type":"x"}').target_project_id is None


def test_error_message_shape() -> None:
    error = ProtocolError(ErrorCode.PROJECT_LIMIT, "full", {"resource": "projects", "limit": 1})
    assert ErrorMessage.of(error, request_id="r", project_id="p").to_wire() == {
        "type": "error",
        "project_id": "p",
        "request_id": "r",
        "data": {
            "code": "PROJECT_LIMIT",
            "message": "full",
            "details": {"resource": "projects", "limit": 1},
        },
    }


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05.000Z",
        ),
    ],
)
def test_rfc3339_is_utc_with_z(moment: datetime, text: str) -> None:
    assert rfc3339(moment) == text


def test_project_state_omits_absent_error_details() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    state = ProjectState("id", "/p", ProjectStatus.IDLE, None, when, when, 0, 0)
    assert "error_details" not in project_state_data(state)
    failed = ProjectState("id", "/p", ProjectStatus.ERROR, "s", when, when, 3, 1, "boom")
    assert project_state_data(failed)["error_details"] == "boom"
    assert project_state_data(failed)["state"] == "ERROR"


# ------------------------------------------------- bad input is INVALID_*, never a crash


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00+01:00",  # before datetime.min once in UTC: OverflowError
        "9999-12-31T23:59:59-01:00",  # after datetime.max
        "2026-01-01T00:00:00",  # no zone
        "yesterday",
    ],
)
def test_since_out_of_range_or_malformed_is_invalid(since: str) -> None:
    envelope = decode_envelope(json.dumps({"type": "get_messages", "data": {"since": since}}))
    with pytest.raises(ProtocolError) as info:
        parse_request(envelope)
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert info.value.details is not None
    assert info.value.details["field"] == "data.since"


@pytest.mark.parametrize(
    ("since", "normalised"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
        ("0001-01-01T00:00:00-01:00", "0001-01-01T01:00:00.000Z"),
        ("9999-12-31T23:59:59.999999z", "9999-12-31T23:59:59.999Z"),
        ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05.000Z"),
    ],
)
def test_since_at_the_edges_of_the_range_is_accepted(since: str, normalised: str) -> None:
    envelope = decode_envelope(json.dumps({"type": "get_messages", "data": {"since": since}}))
    assert parse_request(envelope) == GetMessagesRequest(since=normalised)


def test_parse_time_refuses_what_has_no_utc_instant() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_time("0001-01-01T00:00:00+01:00")


def test_get_messages_with_an_overflowing_since_over_the_wire(harness: Harness) -> None:
    client, _ = harness.hello()
    path = harness.project_dir("app")
    pid = client.request("project_create", data={"path": str(path)})[0]["project_id"]
    error = client.one(
        "get_messages",
        project_id=pid,
        request_id="g1",
        data={"since": "0001-01-01T00:00:00+01:00"},
    )
    assert error["type"] == "error" and error["request_id"] == "g1"
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert error["data"]["details"]["field"] == "data.since"


def test_execute_with_a_non_utf8_add_dir_changes_nothing(harness: Harness) -> None:
    """A symlink (a fine name) to a directory named with the bytes ff fe: refused as a bad
    path (INVALID_PATH naming the option) before the run exists: no ``execute`` reply, no EXECUTING, no Record."""
    requester, _ = harness.hello()
    watcher, _ = harness.hello()
    path = harness.project_dir("app")
    pid = requester.request("project_create", data={"path": str(path)})[0]["project_id"]
    watcher.request("project_join", project_id=pid)
    watcher.new()
    requester.new()
    target = os.fsencode(harness.home) + b"/\xff\xfe"
    os.mkdir(target)
    os.symlink(target, os.fsencode(harness.home / "latin"))
    before = len(harness.events.events)

    error = requester.one(
        "execute",
        project_id=pid,
        request_id="x1",
        data={"prompt": "hi", "options": {"add_dirs": [str(harness.home / "latin")]}},
    )

    assert error["type"] == "error" and error["request_id"] == "x1"
    assert error["data"]["code"] == "INVALID_PATH"
    details = error["data"]["details"]
    assert details["field"] == "data.options.add_dirs"
    assert "not valid UTF-8" in details["reason"]
    assert details["path"] == str(harness.home / "latin")
    assert watcher.new() == []
    assert harness.events.events[before:] == []
    assert harness.clock.processes == []
    project = harness.app.registry.get(pid)
    assert project.status is ProjectStatus.IDLE and project.run is None
    assert project.last_seq == 0
    assert not harness.app.hub.following(requester.server.connection)
    assert requester.one("health", request_id="h")["type"] == "health_status"
