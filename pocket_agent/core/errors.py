"""What the domain refuses, in its own words.

The connection layer maps each class to a wire error code in one table
(:mod:`pocket_agent.net.errors`); nothing here knows that codes exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """A request the domain refuses; ``details`` are plain JSON values for the client."""

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details) if details else None


class ProjectNotFound(DomainError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"no project with id {project_id!r}", {"project_id": project_id})


class PathRefused(DomainError):
    """The path policy said no; ``reason`` says which rule."""

    def __init__(self, path: str, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"{path!r}: {reason}", {"path": path, "reason": reason})
        self.path = path
        self.reason = reason


class OptionPathRefused(PathRefused):
    """A run option naming a directory (``add_dirs``) that the path policy refuses: a
    path error like any other, that also says which option held it."""

    def __init__(self, option: str, path: str, reason: str) -> None:
        super().__init__(path, reason, f"{option}: {path!r}: {reason}")
        self.option = option


class ProjectsOverlap(DomainError):
    pass


class ProjectLimitReached(DomainError):
    pass


class RunActive(DomainError):
    """Delete, new session or a second execute while a run is active."""

    def __init__(self, project_id: str, run_id: str) -> None:
        super().__init__(
            "a run is active in this project; kill it first",
            {"project_id": project_id, "run_id": run_id},
        )


class LimitReached(DomainError):
    """A limit (concurrent executions, executions per minute); a rate says when to retry."""

    def __init__(
        self, message: str, resource: str, limit: int, retry_after_ms: int | None = None
    ) -> None:
        details: dict[str, Any] = {"resource": resource, "limit": limit}
        if retry_after_ms is not None:
            details["retry_after_ms"] = retry_after_ms
        super().__init__(message, details)


class InvalidOption(DomainError):
    """An ``execute`` option the server's policy refuses (dangerous, a bad add_dir)."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class ClaudeNotFound(DomainError):
    def __init__(self, binary: str) -> None:
        super().__init__(
            f"the claude binary {binary!r} was not found or is not executable",
            {"binary": binary},
        )


class InvalidField(DomainError):
    """A field the domain refuses for what it says, not its type (``answers`` for a
    prompt that is no question); the wire shows it like a malformed field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", {"field": field, "reason": reason})
        self.field = field
        self.reason = reason


class PermissionNotFound(DomainError):
    """No open or answered permission prompt with that id in this project."""

    def __init__(self, permission_id: str) -> None:
        super().__init__(
            f"no permission prompt with id {permission_id!r} in this project",
            {"permission_id": permission_id},
        )
