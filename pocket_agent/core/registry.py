"""All projects by id, with the path and nesting rules applied on creation.

The registry is state and rules only: it announces nothing (the commands in
:mod:`~pocket_agent.core.workspace` and the executor emit the events).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pocket_agent.config import LogRotation
from pocket_agent.history import History, Page, Query, Repair, RunInThread
from pocket_agent.times import from_seconds

from .errors import PathRefused, ProjectLimitReached, ProjectNotFound, ProjectsOverlap
from .pathpolicy import PathPolicy, is_within, os_reason
from .projects import Project
from .store import ProjectStore, RecoveryReport

DEFAULT_ROTATION = LogRotation(size=100_000_000, count=10_000, compress=True, max_age=30 * 86400)


class ProjectRegistry:
    """All projects by id, with the path and nesting rules applied on creation."""

    log = Logger()

    def __init__(
        self,
        store: ProjectStore,
        policy: PathPolicy,
        max_projects: int,
        clock: IReactorTime,
        rotation: LogRotation = DEFAULT_ROTATION,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.max_projects = max_projects
        self.clock = clock
        self.rotation = rotation
        self.run_in_thread = run_in_thread
        self.history_repairs: dict[str, Repair] = {}
        self._projects: dict[str, Project] = {}
        self._histories: dict[str, History] = {}

    def now(self) -> datetime:
        """Milliseconds, as stored: a project equals itself after a restart."""
        return from_seconds(self.clock.seconds())

    def load(self, full_check: bool = False) -> RecoveryReport:
        """Projects and their histories, repaired; ``full_check`` reads every history file."""
        projects, report = self.store.load()
        self._projects = {p.id: p for p in projects}
        self._histories = {}
        for project in projects:
            self._open_history(project, full_check)
        return report

    def _open_history(self, project: Project, full_check: bool = False) -> None:
        history = History(
            self.store.logs_dir(project.id),
            self.clock,
            self.rotation,
            self.store.corrupted_dir,
            self.run_in_thread,
        )
        repair = history.open(full_check)
        if repair != Repair():
            self.history_repairs[project.id] = repair
        project.last_seq = history.last_seq
        self._histories[project.id] = history

    def history(self, project_id: str) -> History:
        """The project's Record log (open for as long as the project exists)."""
        return self._histories[project_id]

    def query(self, project_id: str, query: Query) -> Page:
        """One page of a project's history (PROJECT_NOT_FOUND first)."""
        self.get(project_id)
        return self._histories[project_id].query(query)

    def save(self, project: Project) -> None:
        """Persist a changed session id, error or last activity."""
        self.store.save(project)

    def close(self) -> None:
        for history in self._histories.values():
            history.close()

    def __len__(self) -> int:
        return len(self._projects)

    def all(self) -> list[Project]:
        """Oldest first: dicts keep insertion order and creation only ever appends."""
        return list(self._projects.values())

    def find(self, project_id: str) -> Project | None:
        return self._projects.get(project_id)

    def get(self, project_id: str) -> Project:
        try:
            return self._projects[project_id]
        except KeyError:
            raise ProjectNotFound(project_id) from None

    def create(self, raw_path: str, make_directory: bool) -> tuple[Project, bool]:
        """The project at ``raw_path``; ``True`` when it is new (creation is idempotent)."""
        path = self.policy.resolve(raw_path, may_be_missing=make_directory)
        for existing in self._projects.values():
            if existing.path == path:
                return existing, False
        for existing in self._projects.values():
            if is_within(path, existing.path) or is_within(existing.path, path):
                raise ProjectsOverlap(
                    f"{path} overlaps project {existing.id} at {existing.path}",
                    {"path": str(path), "project_id": existing.id},
                )
        if len(self._projects) >= self.max_projects:
            raise ProjectLimitReached(
                f"the server already has {self.max_projects} projects",
                {"resource": "projects", "limit": self.max_projects},
            )
        if make_directory:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                # EACCES, ENAMETOOLONG, ELOOP, EROFS, a file in the way...: the client's
                # path, so INVALID_PATH saying why, never an internal error.
                reason = f"cannot be created: {os_reason(e)}"
                raise PathRefused(raw_path, reason, f"cannot create {path}: {reason}") from None
        now = self.now()
        project = Project(id=str(uuid.uuid4()), path=path, created_at=now, last_active=now)
        try:
            self.store.save(project)
        except BaseException:
            self.store.remove(project.id)
            raise
        self._projects[project.id] = project
        self._open_history(project)
        self.store.write_index(self._projects.values())
        self.log.info("Project created", project_id=project.id, path=str(path))
        return project, True

    def delete(self, project_id: str) -> Project:
        project = self.get(project_id)
        project.ensure_idle()
        del self._projects[project_id]
        history = self._histories.pop(project_id, None)
        if history is not None:
            history.close()
        self.store.write_index(self._projects.values())
        self.store.remove(project_id)
        self.log.info("Project deleted", project_id=project_id, path=str(project.path))
        return project
