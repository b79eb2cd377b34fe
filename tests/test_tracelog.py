"""The operator's debugging logs (SPEC §8): ``logging.raw_output`` logs every line claude
printed, ``logging.trace`` every WebSocket frame in and out, tokens redacted; both pass
whatever ``logging.level`` says, and ``PA_LOG_FORMAT=text`` keeps one event a line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import Logger, LogLevel, capturedLogs

from pocket_agent.ops.logs import (
    _JSON_TOKEN,
    _TOKEN,
    LOGGED_TEXT_LIMIT,
    RAW_OUTPUT_NAMESPACE,
    TRACE_NAMESPACE,
    LogService,
    json_line,
    redact,
    text_line,
)

from .support import TOKEN, Harness

RESULT = {"type": "result", "subtype": "success", "is_error": False, "session_id": "s-1"}


def harness_with(tmp_path: Path, **logging: bool) -> Harness:
    return Harness(tmp_path, logging=logging)


@pytest.fixture
def made() -> Iterator[list[Harness]]:
    harnesses: list[Harness] = []
    yield harnesses
    for harness in harnesses:
        harness.stop()


def of(events: Sequence[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == namespace]


# ----------------------------------------------------------------------- trace


def test_trace_logs_every_frame_in_and_out(tmp_path: Path, made: list[Harness]) -> None:
    harness = harness_with(tmp_path, trace=True)
    made.append(harness)
    with capturedLogs() as events:
        client, hello = harness.hello()
        client.send_raw('{"type": "health", "request_id": "h1"}')
        client.send_raw(b"\x00\x01", binary=True)
        replies = client.new()
    frames = of(events, TRACE_NAMESPACE)
    assert [(f["direction"], f["binary"]) for f in frames] == [
        ("out", False),  # server_hello
        ("in", False),
        ("out", False),  # health_status
        ("in", True),
        ("out", False),  # the error for the binary frame
    ]
    assert all(f["log_level"] is LogLevel.debug for f in frames)
    connection_id = hello["data"]["connection_id"]
    assert {f["connection_id"] for f in frames} == {connection_id}
    assert json.loads(frames[0]["frame"]) == hello
    assert frames[1]["frame"] == '{"type": "health", "request_id": "h1"}'
    assert json.loads(frames[2]["frame"]) == replies[0]
    assert (frames[3]["frame"], frames[3]["bytes"]) == ("", 2)
    line = json.loads(json_line(frames[1]))
    assert line["msg"] == "Frame in" and line["level"] == "debug"


def test_trace_redacts_tokens(tmp_path: Path, made: list[Harness]) -> None:
    harness = harness_with(tmp_path, trace=True)
    made.append(harness)
    client, _ = harness.hello()
    with capturedLogs() as events:
        client.send_raw(json.dumps({"type": "health", "token": TOKEN, "url": f"x?token={TOKEN}"}))
        client.new()
    written = "".join(json_line(e) for e in of(events, TRACE_NAMESPACE))
    written += "".join(text_line(e) for e in of(events, TRACE_NAMESPACE))
    assert TOKEN not in written
    assert written.count("<redacted>") == 4


def test_trace_cuts_out_the_token_wherever_it_is(tmp_path: Path, made: list[Harness]) -> None:
    """A client may paste the token anywhere (a prompt, a path): the literal value goes."""
    harness = harness_with(tmp_path, trace=True)
    made.append(harness)
    client, _ = harness.hello()
    with capturedLogs() as events:
        client.send_raw(json.dumps({"type": "health", "note": f"my token is {TOKEN}!"}))
        client.new()
    written = "".join(json_line(e) for e in of(events, TRACE_NAMESPACE))
    assert TOKEN not in written
    assert "my token is <redacted>!" in written


def test_no_trace_by_default(tmp_path: Path, made: list[Harness]) -> None:
    harness = harness_with(tmp_path)
    made.append(harness)
    with capturedLogs() as events:
        client, _ = harness.hello()
        client.request("health")
    assert of(events, TRACE_NAMESPACE) == []


def test_a_huge_frame_is_cut_in_the_log(tmp_path: Path, made: list[Harness]) -> None:
    harness = harness_with(tmp_path, trace=True)
    made.append(harness)
    client, _ = harness.hello()
    big = json.dumps({"type": "health", "pad": "x" * (LOGGED_TEXT_LIMIT + 10)})
    with capturedLogs() as events:
        client.send_raw(big)
    [frame] = [f for f in of(events, TRACE_NAMESPACE) if f["direction"] == "in"]
    assert frame["truncated"] is True and frame["bytes"] == len(big)
    assert len(frame["frame"]) == LOGGED_TEXT_LIMIT


# ------------------------------------------------------------------ raw output


def run_once(harness: Harness) -> tuple[str, str]:
    client, _ = harness.hello()
    path = harness.project_dir("app")
    pid = client.request("project_create", data={"path": str(path)})[0]["project_id"]
    replies = client.request("execute", project_id=pid, data={"prompt": "hi"})
    run_id = next(r["data"]["run_id"] for r in replies if r["type"] == "execute")
    process = harness.clock.processes[-1]
    process.emit(b'{"type":"system",  "subtype":"init","session_id":"s-1","tools":[]}')
    process.emit(b"not json at all")
    process.stderr("warning: one\nwarning: two\n")
    process.emit(RESULT)
    process.exit(0)
    return pid, run_id


def test_raw_output_logs_every_claude_line(tmp_path: Path, made: list[Harness]) -> None:
    harness = harness_with(tmp_path, raw_output=True)
    made.append(harness)
    with capturedLogs() as events:
        pid, run_id = run_once(harness)
    lines = of(events, RAW_OUTPUT_NAMESPACE)
    assert [(e["stream"], e["direction"], e["line"]) for e in lines] == [
        # Exactly as claude printed it (two spaces and all), not re-encoded.
        ("stdout", "claude", '{"type":"system",  "subtype":"init","session_id":"s-1","tools":[]}'),
        ("stdout", "server", "not json at all"),
        ("stderr", "server", "warning: one"),
        ("stderr", "server", "warning: two"),
        ("stdout", "claude", json.dumps(RESULT)),
    ]
    assert {(e["project_id"], e["run_id"]) for e in lines} == {(pid, run_id)}
    assert all(e["log_level"] is LogLevel.debug for e in lines)
    assert json.loads(json_line(lines[2]))["msg"] == "Claude stderr"


def test_no_raw_output_by_default(tmp_path: Path, made: list[Harness]) -> None:
    harness = harness_with(tmp_path)
    made.append(harness)
    with capturedLogs() as events:
        run_once(harness)
    assert of(events, RAW_OUTPUT_NAMESPACE) == []


# ------------------------------------------------------------------ the log file


def test_flagged_lines_pass_any_level_others_do_not(tmp_path: Path) -> None:
    """At logging.level error the flags still work: the operator asked for them."""
    path = tmp_path / "server.log"
    service = LogService("error", "json", path)
    service.privilegedStartService()
    try:
        Logger(namespace=TRACE_NAMESPACE).debug("Frame {direction}", direction="in")
        Logger(namespace=RAW_OUTPUT_NAMESPACE).debug("Claude {stream}", stream="stdout")
        Logger(namespace="pocket_agent.net.protocol").debug("Message processed")
        Logger(namespace="pocket_agent.net.protocol").info("Connection opened")
        service.set_level("info")
        Logger(namespace="pocket_agent.net.protocol").info("Connection closed")
    finally:
        service.stopService()
    logged = [json.loads(line)["msg"] for line in path.read_text().splitlines()]
    assert logged == ["Frame in", "Claude stdout", "Connection closed"]


def test_text_format_keeps_one_event_a_line() -> None:
    stream = StringIO()
    service = LogService("debug", "text", None, extra_stream=stream)
    service.privilegedStartService()
    try:
        Logger(namespace=RAW_OUTPUT_NAMESPACE).debug(
            "Claude {stream}", stream="stderr", line="one\ntwo\r\nthree"
        )
    finally:
        service.stopService()
    [line] = stream.getvalue().splitlines()
    assert line.endswith("DEBUG Claude stderr stream=stderr line=one\\ntwo\\r\\nthree")


def test_redact_json_token_fields() -> None:
    text = '{"token": "abc", "auth_token":"d\\"ef", "tokens": 2, "x": "Bearer ghi"}'
    assert redact(text) == (
        '{"token": "<redacted>", "auth_token":"<redacted>", "tokens": 2, "x": "Bearer <redacted>"}'
    )


NEAR_TOKENS = ["tok", "token=", "tok%65n=", "Bearer ", "bearer.", '"token": "', '"a_token":"']
NEAR_TOKENS += ["x", '"', "\\", "&", " ", "?", "é", "earer", "TOKEN=", "Token="]


@given(st.lists(st.sampled_from(NEAR_TOKENS), max_size=10))
def test_redact_looks_first_but_cuts_exactly_what_the_patterns_cut(parts: list[str]) -> None:
    text = "".join(parts) + "secret-value"
    both = _JSON_TOKEN.sub(r"\1<redacted>", _TOKEN.sub(r"\1<redacted>", text))
    assert redact(text) == both
