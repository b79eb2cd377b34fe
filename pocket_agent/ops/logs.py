"""The server's own log: JSON lines (or readable text) with context fields, tokens redacted.

One event = one line: ``timestamp``, ``level``, ``msg``, then whatever context the
event carries (``project_id``, ``connection_id``, ``duration_ms``...). Code logs with
``Logger().info("Connection opened", connection_id=...)``; the message is the
format string and the keyword arguments become fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

from pocket_agent.errors import StartupError

LEVEL_NAMES = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warn",
    LogLevel.error: "error",
    LogLevel.critical: "error",
}
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
_SKIP = {"format", "message", "isError", "failure", "why", "time", "system", "printed"}
_SCALARS = (str, int, float, bool, type(None))
_TOKEN = re.compile(r"((?:[?&]|\b)tok(?:en|%65n)=|[Bb]earer[ .])[^&\s\"',;]+")
# A token as a JSON string field ("token": "...", "auth_token": "..."), as in a traced frame.
_JSON_TOKEN = re.compile(r'("(?:\w*_)?token"\s*:\s*")(?:[^"\\]|\\.)*')

# Loggers the operator switches on with a flag (logging.raw_output, logging.trace): their
# debug lines pass whatever logging.level says, and nothing is logged while the flag is off.
RAW_OUTPUT_NAMESPACE = "pocket_agent.raw_output"
TRACE_NAMESPACE = "pocket_agent.trace"
FLAGGED_NAMESPACES = (RAW_OUTPUT_NAMESPACE, TRACE_NAMESPACE)
LOGGED_TEXT_LIMIT = 64 * 1024  # characters of one frame or output line in the log

_trace = Logger(namespace=TRACE_NAMESPACE)


class DebugGate:
    """Whether ``logging.level`` is ``debug``: code asks before it builds a debug event.

    A debug event that the level filters out still costs building it and a trip through
    every observer, and under ``twistd -n`` twistd's own stdout observer filters nothing:
    without this, every "Message processed" line was formatted and written to stdout at
    any level. Set by :class:`LogService` (and on SIGHUP); off when there is none.
    """

    on = False


DEBUG = DebugGate()  # one log configuration per process, as globalLogPublisher is


def redact(text: str) -> str:
    """Belt and braces: nothing we log should carry a token, but URIs and headers might.

    Both patterns need "tok" or "earer" in the text: looking for those first makes a
    traced frame without either (nearly all of them) a substring search, not two regex
    scans (those were 60 % of the server's time with ``logging.trace`` on)."""
    if "tok" not in text and "earer" not in text:
        return text
    return _JSON_TOKEN.sub(r"\1<redacted>", _TOKEN.sub(r"\1<redacted>", text))


def clipped(text: str) -> dict[str, Any]:
    """``text`` (redacted) for a log field, cut at :data:`LOGGED_TEXT_LIMIT` so one huge
    Claude line cannot flood the log (the history keeps it whole)."""
    if len(text) <= LOGGED_TEXT_LIMIT:
        return {"text": redact(text), "truncated": False}
    return {"text": redact(text[:LOGGED_TEXT_LIMIT]), "truncated": True}


def trace_frame(
    direction: str,
    payload: bytes,
    binary: bool,
    connection_id: str | None,
    secret: str | None = None,
) -> None:
    """logging.trace: one debug line per WebSocket frame in or out. ``secret`` (the
    token) is cut out wherever it appears, not only where it looks like a token."""
    text = "" if binary else payload.decode("utf-8", "replace")
    if secret and len(secret) >= 8:
        text = text.replace(secret, "<redacted>")
    shown = clipped(text)
    _trace.debug(
        "Frame {direction}",
        direction=direction,
        connection_id=connection_id,
        binary=binary,
        bytes=len(payload),
        frame=shown["text"],
        truncated=shown["truncated"],
    )


def event_fields(event: LogEvent) -> dict[str, Any]:
    level = event.get("log_level", LogLevel.info)
    if "token" in event and "log_format" in event:
        event = {**event, "token": "<redacted>"}  # a token must not reach the message either
    fields: dict[str, Any] = {
        "timestamp": datetime.fromtimestamp(event.get("log_time", 0.0), UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": LEVEL_NAMES.get(level, "info"),
        "msg": redact(formatEvent(event) or ""),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _SKIP or key in fields:
            continue
        if key == "token" or key.endswith("_token"):
            fields[key] = "<redacted>"
        elif isinstance(value, _SCALARS):
            fields[key] = redact(value) if isinstance(value, str) else value
    failure = event.get("log_failure")
    if failure is not None:
        fields["error"] = redact(str(failure.getErrorMessage()))
        fields["traceback"] = redact(failure.getTraceback())
        if fields["level"] in ("debug", "info"):
            fields["level"] = "error"
    if "log_namespace" in event:
        fields.setdefault("logger", event["log_namespace"])
    return fields


def json_line(event: LogEvent) -> str:
    return json.dumps(event_fields(event), ensure_ascii=False, default=str) + "\n"


def text_line(event: LogEvent) -> str:
    fields = event_fields(event)
    head = f"{fields.pop('timestamp')} {fields.pop('level').upper():5} {fields.pop('msg')}"
    tb = fields.pop("traceback", None)
    fields.pop("logger", None)
    # One event, one line: a value's own newlines (stderr, a frame) are shown escaped.
    extra = " ".join(f"{k}={_one_line(v)}" for k, v in fields.items())
    return f"{head} {extra}".rstrip() + "\n" + (tb if tb else "")


def _one_line(value: object) -> object:
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return value.replace("\r", "\\r").replace("\n", "\\n")
    return value


@implementer(ILogObserver)
class LineObserver:
    def __init__(self, stream: IO[str] | LogFile, formatter: Callable[[LogEvent], str]) -> None:
        self.stream = stream
        self.formatter = formatter

    def __call__(self, event: LogEvent) -> None:
        self.stream.write(self.formatter(event))
        self.stream.flush()


@implementer(ILogFilterPredicate)
class QuietSSHGoodbye:
    """conch logs every ordinary manhole logout (the client's "disconnected by user",
    SSH code 11) at error level; an alert on errors must not fire for it."""

    def __call__(self, event: LogEvent) -> Any:
        if event.get("log_namespace", "").startswith("twisted.conch.ssh.transport") and (
            event.get("code") == 11
        ):
            return PredicateResult.no
        return PredicateResult.maybe


class LogService(Service):
    """Attach the configured observer for the service's lifetime (tests start many servers)."""

    def __init__(
        self,
        level: str,
        fmt: str,
        path: Path | None,
        rotate_bytes: int = 50 * 1024 * 1024,
        extra_stream: IO[str] | None = None,
    ) -> None:
        self.level = level
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
        for namespace in FLAGGED_NAMESPACES:
            self.predicate.setLogLevelForNamespace(namespace, LogLevel.debug)
        self.formatter = json_line if fmt == "json" else text_line
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.extra_stream = extra_stream
        self._observers: list[ILogObserver] = []
        self._files: list[LogFile] = []

    def set_level(self, level: str) -> None:
        """SIGHUP: the new logging.level, for every observer at once."""
        self.level = level
        self.predicate.setLogLevelForNamespace("", LEVELS[level])
        DEBUG.on = level == "debug"

    def privilegedStartService(self) -> None:
        """Open the log file before anything listens: a path we cannot write ends
        start-up with one line instead of leaving a server running with no log."""
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                logfile = LogFile(
                    self.path.name,
                    str(self.path.parent),
                    rotateLength=self.rotate_bytes,
                    maxRotatedFiles=10,
                )
            except OSError as e:
                raise StartupError(
                    f"logging.file: cannot open {self.path}: {e.strerror}"
                ) from None
            self._files.append(logfile)
        # Observe from here, not from startService: start-up itself (recovery, the
        # sweep of a crashed server's runs) happens before startService and must be in
        # server.log too.
        DEBUG.on = self.level == "debug"
        for logfile in self._files:
            self._observe(LineObserver(logfile, self.formatter))
        if self.extra_stream is not None:
            self._observe(LineObserver(self.extra_stream, text_line))
        super().privilegedStartService()

    def _observe(self, observer: ILogObserver) -> None:
        filtered = FilteringLogObserver(observer, [QuietSSHGoodbye(), self.predicate])
        globalLogPublisher.addObserver(filtered)
        self._observers.append(filtered)

    def stopService(self) -> None:
        super().stopService()
        self.detach()

    def detach(self) -> None:
        """Stop logging to the file (also after a start-up that failed half-way)."""
        DEBUG.on = False
        for observer in self._observers:
            globalLogPublisher.removeObserver(observer)
        for logfile in self._files:
            logfile.close()
        self._observers.clear()
        self._files.clear()
