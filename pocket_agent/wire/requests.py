"""Typed requests: what a client may ask, decoded and checked field by field.

Each request knows its wire ``TYPE`` and whether it acts on a project; clients build
the same classes and send them with :func:`encode_request`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from pocket_agent.core.projects import APPROVALS, rule_problem
from pocket_agent.history import MAX_PAGE
from pocket_agent.runs.options import BYPASS, PERMISSION_MODES, RunOptions
from pocket_agent.runs.prompts import PermissionAnswer
from pocket_agent.times import parse_time, rfc3339

from .envelope import Envelope, encode_envelope
from .errors import ErrorCode, ProtocolError, invalid

DIRECTIONS = ("client", "claude", "server", "all")


class Request:
    """Base of the typed requests; ``TYPE`` is the canonical wire name."""

    TYPE: ClassVar[str]
    NEEDS_PROJECT: ClassVar[bool] = False

    def to_data(self) -> dict[str, Any]:
        """The ``data`` object a client sends (fields at their defaults left out)."""
        data = {}
        for field in attrs.fields(type(self)):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            default = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            if value != default:
                data[field.name] = _plain(value)
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, RunOptions):
        return value.to_record() | ({"mcp_config": value.mcp_config} if value.mcp_config else {})
    return list(value) if isinstance(value, tuple) else value


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
    options: RunOptions = attrs.field(factory=RunOptions)


@attrs.frozen
class AgentKillRequest(Request):
    TYPE = "agent_kill"
    NEEDS_PROJECT = True


@attrs.frozen
class AgentNewSessionRequest(Request):
    TYPE = "agent_new_session"
    NEEDS_PROJECT = True


@attrs.frozen
class AgentInterruptRequest(Request):
    TYPE = "agent_interrupt"
    NEEDS_PROJECT = True


@attrs.frozen
class PermissionResponseRequest(Request):
    TYPE = "permission_response"
    NEEDS_PROJECT = True
    permission_id: str
    behavior: str
    message: str | None = None
    updated_input: dict[str, Any] | None = None
    answers: dict[str, str] | None = None
    remember: bool = False

    def answer(self) -> PermissionAnswer:
        return PermissionAnswer(
            permission_id=self.permission_id,
            behavior="allow" if self.behavior == "allow" else "deny",
            message=self.message,
            updated_input=self.updated_input,
            answers=self.answers,
            remember=self.remember,
        )


@attrs.frozen
class ProjectSettingsRequest(Request):
    TYPE = "project_settings"
    NEEDS_PROJECT = True
    allowed_tools: tuple[str, ...] | None = None
    approvals: str | None = None


@attrs.frozen
class GetMessagesRequest(Request):
    TYPE = "get_messages"
    NEEDS_PROJECT = True
    after_seq: int | None = None
    since: str | None = None  # normalised to our own RFC 3339 form
    before_seq: int | None = None
    limit: int = 100
    direction: str | None = None  # None = all


# ----------------------------------------------------------------- fields


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


# ---------------------------------------------------------------- options


def _option_text(field: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise invalid(f"data.options.{field}", "must be a non-empty string")
        if value.startswith("-"):
            # The CLI's list flags read values until the next "-…" word, so such a
            # value would smuggle in a flag of the client's choosing.
            raise invalid(f"data.options.{field}", "must not start with '-'")
        return value

    return parse


def _option_texts(field: str) -> Callable[[object], tuple[str, ...]]:
    one = _option_text(field)

    def parse(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise invalid(f"data.options.{field}", "must be a list of strings")
        return tuple(one(v) for v in value)

    return parse


def _permission_mode(value: object) -> str:
    if value == BYPASS:
        return BYPASS
    if value not in PERMISSION_MODES:
        raise invalid(
            "data.options.permission_mode", f"must be one of {', '.join(PERMISSION_MODES)}"
        )
    return str(value)


def _option_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid("data.options.dangerously_skip_permissions", "must be a boolean")
    return value


def _mcp_config(value: object) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    return _option_text("mcp_config")(value)


_OPTIONS: dict[str, Callable[[object], Any]] = {
    "model": _option_text("model"),
    "fallback_model": _option_text("fallback_model"),
    "permission_mode": _permission_mode,
    "allowed_tools": _option_texts("allowed_tools"),
    "disallowed_tools": _option_texts("disallowed_tools"),
    "append_system_prompt": _option_text("append_system_prompt"),
    "add_dirs": _option_texts("add_dirs"),
    "mcp_config": _mcp_config,
    "dangerously_skip_permissions": _option_flag,
}


def _approvals(field: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in APPROVALS:
            raise invalid(field, f"must be one of {', '.join(APPROVALS)}")
        return str(value)

    return parse


_OPTIONS["approvals"] = _approvals("data.options.approvals")


def parse_options(raw: object) -> RunOptions:
    """``data.options``: known names with well-typed values (the server's policy comes later)."""
    if raw is None:
        return RunOptions()
    if not isinstance(raw, dict):
        raise invalid("data.options", "must be a JSON object")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        parser = _OPTIONS.get(name)
        if parser is None:
            raise invalid(f"data.options.{name}", "unknown option")
        if value is not None:
            values[name] = parser(value)
    return RunOptions(**values)


# --------------------------------------------------------------- requests


def _get_messages(data: Mapping[str, Any]) -> GetMessagesRequest:
    since = data.get("since")
    if since is not None:
        try:
            since = rfc3339(parse_time(since))
        except ValueError:
            raise invalid("data.since", "must be an RFC 3339 time with a zone") from None
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
    prompt = _required_str(data, "prompt")
    if "\x00" in prompt:
        raise invalid("data.prompt", "must not contain NUL characters")
    return ExecuteRequest(prompt=prompt, options=parse_options(data.get("options")))


def _permission_response(data: Mapping[str, Any]) -> PermissionResponseRequest:
    behavior = data.get("behavior")
    if behavior not in ("allow", "deny"):
        raise invalid("data.behavior", "required, must be allow or deny")
    message = data.get("message")
    if message is not None and (not isinstance(message, str) or "\x00" in message):
        raise invalid("data.message", "must be a string without NUL characters")
    updated_input = data.get("updated_input")
    if updated_input is not None and not isinstance(updated_input, dict):
        raise invalid("data.updated_input", "must be a JSON object (it replaces the tool input)")
    answers = data.get("answers")
    if answers is not None:
        if not isinstance(answers, dict) or not all(isinstance(v, str) for v in answers.values()):
            raise invalid("data.answers", "must be an object of question text to answer text")
    return PermissionResponseRequest(
        permission_id=_required_str(data, "permission_id"),
        behavior=behavior,
        message=message,
        updated_input=updated_input,
        answers=answers,
        remember=_bool(data, "remember", False),
    )


def _project_settings(data: Mapping[str, Any]) -> ProjectSettingsRequest:
    rules = data.get("allowed_tools")
    if rules is not None:
        if not isinstance(rules, list):
            raise invalid("data.allowed_tools", "must be a list of strings")
        for index, rule in enumerate(rules):
            problem = rule_problem(rule)
            if problem is not None:
                raise invalid(f"data.allowed_tools[{index}]", problem)
    approvals = data.get("approvals")
    if approvals is not None:
        approvals = _approvals("data.approvals")(approvals)
    return ProjectSettingsRequest(
        allowed_tools=tuple(rules) if rules is not None else None, approvals=approvals
    )


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
    "agent_interrupt": lambda d: AgentInterruptRequest(),
    "permission_response": _permission_response,
    "project_settings": _project_settings,
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


def encode_request(
    request: Request, project_id: str | None = None, request_id: str | None = None
) -> bytes:
    """A client's frame for ``request``."""
    return encode_envelope(request.TYPE, request.to_data(), project_id, request_id)
