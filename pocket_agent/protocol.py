"""The wire protocol: envelope, typed requests, typed payloads, error codes.

This module is the protocol's single source (docs/protocol.rst describes it for
client authors). It knows nothing of sockets or Autobahn: it turns a decoded
frame into a typed request, and typed replies into bytes.

Envelope, both directions::

    {"type": str, "project_id"?: str, "request_id"?: str, "data"?: object}
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

PROTOCOL_VERSION = 1
SUBPROTOCOL = "pocket-agent.v1"
MAX_REQUEST_ID_LENGTH = 128


class ErrorCode(enum.StrEnum):
    INVALID_MESSAGE = "INVALID_MESSAGE"
    INVALID_PATH = "INVALID_PATH"
    PROJECT_NESTING = "PROJECT_NESTING"
    PROJECT_NOT_FOUND = "PROJECT_NOT_FOUND"
    PROJECT_LIMIT = "PROJECT_LIMIT"
    EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
    EXECUTION_FAILED = "EXECUTION_FAILED"
    CLAUDE_NOT_FOUND = "CLAUDE_NOT_FOUND"
    PROCESS_ACTIVE = "PROCESS_ACTIVE"
    RESOURCE_LIMIT = "RESOURCE_LIMIT"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ProtocolError(Exception):
    """A request the server refuses; becomes one ``error`` frame, never a close."""

    def __init__(
        self, code: ErrorCode, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = dict(details) if details else None


def invalid(field: str, reason: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.INVALID_MESSAGE, f"{field}: {reason}", {"field": field, "reason": reason}
    )


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: what phones parse without surprises."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- inbound


@attrs.frozen
class Envelope:
    type: str
    project_id: str | None = None
    request_id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def target_project_id(self) -> str | None:
        """Top-level ``project_id``, else ``data.project_id`` (the caller falls back further)."""
        if self.project_id is not None:
            return self.project_id
        nested = self.data.get("project_id")
        if nested is None:
            return None
        if not isinstance(nested, str) or not nested:
            raise invalid("data.project_id", "must be a non-empty string")
        return nested


def decode_envelope(payload: bytes | str) -> Envelope:
    """Parse one text frame; every malformation is an INVALID_MESSAGE naming the field."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid("frame", f"not valid JSON ({e})") from None
    except RecursionError:
        raise invalid("frame", "nested too deeply") from None
    if not isinstance(obj, dict):
        raise invalid("frame", "must be a JSON object")
    try:
        # JSON may spell lone surrogates ("\ud800"): no UTF-8 can carry them back out.
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise invalid("frame", "contains unpaired UTF-16 surrogates") from None
    mtype = obj.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise invalid("type", "must be a non-empty string")
    request_id = obj.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_LENGTH
    ):
        raise invalid("request_id", f"must be a string of at most {MAX_REQUEST_ID_LENGTH} chars")
    project_id = obj.get("project_id")
    if project_id is not None and (not isinstance(project_id, str) or not project_id):
        raise invalid("project_id", "must be a non-empty string")
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise invalid("data", "must be a JSON object")
    return Envelope(type=mtype, project_id=project_id, request_id=request_id, data=data)


def request_id_of(payload: bytes | str) -> str | None:
    """Best effort: the request_id of a frame that failed validation, so errors still echo it."""
    try:
        obj = json.loads(payload)
        rid = obj.get("request_id") if isinstance(obj, dict) else None
        if isinstance(rid, str) and len(rid) <= MAX_REQUEST_ID_LENGTH:
            rid.encode()  # a lone surrogate cannot be echoed
            return rid
    except Exception:  # whatever made the frame invalid in the first place
        return None
    return None


def _bool(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise invalid(f"data.{name}", "must be a boolean")
    return value


def _optional_seq(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"data.{name}", "must be a non-negative integer")
    return value


def _required_str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise invalid(f"data.{name}", "required, must be a non-empty string")
    return value


class Request:
    """Base of the typed requests; ``TYPE`` is the canonical wire name."""

    TYPE: ClassVar[str]
    NEEDS_PROJECT: ClassVar[bool] = False


@attrs.frozen
class HealthRequest(Request):
    TYPE = "health"


@attrs.frozen
class ProjectListRequest(Request):
    TYPE = "project_list"


@attrs.frozen
class ProjectCreateRequest(Request):
    TYPE = "project_create"
    path: str
    create: bool = False


@attrs.frozen
class ProjectDeleteRequest(Request):
    TYPE = "project_delete"
    NEEDS_PROJECT = True


@attrs.frozen
class ProjectJoinRequest(Request):
    TYPE = "project_join"
    NEEDS_PROJECT = True
    after_seq: int | None = None


@attrs.frozen
class ProjectLeaveRequest(Request):
    TYPE = "project_leave"
    NEEDS_PROJECT = True


@attrs.frozen
class ExecuteRequest(Request):
    TYPE = "execute"
    NEEDS_PROJECT = True
    prompt: str
    options: Mapping[str, Any] | None = None  # validated by command.parse_options


@attrs.frozen
class AgentKillRequest(Request):
    TYPE = "agent_kill"
    NEEDS_PROJECT = True


@attrs.frozen
class AgentNewSessionRequest(Request):
    TYPE = "agent_new_session"
    NEEDS_PROJECT = True


@attrs.frozen
class GetMessagesRequest(Request):
    TYPE = "get_messages"
    NEEDS_PROJECT = True
    after_seq: int | None = None
    since: str | None = None  # normalised to our own RFC 3339 form
    before_seq: int | None = None
    limit: int = 100
    direction: str | None = None  # None = all


MAX_PAGE = 1000
DIRECTIONS = ("client", "claude", "server", "all")


def _get_messages(data: Mapping[str, Any]) -> GetMessagesRequest:
    since = data.get("since")
    if since is not None:
        try:
            if not isinstance(since, str):
                raise ValueError
            moment = datetime.fromisoformat(since.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
        except ValueError:
            raise invalid("data.since", "must be an RFC 3339 time with a zone") from None
        since = rfc3339(moment)
    limit = data.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise invalid("data.limit", f"must be an integer from 1 to {MAX_PAGE}")
    direction = data.get("direction", "all")
    if direction not in DIRECTIONS:
        raise invalid("data.direction", f"must be one of {', '.join(DIRECTIONS)}")
    return GetMessagesRequest(
        after_seq=_optional_seq(data, "after_seq"),
        since=since,
        before_seq=_optional_seq(data, "before_seq"),
        limit=limit,
        direction=None if direction == "all" else direction,
    )


def _execute(data: Mapping[str, Any]) -> ExecuteRequest:
    options = data.get("options")
    if options is not None and not isinstance(options, dict):
        raise invalid("data.options", "must be a JSON object")
    prompt = _required_str(data, "prompt")
    if "\x00" in prompt:
        raise invalid("data.prompt", "must not contain NUL characters")
    return ExecuteRequest(prompt=prompt, options=options)


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Request]] = {
    "health": lambda d: HealthRequest(),
    "health_check": lambda d: HealthRequest(),
    "project_list": lambda d: ProjectListRequest(),
    "project_create": lambda d: ProjectCreateRequest(
        path=_required_str(d, "path"), create=_bool(d, "create", False)
    ),
    "project_delete": lambda d: ProjectDeleteRequest(),
    "project_join": lambda d: ProjectJoinRequest(after_seq=_optional_seq(d, "after_seq")),
    "project_leave": lambda d: ProjectLeaveRequest(),
    "execute": _execute,
    "agent_kill": lambda d: AgentKillRequest(),
    "agent_new_session": lambda d: AgentNewSessionRequest(),
    "get_messages": _get_messages,
}

