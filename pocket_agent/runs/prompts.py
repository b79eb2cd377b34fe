"""Permission prompts (SPEC §10): what one is, how it is decided, and the open ones of a run.

A :class:`Prompt` is the server's side of one ``can_use_tool`` request: the id the
phones answer (``permission_id``, never the CLI's own request id), the kind, the
preview, and its ``permission_request`` Record. A :class:`Decision` is what the CLI gets
back and why. The open prompts of a run are an :class:`OpenPrompts` on its core; the run
machine is in ``awaiting_approval`` exactly while it is not empty.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

import attrs
from twisted.internet.interfaces import IDelayedCall

from pocket_agent.times import rfc3339

from .control import DEFAULT_DENY, ToolAsk

Behavior = Literal["allow", "deny"]
QUESTION_TOOL = "AskUserQuestion"
PLAN_TOOL = "ExitPlanMode"


class PromptKind(enum.StrEnum):
    TOOL = "tool"
    QUESTION = "question"  # AskUserQuestion: answered by allow with ``answers``
    PLAN = "plan"  # ExitPlanMode: a plan to approve or reject


def kind_of(tool_name: str) -> PromptKind:
    if tool_name == QUESTION_TOOL:
        return PromptKind.QUESTION
    if tool_name == PLAN_TOOL:
        return PromptKind.PLAN
    return PromptKind.TOOL


class Resolution(enum.StrEnum):
    """Why a prompt stopped being open."""

    USER = "user"  # a phone answered
    TIMEOUT = "timeout"  # timeouts.permission
    CANCELLED = "cancelled"  # the CLI withdrew it (control_cancel_request)
    INTERRUPTED = "interrupted"  # agent_interrupt
    RUN_ENDED = "run_ended"  # kill, shutdown, the run's end


@attrs.frozen
class Decision:
    """What the CLI is told. Only a phone allows; every other resolution is a deny."""

    behavior: Behavior
    reason: Resolution = Resolution.USER
    updated_input: Mapping[str, Any] | None = None  # allow: the input the tool runs with
    message: str | None = None  # deny: what the model reads
    by_connection_id: str | None = None

    @classmethod
    def deny(cls, reason: Resolution, message: str | None = None) -> Decision:
        return cls("deny", reason, message=message or _DENY_MESSAGES.get(reason, DEFAULT_DENY))


_DENY_MESSAGES = {
    Resolution.TIMEOUT: "Nobody answered this permission prompt in time",
    Resolution.RUN_ENDED: "The run was stopped",
    Resolution.INTERRUPTED: "Interrupted from the phone",
}


@attrs.frozen
class PermissionAnswer:
    """A phone's ``permission_response``, well-formed (the wire checked its types)."""

    permission_id: str
    behavior: Behavior
    message: str | None = None
    updated_input: Mapping[str, Any] | None = None
    answers: Mapping[str, Any] | None = None
    remember: bool = False


@attrs.define(eq=False)
class Prompt:
    permission_id: str
    run_id: str
    ask: ToolAsk
    created_at: datetime
    expires_at: datetime | None
    preview: Mapping[str, Any] | None = None
    timer: IDelayedCall | None = None
    _state: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def kind(self) -> PromptKind:
        return kind_of(self.ask.tool_name)

    def request_record(self) -> dict[str, Any]:
        """The ``permission_request`` Record: everything a phone needs to decide."""
        ask = self.ask
        record: dict[str, Any] = {
            "type": "permission_request",
            "permission_id": self.permission_id,
            "run_id": self.run_id,
            "kind": str(self.kind),
            "tool_name": ask.tool_name,
            "tool_use_id": ask.tool_use_id,
            "input": dict(ask.input),
        }
        optional = {
            "display_name": ask.display_name,
            "description": ask.description,
            "decision_reason": ask.decision_reason,
            "blocked_path": ask.blocked_path,
            "suggestions": list(ask.suggestions) if ask.suggestions else None,
            "preview": dict(self.preview) if self.preview else None,
        }
        record.update({k: v for k, v in optional.items() if v is not None})
        record["created_at"] = rfc3339(self.created_at)
        record["expires_at"] = rfc3339(self.expires_at) if self.expires_at else None
        return record

    def state_record(self) -> dict[str, Any]:
        """The Record as ``ProjectState`` shows it: every connection gets the state, again
        and again while the prompt is open, so a string of the input longer than
        ``STATE_TEXT`` is cut and ``input_truncated`` says so. The Record in the history
        holds the whole input (and the preview its capped diff)."""
        if self._state is None:
            record = self.request_record()
            clipped, cut = _clip(record["input"])
            if cut:
                record["input"] = clipped
                record["input_truncated"] = True
            self._state = record
        return self._state

    def resolved_record(self, decision: Decision, resolved_at: datetime) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": "permission_resolved",
            "permission_id": self.permission_id,
            "run_id": self.run_id,
            "behavior": decision.behavior,
            "reason": str(decision.reason),
        }
        if decision.by_connection_id is not None:
            record["by_connection_id"] = decision.by_connection_id
        if decision.behavior == "deny" and decision.reason is Resolution.USER:
            record["message"] = decision.message
        if decision.updated_input is not None and decision.updated_input != self.ask.input:
            record["updated_input"] = dict(decision.updated_input)
        record["resolved_at"] = rfc3339(resolved_at)
        return record

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


STATE_TEXT = 4096  # characters of each input string in ProjectState


def _clip(value: Any) -> tuple[Any, bool]:
    """``value`` with every string longer than ``STATE_TEXT`` cut; whether any was."""
    if isinstance(value, str):
        if len(value) > STATE_TEXT:
            return value[:STATE_TEXT] + "…", True
        return value, False
    if isinstance(value, dict):
        items = {k: _clip(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(c for _, c in items.values())
    if isinstance(value, list):
        parts = [_clip(v) for v in value]
        return [v for v, _ in parts], any(c for _, c in parts)
    return value, False


class OpenPrompts:
    """A run's unanswered prompts, oldest first."""

    def __init__(self) -> None:
        self._open: dict[str, Prompt] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(list(self._open.values()))

    def add(self, prompt: Prompt) -> None:
        self._open[prompt.permission_id] = prompt

    def get(self, permission_id: str) -> Prompt | None:
        return self._open.get(permission_id)

    def pop(self, permission_id: str) -> Prompt | None:
        prompt = self._open.pop(permission_id, None)
        if prompt is not None:
            prompt.cancel_timer()
        return prompt

    def by_request(self, request_id: str) -> Prompt | None:
        """The prompt the CLI knows as ``request_id``."""
        for prompt in self._open.values():
            if prompt.ask.request_id == request_id:
                return prompt
        return None

    def records(self) -> tuple[dict[str, Any], ...]:
        """For ``ProjectState.pending_permissions``: each prompt's Record with long input
        strings cut (see :meth:`Prompt.state_record`)."""
        return tuple(p.state_record() for p in self._open.values())
