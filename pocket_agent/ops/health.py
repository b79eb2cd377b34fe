"""``health`` and ``/health``: is the server fit to serve, and what is it doing?"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime

from pocket_agent import __version__
from pocket_agent.config import Limits
from pocket_agent.core.hub import Hub
from pocket_agent.core.storagewatch import StorageWatch
from pocket_agent.runs.executor import Executor
from pocket_agent.runs.probe import ClaudeProbe
from pocket_agent.storage import DataDirLock
from pocket_agent.times import rfc3339

LOW_DISK_BYTES = 100 * 1024 * 1024


class Health:
    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        data_dir: Path,
        lock: DataDirLock,
        hub: Hub,
        executor: Executor,
        claude: ClaudeProbe,
        storage: StorageWatch | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.data_dir = data_dir
        self.lock = lock
        self.hub = hub
        self.executor = executor
        self.claude = claude
        self.storage = storage
        self.started_at = clock.seconds()

    def mark_started(self) -> None:
        self.started_at = self.clock.seconds()

    def report(self) -> dict[str, Any]:
        claude = self.claude.status()
        disk = self._disk()
        status = "healthy"
        if not self.lock.held or disk is None:
            status = "unhealthy"
        elif (
            not claude["available"]
            or disk["free_bytes"] < LOW_DISK_BYTES
            or (self.storage is not None and not self.storage.ok)
        ):
            status = "degraded"
        storage_error = self.storage.reason if self.storage is not None else None
        limits = self.limits
        return {
            "status": status,
            "version": __version__,
            "uptime_s": round(self.clock.seconds() - self.started_at, 3),
            "claude": claude,
            "connections": {"active": self.hub.connection_count, "max": limits.max_connections},
            "projects": {"count": len(self.hub.registry), "max": limits.max_projects},
            "executions": {
                "active": self.executor.active,
                "max": limits.max_concurrent_executions,
            },
            "disk": disk or {"free_bytes": None, "used_percent": None},
            "storage": {"writable": storage_error is None, "error": storage_error},
            "timestamp": rfc3339(datetime.fromtimestamp(time.time(), UTC)),
        }

    def _disk(self) -> dict[str, Any] | None:
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return None
        return {
            "free_bytes": usage.free,
            "used_percent": round(100.0 * usage.used / usage.total, 1) if usage.total else 0.0,
        }
