"""Who is connected, who follows which project, and the fan-out of events to them.

The hub is an observer of the domain's events: it routes each one to its audience
(every connection, a project's followers, or the one connection that asked) and
hands it over as the event itself; the connection turns it into frames. It never
sees a frame, a socket or a close code.

:meth:`Hub.subscribe` is the only way to follow a project: it answers with the
replay and starts the live stream in one call, on the reactor thread, so no record can
fall between the two and no caller can get the order wrong.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from pocket_agent.history import MAX_PAGE, Page, Query

from .events import (
    Answered,
    Event,
    ProjectChanged,
    ProjectCreated,
    ProjectDeleted,
    ProjectEvent,
)
from .projects import Project, ProjectSnapshot
from .registry import ProjectRegistry

# What a cached snapshot was made of: the project, its revision, its follower count, the
# server's default approvals, its open prompts' records.
_MadeOf = tuple[Project, int, int, str, tuple[dict[str, Any], ...]]


def _same_items(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """The same objects, not equal ones: a prompt's record is built once (and ``==``
    would call ``1`` and ``True`` the same input)."""
    return a is b or (len(a) == len(b) and all(map(operator.is_, a, b)))


class Departure(enum.Enum):
    """Why the server ends a connection (the transport picks the close code)."""

    SHUTDOWN = "shutdown"
    TOKEN_REVOKED = "token_revoked"


class Follower(Protocol):
    """What the domain needs of a connected client."""

    @property
    def connection_id(self) -> str: ...

    @property
    def authenticated_as(self) -> str: ...  # "token" | "loopback"

    def deliver(self, event: Event) -> None: ...

    def close(self, why: Departure) -> None: ...

    def abort(self) -> None: ...


@attrs.frozen
class Subscription:
    """What a follower gets on joining: the state now, and the records it missed."""

    project: ProjectSnapshot
    replay: Page | None


class Hub:
    _log = Logger()

    def __init__(self, registry: ProjectRegistry, max_connections: int) -> None:
        self.registry = registry
        self.max_connections = max_connections
        self.accepting = False
        self._connections: dict[str, Follower] = {}
        self._following: dict[str, list[str]] = {}  # connection_id -> project ids, join order
        self._followers: dict[str, dict[str, Follower]] = {}  # project id -> id -> follower
        self._drained: list[Deferred[None]] = []
        # project id -> (what the snapshot was made of, the snapshot): one snapshot per
        # state, so the wire encodes each state once (wire.messages keeps its bytes).
        self._snapshots: dict[str, tuple[_MadeOf, ProjectSnapshot]] = {}
        self.default_approvals = "phone"  # claude.approvals, shown in ProjectState.settings

    # ---------------------------------------------------------------- connections

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def connect(self, follower: Follower) -> bool:
        """Register a new connection; False when shutting down or at ``max_connections``."""
        if not self.accepting or len(self._connections) >= self.max_connections:
            return False
        self._connections[follower.connection_id] = follower
        self._following[follower.connection_id] = []
        return True

    def disconnect(self, follower: Follower) -> None:
        if self._connections.pop(follower.connection_id, None) is None:
            return
        for project_id in self._following.pop(follower.connection_id, []):
            self._followers.get(project_id, {}).pop(follower.connection_id, None)
        if not self._connections:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def close_all(self, why: Departure) -> None:
        for follower in list(self._connections.values()):
            follower.close(why)

    def abort_all(self) -> None:
        """Shutdown is out of time: drop whoever has not closed."""
        for follower in list(self._connections.values()):
            self._log.warn(
                "Dropping a connection that did not close in time",
                connection_id=follower.connection_id,
            )
            follower.abort()
            self.disconnect(follower)

    def drained(self) -> Deferred[None]:
        """Fires once every connection is gone."""
        if not self._connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def revoke_token_sessions(self) -> int:
        """The token changed: connections that paired with the old one must pair again."""
        revoked = [f for f in self._connections.values() if f.authenticated_as == "token"]
        for follower in revoked:
            follower.close(Departure.TOKEN_REVOKED)
        return len(revoked)

    # ------------------------------------------------------------------ following

    def subscribe(
        self, follower: Follower, project_id: str, after_seq: int | None
    ) -> Subscription:
        """Follow a project: its state now and, with ``after_seq``, every record after it,
        with the live stream starting right after the last record replayed.

        Joining again moves the project to "last joined" (the default target)."""
        project = self.registry.get(project_id)
        self.follow(follower.connection_id, project_id)
        replay = None
        if after_seq is not None:
            replay = self.registry.query(project_id, Query(after_seq=after_seq, limit=MAX_PAGE))
        return Subscription(self.snapshot(project), replay)

    def follow(self, connection_id: str, project_id: str) -> None:
        follower = self._connections.get(connection_id)
        if follower is None:
            return
        self._followers.setdefault(project_id, {})[connection_id] = follower
        following = self._following.setdefault(connection_id, [])
        if project_id in following:
            following.remove(project_id)
        following.append(project_id)

    def unsubscribe(self, follower: Follower, project_id: str) -> None:
        self.registry.get(project_id)
        self._forget(follower.connection_id, project_id)

    def following(self, follower: Follower) -> list[str]:
        """Followed project ids, the last joined last."""
        return list(self._following.get(follower.connection_id, []))

    def follows(self, follower: Follower, project_id: str) -> bool:
        return follower.connection_id in self._followers.get(project_id, {})

    def _forget(self, connection_id: str, project_id: str) -> None:
        self._followers.get(project_id, {}).pop(connection_id, None)
        following = self._following.get(connection_id, [])
        if project_id in following:
            following.remove(project_id)

    # ------------------------------------------------------------------ projects

    def snapshot(self, project: Project) -> ProjectSnapshot:
        """The project's state now; the same object as last time when nothing changed
        (the wire encodes each snapshot once: ``wire.messages.project_state_bytes``)."""
        followers = len(self._followers.get(project.id, {}))
        pending = project.run.pending_permissions if project.run is not None else ()
        cached = self._snapshots.get(project.id)
        if cached is not None:
            (was, revision, count, approvals, asked), snapshot = cached
            if (
                was is project
                and revision == project.revision
                and count == followers
                and approvals == self.default_approvals
                and _same_items(asked, pending)
            ):
                return snapshot
        snapshot = project.snapshot(followers, self.default_approvals, pending)
        made_of = (project, project.revision, followers, self.default_approvals, pending)
        self._snapshots[project.id] = (made_of, snapshot)
        return snapshot

    def snapshots(self) -> list[ProjectSnapshot]:
        """Every project, oldest first."""
        return [self.snapshot(p) for p in self.registry.all()]

    # ------------------------------------------------------------------- fan-out

    def observe(self, event: Event) -> None:
        if isinstance(event, ProjectChanged) and event.everyone:
            self._deliver(self._connections.values(), event)
        elif isinstance(event, ProjectEvent):  # the common case: a Record
            self._deliver(self._followers.get(event.project_id, {}).values(), event)
        elif isinstance(event, Answered):
            requester = self._connections.get(event.cause.connection_id)
            self._deliver([requester] if requester is not None else [], event)
        elif isinstance(event, ProjectCreated):
            self._deliver(self._connections.values(), event)
        elif isinstance(event, ProjectDeleted):
            self._snapshots.pop(event.project_id, None)
            for connection_id in list(self._followers.pop(event.project_id, {})):
                self._forget(connection_id, event.project_id)
            self._deliver(self._connections.values(), event)

    def _deliver(self, audience: Iterable[Follower], event: Event) -> None:
        """Each follower on its own: one that fails (a bug) costs the others nothing."""
        for follower in list(audience):
            try:
                follower.deliver(event)
            except Exception:
                self._log.failure(
                    "Delivering {event} to {connection_id} failed",
                    event=type(event).__name__,
                    connection_id=follower.connection_id,
                )
