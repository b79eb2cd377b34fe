"""Projects: the registry the protocol talks to, and their metadata on disk.

A project is a directory on this machine that phones can run Claude in. Its
metadata lives in ``data/projects/<id>/metadata.json``; ``data/project-index.json``
is derived from those files at every start and is only trusted to rebuild a
metadata file that has become unreadable.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .config import LogRotation
from .history import History, Repair, RunInThread
from .pathpolicy import PathPolicy, is_within
from .protocol import ErrorCode, ProjectState, ProjectStatus, ProtocolError, rfc3339
from .storage import atomic_write_json, quarantine, remove_stray_tmp_files

METADATA = "metadata.json"
DEFAULT_ROTATION = LogRotation(size=100_000_000, count=10_000, compress=True, max_age=30 * 86400)


def parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return moment.astimezone(UTC)


@attrs.define(eq=False)
class Project:
    """Live state of one project; ``status`` is not persisted (no run survives a restart)."""

    id: str
    path: Path
    created_at: datetime
    last_active: datetime
    session_id: str | None = None
    error_details: str | None = None
    status: ProjectStatus = ProjectStatus.IDLE
    last_seq: int = 0

    def to_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.id,
            "path": str(self.path),
            "created_at": rfc3339(self.created_at),
            "last_active": rfc3339(self.last_active),
            "session_id": self.session_id,
        }
        if self.error_details is not None:
            meta["error_details"] = self.error_details
        return meta

    @classmethod
    def from_metadata(cls, meta: object, expected_id: str) -> Project:
        """Strict: anything unexpected raises, and the caller quarantines the file."""
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        if meta.get("id") != expected_id:
            raise ValueError(f"id {meta.get('id')!r} does not match directory {expected_id!r}")
        path = meta.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"bad path {path!r}")
        session_id = meta.get("session_id")
        error_details = meta.get("error_details")
        if session_id is not None and not isinstance(session_id, str):
            raise ValueError("bad session_id")
        if error_details is not None and not isinstance(error_details, str):
            raise ValueError("bad error_details")
        created_at = parse_time(meta.get("created_at"))
        return cls(
            id=expected_id,
            path=Path(path),
            created_at=created_at,
            last_active=parse_time(meta.get("last_active", meta.get("created_at"))),
            session_id=session_id,
            error_details=error_details,
            status=ProjectStatus.ERROR if error_details else ProjectStatus.IDLE,
        )

    def state(self, subscriber_count: int) -> ProjectState:
        return ProjectState(
            id=self.id,
            path=str(self.path),
            state=self.status,
            session_id=self.session_id,
            created_at=self.created_at,
            last_active=self.last_active,
            last_seq=self.last_seq,
            subscriber_count=subscriber_count,
            error_details=self.error_details,
        )


@attrs.define
class RecoveryReport:
    """What start-up had to repair; logged as one summary line."""

    loaded: int = 0
    quarantined: list[str] = attrs.field(factory=list)
    rebuilt: list[str] = attrs.field(factory=list)
    lost: list[str] = attrs.field(factory=list)
    tmp_removed: int = 0

    @property
    def clean(self) -> bool:
        return not (self.quarantined or self.lost or self.tmp_removed)


class ProjectStore:
    """The ``data/`` side of projects: one directory each, plus the derived index."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.projects_dir = data_dir / "projects"
        self.index_path = data_dir / "project-index.json"
        self.corrupted_dir = data_dir / "corrupted"

    def project_dir(self, project_id: str) -> Path:
        return self.projects_dir / project_id

    def logs_dir(self, project_id: str) -> Path:
        return self.projects_dir / project_id / "logs"

    def load(self) -> tuple[list[Project], RecoveryReport]:
        self.projects_dir.mkdir(parents=True, exist_ok=True)
        report = RecoveryReport()
        report.tmp_removed = len(remove_stray_tmp_files(self.data_dir))
        previous_index = self._read_previous_index(report)
        projects = []
        for directory in sorted(p for p in self.projects_dir.iterdir() if p.is_dir()):
            project = self._load_one(directory, previous_index, report)
            if project is not None:
                projects.append(project)
        projects.sort(key=lambda p: (p.created_at, p.id))
        report.loaded = len(projects)
        self.write_index(projects)
        return projects, report

    def _load_one(
        self, directory: Path, index: dict[str, Any], report: RecoveryReport
    ) -> Project | None:
        pid = directory.name
        meta_path = directory / METADATA
        try:
            return Project.from_metadata(json.loads(meta_path.read_bytes()), pid)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            moved = quarantine(meta_path, self.corrupted_dir, f"{pid}-{METADATA}")
            report.quarantined.append(f"{meta_path} ({e}) -> {moved}")
        entry = index.get(pid)
        try:
            if not isinstance(entry, dict):
                raise ValueError("no index entry")
            rebuilt = {"id": pid, "path": entry.get("path"), "created_at": entry.get("created_at")}
            project = Project.from_metadata(rebuilt, pid)
        except ValueError:
            report.lost.append(pid)
            return None
        self.save(project)
        report.rebuilt.append(pid)
        return project

    def _read_previous_index(self, report: RecoveryReport) -> dict[str, Any]:
        try:
            index = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            moved = quarantine(self.index_path, self.corrupted_dir, self.index_path.name)
            report.quarantined.append(f"{self.index_path} ({e}) -> {moved}")
            return {}
        return index if isinstance(index, dict) else {}

    def save(self, project: Project) -> None:
        directory = self.project_dir(project.id)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / METADATA, project.to_metadata())

    def remove(self, project_id: str) -> None:
        shutil.rmtree(self.project_dir(project_id), ignore_errors=True)

    def write_index(self, projects: Iterable[Project]) -> None:
        atomic_write_json(
            self.index_path,
            {p.id: {"path": str(p.path), "created_at": rfc3339(p.created_at)} for p in projects},
        )


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
        return datetime.fromtimestamp(round(self.clock.seconds(), 3), UTC)

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

    def get(self, project_id: str) -> Project:
        try:
            return self._projects[project_id]
        except KeyError:
            raise ProtocolError(
                ErrorCode.PROJECT_NOT_FOUND,
                f"no project with id {project_id!r}",
                {"project_id": project_id},
            ) from None

    def create(self, raw_path: str, make_directory: bool) -> tuple[Project, bool]:
        """The project at ``raw_path``; ``True`` when it is new (creation is idempotent)."""
        path = self.policy.resolve(raw_path, may_be_missing=make_directory)
        for existing in self._projects.values():
            if existing.path == path:
                return existing, False
        for existing in self._projects.values():
            if is_within(path, existing.path) or is_within(existing.path, path):
                raise ProtocolError(
                    ErrorCode.PROJECT_NESTING,
                    f"{path} overlaps project {existing.id} at {existing.path}",
                    {"path": str(path), "project_id": existing.id},
                )
        if len(self._projects) >= self.max_projects:
            raise ProtocolError(
                ErrorCode.PROJECT_LIMIT,
                f"the server already has {self.max_projects} projects",
                {"resource": "projects", "limit": self.max_projects},
            )
        if make_directory:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ProtocolError(
                    ErrorCode.INVALID_PATH,
                    f"cannot create {path}: {e.strerror}",
                    {"path": raw_path, "reason": str(e.strerror)},
                ) from None
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
        if project.status is ProjectStatus.EXECUTING:
            raise ProtocolError(
                ErrorCode.PROCESS_ACTIVE,
                "a run is active in this project; kill it first",
                {"project_id": project_id},
            )
        del self._projects[project_id]
        history = self._histories.pop(project_id, None)
        if history is not None:
            history.close()
        self.store.write_index(self._projects.values())
        self.store.remove(project_id)
        self.log.info("Project deleted", project_id=project_id, path=str(project.path))
        return project
