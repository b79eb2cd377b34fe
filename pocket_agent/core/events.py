"""Domain events: what happened, as values, for whoever listens.

The domain emits each event once, on the reactor thread, in the order things happened.
Fan-out to connections (:class:`~pocket_agent.core.hub.Hub`), the log
(:mod:`pocket_agent.ops.eventlog`) and, later, metrics and push notifications are
observers: nothing inside the domain calls them. An observer that raises is logged and
does not stop the others (the model is transit-relay's usage writers).

A command's answer is an event too (:class:`Answered`): the domain puts it in the stream
exactly where the requester must see it (after ``EXECUTING`` and before the first Record
of a run; before the broadcast of a new project), so no caller can get the order wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.logger import Logger

if TYPE_CHECKING:
    from pocket_agent.history import Record

    from .projects import ProjectSnapshot


class Event:
    """Base of every domain event (other packages add their own: ``runs.events``)."""


class ProjectEvent(Event):
    """An event about one project: it goes to that project's followers."""

    @property
    def project_id(self) -> str:
        raise NotImplementedError


class Answer:
    """Base of the answers to commands (``ProjectAnswer``, ``runs.events.RunAccepted`` ...)."""


@attrs.frozen
class Cause:
    """Who asked: the connection and its correlation id (echoed, never interpreted)."""

    connection_id: str
    request_id: str | None = None


@attrs.frozen
class Answered(Event):
    """The answer to one command, for the requester only."""

    cause: Cause
    answer: Answer


@attrs.frozen
class ProjectAnswer(Answer):
    """``project_create``: the project, new or existing."""

    project: ProjectSnapshot


@attrs.frozen
class DeleteAnswer(Answer):
    project_id: str


# ------------------------------------------------------------- to everyone


@attrs.frozen
class ProjectCreated(Event):
    project: ProjectSnapshot


@attrs.frozen
class ProjectDeleted(Event):
    project_id: str


# ------------------------------------------------- to a project's followers


@attrs.frozen
class ProjectChanged(ProjectEvent):
    """The project's state; ``everyone`` when every connection must hear it (whether it
    awaits an approval shows on the projects screen), else its followers."""

    project: ProjectSnapshot
    everyone: bool = False

    @property
    def project_id(self) -> str:
        return self.project.id


@attrs.frozen
class RecordAppended(ProjectEvent):
    project_id: str
    record: Record


# --------------------------------------------------- seen by observers only


@attrs.frozen
class SlowConsumerDropped(Event):
    connection_id: str | None
    backlog: int


@attrs.frozen
class AuthFailed(Event):
    peer: str
    verdict: str
    token_presented: bool


class Observer(Protocol):
    """Anything that wants to hear about domain events."""

    def observe(self, event: Event) -> None: ...


class EventBus:
    """Hands every event to every observer, in subscription order."""

    _log = Logger()

    def __init__(self) -> None:
        self._observers: list[Observer] = []
        self._queue: list[Event] | None = None

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def emit(self, event: Event) -> None:
        """Deliver now; an event emitted by an observer while an event is being delivered
        (a follower dropped as slow) waits until every observer has had the first, so
        all observers see all events in one order."""
        if self._queue is not None:
            self._queue.append(event)
            return
        self._queue = []
        try:
            self._deliver(event)
            while self._queue:
                self._deliver(self._queue.pop(0))
        finally:
            self._queue = None

    def _deliver(self, event: Event) -> None:
        for observer in list(self._observers):
            try:
                observer.observe(event)
            except Exception:
                # One broken observer (a metrics bug) must not cost a follower its records.
                self._log.failure(
                    "Observer {observer!r} failed on {event}",
                    observer=observer,
                    event=type(event).__name__,
                )
