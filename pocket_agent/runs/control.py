"""The CLI's stdio control protocol (``--permission-prompt-tool stdio``, CLI 2.1.197):
what its ``control_request`` / ``control_cancel_request`` lines say, and the lines we
write back. Pure values and functions; the captures in
``tests/fixtures/claude-cli-2.1.197-stdio/`` are the reference.

The CLI's rules this module keeps: an ``allow`` always carries ``updatedInput`` (without
it the CLI denies with a ZodError), a ``deny`` always carries a ``message`` (without it
the same), and an ``interrupt`` is a control request of our own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

DEFAULT_DENY = "Denied from the phone"


@attrs.frozen
class ToolAsk:
    """A ``can_use_tool`` control request: the CLI waits for our answer to ``request_id``."""

    request_id: str
    tool_name: str
    input: Mapping[str, Any]
    tool_use_id: str | None = None
    display_name: str | None = None
    description: str | None = None
    decision_reason: str | None = None
    blocked_path: str | None = None
    suggestions: tuple[Any, ...] | None = None


@attrs.frozen
class Unsupported:
    """A control request we do not serve (hooks, SDK MCP servers: never asked for); it
    gets an error reply, so the CLI does not wait for an answer that never comes."""

    request_id: str
    subtype: object
    problem: str | None = None  # a subtype we serve, but malformed

    @property
    def error(self) -> str:
        if self.problem is not None:
            return f"pocket-agent cannot answer {self.problem}"
        return f"pocket-agent does not serve {self.subtype!r} control requests"


@attrs.frozen
class Withdrawn:
    """``control_cancel_request``: the CLI no longer waits for ``request_id``."""

    request_id: str


ControlLine = ToolAsk | Withdrawn | Unsupported


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def read_control(message: Mapping[str, Any]) -> ControlLine | None:
    """What a stdout line asks of us, or None (any other line: it is recorded like every
    line and otherwise left alone)."""
    kind = message.get("type")
    request_id = message.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return None
    if kind == "control_cancel_request":
        return Withdrawn(request_id)
    if kind != "control_request":
        return None
    request = message.get("request")
    subtype = request.get("subtype") if isinstance(request, dict) else None
    if not isinstance(request, dict) or subtype != "can_use_tool":
        return Unsupported(request_id, subtype)
    tool_name = request.get("tool_name")
    tool_input = request.get("input")
    if not isinstance(tool_name, str) or not isinstance(tool_input, dict):
        return Unsupported(request_id, subtype, "a can_use_tool without tool_name or input")
    suggestions = request.get("permission_suggestions")
    reason = request.get("decision_reason")
    return ToolAsk(
        request_id=request_id,
        tool_name=tool_name,
        input=tool_input,
        tool_use_id=_text(request.get("tool_use_id")),
        display_name=_text(request.get("display_name")),
        description=_text(request.get("description")),
        # The CLI has sent it as text; a structured one is shown as its JSON.
        decision_reason=reason
        if isinstance(reason, str) or reason is None
        else json.dumps(reason),
        blocked_path=_text(request.get("blocked_path")),
        suggestions=tuple(suggestions) if isinstance(suggestions, list) and suggestions else None,
    )


def _line(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode() + b"\n"


def allow_line(request_id: str, updated_input: Mapping[str, Any]) -> bytes:
    return _line(
        {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request_id,
                "response": {"behavior": "allow", "updatedInput": dict(updated_input)},
            },
        }
    )


def deny_line(request_id: str, message: str | None) -> bytes:
    return _line(
        {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request_id,
                "response": {"behavior": "deny", "message": message or DEFAULT_DENY},
            },
        }
    )


def error_line(request_id: str, error: str) -> bytes:
    return _line(
        {
            "type": "control_response",
            "response": {"subtype": "error", "request_id": request_id, "error": error},
        }
    )


def interrupt_line(request_id: str | None = None) -> bytes:
    return _line(
        {
            "type": "control_request",
            "request_id": request_id or f"pa_interrupt_{uuid.uuid4().hex}",
            "request": {"subtype": "interrupt"},
        }
    )
