"""Project commands: create and delete, answered and announced as events."""

from __future__ import annotations

from .events import (
    Answered,
    Cause,
    DeleteAnswer,
    EventBus,
    ProjectAnswer,
    ProjectCreated,
    ProjectDeleted,
)
from .hub import Hub
from .registry import ProjectRegistry


class Workspace:
    def __init__(self, registry: ProjectRegistry, hub: Hub, bus: EventBus) -> None:
        self.registry = registry
        self.hub = hub
        self.bus = bus

    def create(self, cause: Cause, path: str, make_directory: bool) -> None:
        """The requester hears of the project first, then everyone of a new one.

        Creating the same path again is idempotent: the existing project is the answer."""
        project, created = self.registry.create(path, make_directory)
        snapshot = self.hub.snapshot(project)
        self.bus.emit(Answered(cause, ProjectAnswer(snapshot)))
        if created:
            self.bus.emit(ProjectCreated(snapshot))

    def delete(self, cause: Cause, project_id: str) -> None:
        """Refused while a run is active; never touches the user's directory."""
        self.registry.delete(project_id)
        self.bus.emit(Answered(cause, DeleteAnswer(project_id)))
        self.bus.emit(ProjectDeleted(project_id))
