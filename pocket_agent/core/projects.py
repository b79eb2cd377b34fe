"""A project: a directory on this machine that phones can run Claude in.

``Project`` is the live, mutable record the domain keeps; ``ProjectSnapshot`` is the
immutable view that events carry and the wire shows as ``ProjectState``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import attrs
from twisted.logger import Logger

from pocket_agent.times import parse_time, rfc3339

from .errors import RunActive

METADATA = "metadata.json"
_log = Logger()


class ProjectStatus(enum.StrEnum):
    IDLE = "IDLE"
    EXECUTING = "EXECUTING"
    ERROR = "ERROR"


APPROVALS = ("phone", "off")
MAX_RULE = 256


def rule_problem(rule: object) -> str | None:
    """Why ``rule`` cannot be an ``allowed_tools`` rule (SPEC §10), or None when it can."""
    if not isinstance(rule, str) or not rule:
        return "must be a non-empty string"
    if "\x00" in rule or "\n" in rule or "\r" in rule:
        return "must not contain NUL or newline characters"
    if rule.startswith("-"):
        # The CLI's --allowedTools reads values until the next "-…" word.
        return "must not start with '-'"
    if len(rule) > MAX_RULE:
        return f"must be at most {MAX_RULE} characters"
    return None


@attrs.frozen
class ProjectSettings:
    """What a phone set for every later run of the project (``project_settings``)."""

    allowed_tools: tuple[str, ...] = ()  # passed as --allowedTools, before the run's own
    approvals: str | None = None  # "phone" | "off"; None: the server's claude.approvals

    def to_metadata(self) -> dict[str, Any]:
        return {"allowed_tools": list(self.allowed_tools), "approvals": self.approvals}

    @classmethod
    def from_metadata(cls, value: object) -> ProjectSettings:
        """Lenient, unlike the rest of the metadata: a hand-edited rule the CLI would
        refuse is dropped (and logged), not a reason to quarantine the project."""
        if not isinstance(value, dict):
            if value is not None:
                _log.warn("Ignoring project settings that are not an object: {v!r}", v=value)
            return cls()
        rules = value.get("allowed_tools", [])
        kept = (
            tuple(r for r in rules if rule_problem(r) is None) if isinstance(rules, list) else ()
        )
        if not isinstance(rules, list) or len(kept) != len(rules):
            _log.warn(
                "Ignoring bad allowed_tools rules in a project's settings: {rules!r}", rules=rules
            )
        approvals = value.get("approvals")
        if approvals is not None and approvals not in APPROVALS:
            _log.warn("Ignoring settings.approvals {approvals!r}", approvals=approvals)
            approvals = None
        return cls(kept, approvals)

    def remembering(self, rule: str) -> ProjectSettings:
        if rule in self.allowed_tools:
            return self
        return attrs.evolve(self, allowed_tools=(*self.allowed_tools, rule))


class ActiveRun(Protocol):
    """What a project knows of the run it has (the run machine lives in ``runs/``)."""

    @property
    def run_id(self) -> str: ...

    @property
    def pending_permissions(self) -> tuple[dict[str, Any], ...]:
        """The open prompts' ``permission_request`` messages, oldest first."""
        ...


@attrs.frozen
class ProjectSnapshot:
    id: str
    path: str
    state: ProjectStatus
    session_id: str | None
    created_at: datetime
    last_active: datetime
    last_seq: int
    subscriber_count: int
    error_details: str | None = None
    settings: ProjectSettings = ProjectSettings()
    approvals: str = "phone"  # what a run gets unless its options say otherwise
    pending_permissions: tuple[dict[str, Any], ...] = ()

    @property
    def awaiting_approval(self) -> bool:
        return bool(self.pending_permissions)


def _touched(project: Project, attribute: attrs.Attribute[Any], value: Any) -> Any:
    project.revision += 1
    return value


@attrs.define(
    eq=False,
    on_setattr=attrs.setters.pipe(attrs.setters.convert, attrs.setters.validate, _touched),
)
class Project:
    """Live state of one project.

    ``run`` is the one source of truth for "a run is active"; the status is derived
    from it and from ``error_details`` (no run survives a restart, so neither is stored).
    ``revision`` counts every assignment to a field, so whoever keeps a snapshot knows
    when it is stale without comparing every field (the hub's, for ``project_list``).
    """

    id: str
    path: Path
    created_at: datetime
    last_active: datetime
    session_id: str | None = None
    error_details: str | None = None
    last_seq: int = 0
    run: ActiveRun | None = None
    settings: ProjectSettings = ProjectSettings()
    revision: int = attrs.field(default=0, on_setattr=attrs.setters.NO_OP, repr=False)

    @property
    def status(self) -> ProjectStatus:
        if self.run is not None:
            return ProjectStatus.EXECUTING
        return ProjectStatus.ERROR if self.error_details else ProjectStatus.IDLE

    def ensure_idle(self) -> None:
        """RunActive while a run is active (second execute, delete, new session)."""
        if self.run is not None:
            raise RunActive(self.id, self.run.run_id)

    def snapshot(
        self,
        subscriber_count: int,
        default_approvals: str = "phone",
        pending: tuple[dict[str, Any], ...] | None = None,
    ) -> ProjectSnapshot:
        """``pending``: the run's open prompts, when the caller has them already."""
        if pending is None:
            pending = self.run.pending_permissions if self.run else ()
        return ProjectSnapshot(
            id=self.id,
            path=str(self.path),
            state=self.status,
            session_id=self.session_id,
            created_at=self.created_at,
            last_active=self.last_active,
            last_seq=self.last_seq,
            subscriber_count=subscriber_count,
            error_details=self.error_details,
            settings=self.settings,
            approvals=self.settings.approvals or default_approvals,
            pending_permissions=pending,
        )

    def to_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.id,
            "path": str(self.path),
            "created_at": rfc3339(self.created_at),
            "last_active": rfc3339(self.last_active),
            "session_id": self.session_id,
        }
        if self.error_details is not None:
            meta["error_details"] = self.error_details
        if self.settings != ProjectSettings():
            meta["settings"] = self.settings.to_metadata()
        return meta

    @classmethod
    def from_metadata(cls, meta: object, expected_id: str) -> Project:
        """Strict: anything unexpected raises, and the caller quarantines the file."""
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        if meta.get("id") != expected_id:
            raise ValueError(f"id {meta.get('id')!r} does not match directory {expected_id!r}")
        path = meta.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"bad path {path!r}")
        session_id = meta.get("session_id")
        error_details = meta.get("error_details")
        if session_id is not None and not isinstance(session_id, str):
            raise ValueError("bad session_id")
        if error_details is not None and not isinstance(error_details, str):
            raise ValueError("bad error_details")
        created_at = parse_time(meta.get("created_at"))
        return cls(
            id=expected_id,
            path=Path(path),
            created_at=created_at,
            last_active=parse_time(meta.get("last_active", meta.get("created_at"))),
            session_id=session_id,
            error_details=error_details,
            settings=ProjectSettings.from_metadata(meta.get("settings")),
        )
