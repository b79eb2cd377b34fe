"""Error codes on the wire, and the error a request gets instead of its reply."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


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
    STORAGE_ERROR = "STORAGE_ERROR"  # the data directory refuses writes (a full disk)
    PERMISSION_NOT_FOUND = "PERMISSION_NOT_FOUND"  # SPEC §10
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
    """INVALID_MESSAGE naming the field, as every malformed request gets."""
    return ProtocolError(
        ErrorCode.INVALID_MESSAGE, f"{field}: {reason}", {"field": field, "reason": reason}
    )
