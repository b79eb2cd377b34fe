"""Projects on disk: ``data/projects/<id>/metadata.json`` and the derived index.

``data/project-index.json`` is rebuilt from the metadata files at every start and is
only trusted to rebuild a metadata file that has become unreadable.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from pocket_agent.storage import atomic_write_json, quarantine, remove_stray_tmp_files
from pocket_agent.times import rfc3339

from .projects import METADATA, Project


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