REQUEST_TYPES: frozenset[str] = frozenset(_PARSERS)


def parse_request(envelope: Envelope) -> Request:
    parser = _PARSERS.get(envelope.type)
    if parser is None:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"unknown message type {envelope.type!r}",
            {"field": "type", "reason": "unknown type", "known": sorted(REQUEST_TYPES)},
        )
    return parser(envelope.data)


# -------------------------------------------------------------------------- outbound


class ProjectStatus(enum.StrEnum):
    IDLE = "IDLE"
    EXECUTING = "EXECUTING"
    ERROR = "ERROR"


@attrs.frozen
class ProjectState:
    id: str
    path: str
    state: ProjectStatus
    session_id: str | None
    created_at: datetime
    last_active: datetime
    last_seq: int
    subscriber_count: int
    error_details: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id,
            "path": self.path,
            "state": str(self.state),
            "session_id": self.session_id,
            "created_at": rfc3339(self.created_at),
            "last_active": rfc3339(self.last_active),
            "last_seq": self.last_seq,
            "subscriber_count": self.subscriber_count,
        }
        if self.error_details is not None:
            wire["error_details"] = self.error_details
        return wire


@attrs.frozen
class Message:
    """One outbound frame. ``data`` is already wire-shaped (plain JSON values)."""

    type: str
    data: Mapping[str, Any] = attrs.field(factory=dict)
    project_id: str | None = None
    request_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.type}
        if self.project_id is not None:
            wire["project_id"] = self.project_id
        if self.request_id is not None:
            wire["request_id"] = self.request_id
        wire["data"] = self.data
        return wire

    def encode(self) -> bytes:
        return json.dumps(self.to_wire(), ensure_ascii=False, separators=(",", ":")).encode()

    def replying_to(self, request_id: str | None) -> Message:
        return attrs.evolve(self, request_id=request_id)


@attrs.frozen
class AgentMessage:
    """``agent_message`` carrying one Record, encoded around the Record's stored line
    so a multi-megabyte Claude line is never parsed or serialised again."""

    project_id: str
    record_line: bytes
    type: ClassVar[str] = "agent_message"

    def encode(self) -> bytes:
        pid = json.dumps(self.project_id).encode()
        return (
            b'{"type":"agent_message","project_id":' + pid + b',"data":' + self.record_line + b"}"
        )


@attrs.frozen
class HistoryMessage:
    """``message_history`` around stored Record lines (never parsed or re-serialised)."""

    project_id: str
    lines: list[bytes]
    has_more: bool
    first_seq: int | None
    last_seq: int | None
    project_last_seq: int
    request_id: str | None = None
    type: ClassVar[str] = "message_history"

    def encode(self) -> bytes:
        head: dict[str, Any] = {"type": "message_history", "project_id": self.project_id}
        if self.request_id is not None:
            head["request_id"] = self.request_id
        tail = {
            "has_more": self.has_more,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "project_last_seq": self.project_last_seq,
        }
        return b"".join(
            (
                json.dumps(head, ensure_ascii=False)[:-1].encode(),
                b',"data":{"messages":[',
                b",".join(self.lines),
                b"],",
                json.dumps(tail)[1:].encode(),
                b"}",
            )
        )

    def replying_to(self, request_id: str | None) -> HistoryMessage:
        return attrs.evolve(self, request_id=request_id)


Outgoing = Message | AgentMessage | HistoryMessage


def error_message(
    error: ProtocolError, request_id: str | None = None, project_id: str | None = None
) -> Message:
    data: dict[str, Any] = {"code": str(error.code), "message": error.message}
    if error.details:
        data["details"] = error.details
    return Message("error", data, project_id=project_id, request_id=request_id)


def project_state_message(state: ProjectState) -> Message:
    return Message("project_state", state.to_wire(), project_id=state.id)
