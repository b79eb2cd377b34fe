"""Domain events as log lines: the operator's record of what the server did.

An observer like any other (metrics and push notifications will sit beside it).
"""

from __future__ import annotations

from twisted.logger import Logger

from pocket_agent.core.events import AuthFailed, Event, SlowConsumerDropped
from pocket_agent.core.storagewatch import StorageFailed, StorageRecovered
from pocket_agent.runs.events import RunFinished, RunKilled, RunStarted

_LOGGED = (
    RunStarted,
    RunKilled,
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
