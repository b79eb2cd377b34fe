"""Domain refusals as wire errors: the one table from error class to error code."""

from __future__ import annotations

from pocket_agent.core import errors as domain
from pocket_agent.core.storagewatch import StorageError
from pocket_agent.wire.errors import ErrorCode, ProtocolError

ERROR_CODES: dict[type[domain.DomainError], ErrorCode] = {
    domain.ProjectNotFound: ErrorCode.PROJECT_NOT_FOUND,
    domain.PathRefused: ErrorCode.INVALID_PATH,
    domain.ProjectsOverlap: ErrorCode.PROJECT_NESTING,
    domain.ProjectLimitReached: ErrorCode.PROJECT_LIMIT,
    domain.RunActive: ErrorCode.PROCESS_ACTIVE,
    domain.LimitReached: ErrorCode.RESOURCE_LIMIT,
    domain.InvalidOption: ErrorCode.INVALID_MESSAGE,
    domain.ClaudeNotFound: ErrorCode.CLAUDE_NOT_FOUND,
    domain.InvalidField: ErrorCode.INVALID_MESSAGE,
    domain.PermissionNotFound: ErrorCode.PERMISSION_NOT_FOUND,
    StorageError: ErrorCode.STORAGE_ERROR,
}


def wire_error(error: domain.DomainError) -> ProtocolError:
    if isinstance(error, domain.OptionPathRefused):
        # A path error (SPEC §4) in a field of the request: say which field too.
        field = f"data.options.{error.option}"
        return ProtocolError(
            ErrorCode.INVALID_PATH,
            f"{field}: {error.path!r}: {error.reason}",
            {"field": field, "path": error.path, "reason": error.reason},
        )
    if isinstance(error, domain.InvalidOption):
        # An option is a field of the request: say which, as for any malformed field.
        field = f"data.options.{error.option}"
        return ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"{field}: {error.reason}",
            {"field": field, "reason": error.reason},
        )
    for kind in type(error).__mro__:  # a subclass answers like its parent
        if kind in ERROR_CODES:
            return ProtocolError(ERROR_CODES[kind], error.message, error.details)
    raise TypeError(f"no wire code for {type(error).__name__}") from error
