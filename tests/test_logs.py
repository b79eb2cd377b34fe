"""The JSON / text log lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from pocket_agent.ops.logs import LogService, json_line, redact, text_line


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "log_format": "Connection opened",
        "log_level": LogLevel.info,
        "log_time": 0.25,
        "log_namespace": "pocket_agent.websocket",
    }
    base.update(fields)
    return base


def test_json_line_has_the_operator_fields() -> None:
    line = json_line(event(connection_id="c1", duration_ms=1.5, obj=object()))
    assert line.endswith("\n")
    record = json.loads(line)
    assert record == {
        "timestamp": "1970-01-01T00:00:00.250Z",
        "level": "info",
        "msg": "Connection opened",
        "connection_id": "c1",
        "duration_ms": 1.5,
        "logger": "pocket_agent.websocket",
    }


def test_levels_map_to_the_four_names() -> None:
    names = [
        json.loads(json_line(event(log_level=level)))["level"]
        for level in (
            LogLevel.debug,
            LogLevel.info,
            LogLevel.warn,
            LogLevel.error,
            LogLevel.critical,
        )
    ]
    assert names == ["debug", "info", "warn", "error", "error"]


def test_failures_carry_error_and_traceback() -> None:
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        failure = Failure()
    record = json.loads(json_line(event(log_failure=failure, log_format="Internal error")))
    assert record["error"] == "kaput"
    assert "RuntimeError" in record["traceback"]
    assert record["level"] == "error"


def test_tokens_never_reach_the_log() -> None:
    token = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    line = json_line(
        event(log_format="GET /ws?token={token}", token=token, header=f"Bearer {token}")
    )
    assert token not in line
    assert redact(f"bearer.{token}") == "bearer.<redacted>"


def test_text_line_is_one_readable_line() -> None:
    line = text_line(event(connection_id="c1"))
    assert line == "1970-01-01T00:00:00.250Z INFO  Connection opened connection_id=c1\n"


def test_log_service_writes_json_lines_filtered_by_level(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    service = LogService("info", "json", path)
    log = Logger(namespace="test")
    service.privilegedStartService()
    service.startService()
    try:
        log.debug("hidden")
        log.info("Shown {n}", n=1, project_id="p1")
        service.set_level("debug")
        log.debug("now visible")
    finally:
        service.stopService()
    log.info("after stop")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["msg"] for r in lines] == ["Shown 1", "now visible"]
    assert lines[0]["project_id"] == "p1"


def test_log_service_text_to_a_stream(tmp_path: Path) -> None:
    stream = io.StringIO()
    service = LogService("warn", "text", None, extra_stream=stream)
    service.privilegedStartService()
    service.startService()
    try:
        Logger().info("quiet")
        Logger().warn("Loud", peer="1.2.3.4")
    finally:
        service.stopService()
    assert stream.getvalue().count("\n") == 1
    assert "WARN  Loud peer=1.2.3.4" in stream.getvalue()
    assert globalLogPublisher  # observers were removed: nothing else to check


def test_start_up_is_logged_to_the_file_before_start_service(tmp_path: Path) -> None:
    """Recovery and the sweep of a crashed server's runs happen in the other services'
    privilegedStartService, before any startService: they must reach server.log."""
    service = LogService("info", "json", tmp_path / "server.log")
    service.privilegedStartService()
    try:
        Logger().warn("Closed run {run_id} cut off by a crash", run_id="r1")
    finally:
        service.stopService()
    [line] = (tmp_path / "server.log").read_text().splitlines()
    assert json.loads(line)["msg"] == "Closed run r1 cut off by a crash"


def test_an_unwritable_log_file_ends_start_up_with_one_line(tmp_path: Path) -> None:
    from pocket_agent.errors import StartupError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    service = LogService("info", "json", blocker / "server.log")
    try:
        service.privilegedStartService()
    except StartupError as e:
        assert "logging.file" in e.message and "\n" not in e.message
    else:
        raise AssertionError("start-up went on without a log")


def test_redaction_handles_encodings_and_odd_characters() -> None:
    assert redact("/h?tok%65n=abc-123") == "/h?tok%65n=<redacted>"
    assert redact("GET /ws?token=%4Aabc&x=1") == "GET /ws?token=<redacted>&x=1"
    assert redact("authorization: Bearer a.b~c") == "authorization: Bearer <redacted>"


def test_an_ordinary_manhole_logout_is_not_an_error_line(tmp_path: Path) -> None:
    service = LogService("info", "json", tmp_path / "server.log")
    service.privilegedStartService()
    try:
        conch = Logger(namespace="twisted.conch.ssh.transport.SSHServerTransport")
        conch.error("Got remote error, code {code}\nreason: {reason}", code=11, reason=b"bye")
        conch.error("Got remote error, code {code}\nreason: {reason}", code=2, reason=b"bad")
    finally:
        service.stopService()
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    assert [line["code"] for line in lines] == [2]  # a real protocol error still shows
