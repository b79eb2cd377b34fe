"""The codec: envelopes in, typed messages out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocket_agent.core.projects import ProjectSnapshot as ProjectState
from pocket_agent.core.projects import ProjectStatus
from pocket_agent.times import rfc3339
from pocket_agent.wire.envelope import decode_envelope, encode_envelope, request_id_of
from pocket_agent.wire.errors import ErrorCode, ProtocolError
from pocket_agent.wire.messages import ErrorMessage, project_state_data
from pocket_agent.wire.requests import (
    REQUEST_TYPES,
    ProjectCreateRequest,
    ProjectJoinRequest,
    parse_request,
)

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
