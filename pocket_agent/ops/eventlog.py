"""Domain events as log lines: the operator's record of what the server did.

An observer like any other (metrics and push notifications will sit beside it);
:class:`RawOutputLog` is another, for ``logging.raw_output``.
"""

from __future__ import annotations

from twisted.logger import Logger

from pocket_agent.core.events import AuthFailed, Event, RecordAppended, SlowConsumerDropped
from pocket_agent.core.storagewatch import StorageFailed, StorageRecovered
from pocket_agent.runs.events import (
    PermissionRequested,
    PermissionResolved,
    RunFinished,
    RunInterrupted,
    RunKilled,
    RunStarted,
)

from .logs import RAW_OUTPUT_NAMESPACE, clipped

_LOGGED = (
    RunStarted,
    RunKilled,
    RunInterrupted,
    PermissionRequested,
    PermissionResolved,
    RunFinished,
    SlowConsumerDropped,
    AuthFailed,
    StorageFailed,
    StorageRecovered,
)


class EventLog:
    _log = Logger()

    def observe(self, event: Event) -> None:
        if not isinstance(event, _LOGGED):
            return  # Records and the like: not for the operator's log
        match event:
            case RunStarted(project_id, run_id, resume):
                self._log.info(
                    "Execution started", project_id=project_id, run_id=run_id, resume=resume
                )
            case RunKilled(project_id, run_id):
                self._log.info("Kill requested", project_id=project_id, run_id=run_id)
            case RunInterrupted(project_id, run_id):
                self._log.info("Interrupt requested", project_id=project_id, run_id=run_id)
            case PermissionRequested(project_id, run_id, permission_id, tool_name):
                self._log.info(
                    "Permission requested for {tool_name}",
                    project_id=project_id,
                    run_id=run_id,
                    permission_id=permission_id,
                    tool_name=tool_name,
                )
            case PermissionResolved(project_id, run_id, permission_id, behavior, reason, waited):
                self._log.info(
                    "Permission {behavior} ({reason})",
                    project_id=project_id,
                    run_id=run_id,
                    permission_id=permission_id,
                    behavior=behavior,
                    reason=reason,
                    waited_s=round(waited, 3),
                )
            case RunFinished(project_id, result):
                self._log.info(
                    "Execution completed",
                    project_id=project_id,
                    run_id=result.run_id,
                    status=str(result.outcome),
                    duration_ms=result.duration_ms,
                    exit_code=result.exit_code,
                    signal=result.signal,
                    cost_usd=result.cost_usd,
                    error=result.error,
                )
            case SlowConsumerDropped(connection_id, backlog):
                self._log.warn(
                    "Dropping a slow consumer", connection_id=connection_id, backlog=backlog
                )
            case AuthFailed(peer, verdict, token_presented):
                self._log.warn(
                    "Authentication failed",
                    peer=peer,
                    verdict=verdict,
                    token_presented=token_presented,
                )
            case StorageFailed(project_id, reason):
                self._log.error(
                    "Cannot write the data directory: {reason}",
                    project_id=project_id,
                    reason=reason,
                )
            case StorageRecovered(down_for):
                self._log.info(
                    "The data directory takes writes again after {down_for}s", down_for=down_for
                )


_MESSAGE_KEY = b',"message":'
# Module level: as a class attribute a Logger takes the class's name as its namespace.
_raw = Logger(namespace=RAW_OUTPUT_NAMESPACE)


class RawOutputLog:
    """logging.raw_output: every line claude printed, stdout and stderr, at debug.

    It reads the Records as they are appended (so the log and the history agree):
    claude's stdout lines as it printed them, its non-JSON lines (``raw_output``) and
    its stderr (``stderr``, one log line per line of each chunk). ``enabled`` follows
    SIGHUP; while it is off an event costs one attribute check.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def observe(self, event: Event) -> None:
        if not self.enabled or not isinstance(event, RecordAppended):
            return
        record = event.record
        message = record.message
        if record.direction == "claude":
            # The message part of the Record line is claude's line, byte for byte.
            start = record.line.find(_MESSAGE_KEY) + len(_MESSAGE_KEY)
            lines = [("stdout", record.line[start:-1].decode("utf-8", "replace"))]
        elif record.direction == "server" and message.get("type") == "raw_output":
            lines = [("stdout", str(message.get("line", "")))]
        elif record.direction == "server" and message.get("type") == "stderr":
            lines = [("stderr", line) for line in str(message.get("text", "")).splitlines()]
        else:
            return
        for stream, line in lines:
            shown = clipped(line)
            _raw.debug(
                "Claude {stream}",
                stream=stream,
                project_id=event.project_id,
                run_id=record.run_id,
                seq=record.seq,
                direction=record.direction,
                line=shown["text"],
                truncated=shown["truncated"],
            )
