"""The domain root: projects, who follows what, and the server's own lifecycle.

Transport code hands it :class:`Peer` objects (one per connection) and calls its
methods; it hands back typed protocol messages through ``Peer.deliver``. It never
sees a frame or a socket. Runs and history will plug in here: a run appends
records to a project, and :meth:`PocketAgent.publish` fans them out to followers.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import __version__
from .config import Config
from .execution import Executor
from .pages import Query
from .projects import Project, ProjectRegistry
from .protocol import (
    HistoryMessage,
    Message,
    Outgoing,
    ProjectState,
    rfc3339,
)
from .storage import DataDirLock

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
LOW_DISK_BYTES = 100 * 1024 * 1024


class Peer(Protocol):
    """What the domain needs of a connected client."""

    connection_id: str
    authenticated_as: str  # "token" | "loopback"

    def deliver(self, message: Outgoing) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...


class PocketAgent(Service):
    log = Logger()

    def __init__(
        self,
        config: Config,
        registry: ProjectRegistry,
        clock: IReactorTime,
        lock: DataDirLock,
    ) -> None:
        """``clock`` is the reactor: runs also need it to spawn processes."""
        self.config = config
        self.registry = registry
        self.clock = clock
        self.lock = lock
        self.executor = Executor(self, clock)
        self._peers: dict[str, Peer] = {}
        self._following: dict[str, list[str]] = {}  # connection_id -> project ids, join order
        self._followers: dict[str, dict[str, Peer]] = {}  # project id -> connection_id -> peer
        self._drained: list[Deferred[None]] = []
        self._started_at = clock.seconds()
        self.accepting = False

    # ------------------------------------------------------------------ lifecycle

    def privilegedStartService(self) -> None:
        """Lock and load before any listener opens, so no client sees a half-loaded server."""
        self.lock.acquire()
        if self.lock.stale_pid:
            self.log.warn(
                "Took over a stale lock left by pid {pid}",
                pid=self.lock.stale_pid,
                lock=str(self.lock.path),
            )
        try:
            report = self.registry.load()
        except BaseException:
            self.lock.release()
            raise
        for item in report.quarantined:
            self.log.error("Quarantined unreadable file {item}", item=item)
        for pid in report.rebuilt:
            self.log.warn("Rebuilt metadata from the project index", project_id=pid)
        for pid in report.lost:
            self.log.error("Project lost: no readable metadata and no index entry", project_id=pid)
        for pid, repair in self.registry.history_repairs.items():
            self.log.warn(
                "Repaired history",
                project_id=pid,
                torn_bytes=repair.torn_bytes,
                invalid_lines=repair.invalid_lines,
                index_rebuilt=repair.index_rebuilt,
                expired_files=repair.segments_expired,
                tmp_removed=repair.tmp_removed,
            )
        self.log.info(
            "Loaded {count} projects",
            count=report.loaded,
            data_dir=str(self.config.data_dir),
            quarantined=len(report.quarantined),
            rebuilt=len(report.rebuilt),
            tmp_removed=report.tmp_removed,
        )
        self._started_at = self.clock.seconds()
        self.accepting = True
        super().privilegedStartService()

    def stopService(self) -> Deferred[Any]:
        """SPEC §9: close every connection with 1001 and stop every run with the kill
        escalation (recorded as killed, reason shutdown), all within ``timeouts.shutdown``;
        then fsync the histories and release the lock."""
        super().stopService()
        self.accepting = False
        waits = [self.drained(), self.executor.stop_all()]
        for peer in list(self._peers.values()):
            peer.close(CLOSE_GOING_AWAY, "server shutting down")
        limit = self.config.timeouts.shutdown
        # SIGKILL what is left a little before the limit, give up waiting at the limit.
        timers = [
            self.clock.callLater(limit * 0.8, self.executor.force_kill_all),
            self.clock.callLater(limit, self._out_of_time),
        ]
        done: Deferred[Any] = DeferredList(waits)

        def finish(result: object) -> None:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            self.registry.close()
            self.lock.release()

        done.addBoth(finish)
        return done

    def _out_of_time(self) -> None:
        self.executor.force_finish_all()
        for peer in list(self._peers.values()):
            self.log.warn(
                "Dropping a connection that did not close in time",
                connection_id=peer.connection_id,
            )
            peer.abort()
            self.disconnect(peer)

    def drained(self) -> Deferred[None]:
        if not self._peers:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    # ---------------------------------------------------------------- connections

    @property
    def connection_count(self) -> int:
        return len(self._peers)

    def connect(self, peer: Peer) -> bool:
        """Register a new connection; False when ``max_connections`` is reached."""
        if not self.accepting or len(self._peers) >= self.config.limits.max_connections:
            return False
        self._peers[peer.connection_id] = peer
        self._following[peer.connection_id] = []
        return True

    def revoke_token_sessions(self) -> int:
        """The token changed: connections that paired with the old one must pair again."""
        peers = [p for p in self._peers.values() if p.authenticated_as == "token"]
        for peer in peers:
            peer.close(CLOSE_POLICY, "token rotated: pair again")
        return len(peers)

    def disconnect(self, peer: Peer) -> None:
        if self._peers.pop(peer.connection_id, None) is None:
            return
        for project_id in self._following.pop(peer.connection_id, []):
            self._followers.get(project_id, {}).pop(peer.connection_id, None)
        if not self._peers:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def following(self, peer: Peer) -> list[str]:
        return list(self._following.get(peer.connection_id, []))

    def follows(self, peer: Peer, project_id: str) -> bool:
        return peer.connection_id in self._followers.get(project_id, {})

    # ------------------------------------------------------------------- projects

    def state_of(self, project: Project) -> ProjectState:
        return project.state(len(self._followers.get(project.id, {})))

    def project_states(self) -> list[ProjectState]:
        return [self.state_of(p) for p in self.registry.all()]

    def create_project(self, path: str, make_directory: bool) -> tuple[ProjectState, bool]:
        """The project's state and whether it is new; the caller replies, then announces."""
        project, created = self.registry.create(path, make_directory)
        return self.state_of(project), created

    def announce_created(self, state: ProjectState) -> None:
        self.broadcast(Message("project_created", state.to_wire(), project_id=state.id))

    def delete_project(self, project_id: str) -> None:
        self.executor.ensure_idle(project_id)
        self.registry.delete(project_id)
        for connection_id in self._followers.pop(project_id, {}):
            following = self._following.get(connection_id)
            if following and project_id in following:
                following.remove(project_id)

    def announce_deleted(self, project_id: str) -> None:
        self.broadcast(
            Message("project_deleted", {"project_id": project_id}, project_id=project_id)
        )

    def join(self, peer: Peer, project_id: str) -> Project:
        """Follow a project; joining again moves it to "last joined" (the default target)."""
        project = self.registry.get(project_id)
        self._followers.setdefault(project_id, {})[peer.connection_id] = peer
        following = self._following.setdefault(peer.connection_id, [])
        if project_id in following:
            following.remove(project_id)
        following.append(project_id)
        return project

    def leave(self, peer: Peer, project_id: str) -> None:
        self.registry.get(project_id)
        self._followers.get(project_id, {}).pop(peer.connection_id, None)
        following = self._following.get(peer.connection_id, [])
        if project_id in following:
            following.remove(project_id)

    def history_page(self, project_id: str, query: Query) -> HistoryMessage:
        self.registry.get(project_id)
        page = self.registry.history(project_id).query(query)
        return HistoryMessage(
            project_id,
            page.lines,
            page.has_more,
            page.first_seq,
            page.last_seq,
            page.project_last_seq,
        )

    # ------------------------------------------------------------------ fan-out

    def broadcast(self, message: Outgoing) -> None:
        for peer in list(self._peers.values()):
            peer.deliver(message)

    def publish(self, project_id: str, message: Outgoing) -> None:
        for peer in list(self._followers.get(project_id, {}).values()):
            peer.deliver(message)

    # -------------------------------------------------------------------- health

    def health(self) -> dict[str, Any]:
        claude = self.executor.claude_status()
        disk = self._disk()
        status = "healthy"
        if not self.lock.held or disk is None:
            status = "unhealthy"
        elif not claude["available"] or disk["free_bytes"] < LOW_DISK_BYTES:
            status = "degraded"
        limits = self.config.limits
        return {
            "status": status,
            "version": __version__,
            "uptime_s": round(self.clock.seconds() - self._started_at, 3),
            "claude": claude,
            "connections": {"active": len(self._peers), "max": limits.max_connections},
            "projects": {"count": len(self.registry), "max": limits.max_projects},
            "executions": {
                "active": self.executor.active,
                "max": limits.max_concurrent_executions,
            },
            "disk": disk or {"free_bytes": None, "used_percent": None},
            "timestamp": rfc3339(datetime.fromtimestamp(time.time(), UTC)),
        }

    def _disk(self) -> dict[str, Any] | None:
        try:
            usage = shutil.disk_usage(Path(self.config.data_dir))
        except OSError:
            return None
        return {
            "free_bytes": usage.free,
            "used_percent": round(100.0 * usage.used / usage.total, 1) if usage.total else 0.0,
        }
