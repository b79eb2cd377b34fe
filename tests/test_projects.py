"""Tests for pocket_agent.projects: the registry, metadata on disk and start-up recovery."""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pocket_agent.core import store as store_module
from pocket_agent.core.errors import DomainError
from pocket_agent.core.pathpolicy import PathPolicy
from pocket_agent.core.projects import Project, ProjectStatus
from pocket_agent.core.registry import ProjectRegistry
from pocket_agent.core.store import ProjectStore
from pocket_agent.net.errors import wire_error
from pocket_agent.wire.errors import ErrorCode, ProtocolError
from pocket_agent.wire.messages import project_state_data
from tests.support import ActiveRun

# 2023-11-14T22:13:20.250Z: a millisecond-exact clock reading, as on disk
T0 = 1_700_000_000.25
T0_TEXT = "2023-11-14T22:13:20.250Z"


@attrs.define
class Env:
    home: Path
    data_dir: Path
    policy: PathPolicy
    clock: Clock

    @property
    def projects_dir(self) -> Path:
        return self.data_dir / "projects"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "project-index.json"

    @property
    def corrupted_dir(self) -> Path:
        return self.data_dir / "corrupted"

    def registry(self, max_projects: int = 100) -> ProjectRegistry:
        registry = ProjectRegistry(
            ProjectStore(self.data_dir), self.policy, max_projects, self.clock
        )
        registry.load()
        return registry

    def reload(self, max_projects: int = 100) -> tuple[ProjectRegistry, Any]:
        """A fresh registry on the same data dir, as after a restart."""
        registry = ProjectRegistry(
            ProjectStore(self.data_dir), self.policy, max_projects, self.clock
        )
        report = registry.load()
        return registry, report

    def dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def index(self) -> Any:
        return json.loads(self.index_path.read_bytes())

    def metadata(self, project_id: str) -> Any:
        return json.loads((self.projects_dir / project_id / "metadata.json").read_bytes())

    def corrupted(self) -> list[bytes]:
        if not self.corrupted_dir.exists():
            return []
        return sorted(p.read_bytes() for p in self.corrupted_dir.iterdir())


@pytest.fixture
def env(tmp_path: Path) -> Env:
    tmp = Path(os.path.realpath(tmp_path))
    home = tmp / "home"
    home.mkdir()
    server_root = tmp / "server"
    data_dir = server_root / "data"
    data_dir.mkdir(parents=True)
    clock = Clock()
    clock.advance(T0)
    return Env(home, data_dir, PathPolicy.build([home], server_root, data_dir), clock)


def refused(code: ErrorCode, call: Callable[[], object]) -> ProtocolError:
    """The domain's refusal, as the wire shows it."""
    with pytest.raises(DomainError) as info:
        call()
    error = wire_error(info.value)
    assert error.code == code
    return error


def snapshot(project: Project) -> dict[str, Any]:
    """Everything a project is, persisted or not (Project compares by identity), less
    ``revision``: how many changes it took to get there is not what it is."""
    return attrs.asdict(project, recurse=False, filter=lambda a, _: a.name != "revision")


# --------------------------------------------------------------------------- create


def test_create_writes_metadata_and_index(env: Env) -> None:
    registry = env.registry()
    directory = env.dir("app")

    project, created = registry.create(str(directory), False)

    assert created is True
    assert str(uuid.UUID(project.id)) == project.id
    assert project.path == directory
    assert project.status is ProjectStatus.IDLE
    assert project.session_id is None
    assert env.metadata(project.id) == {
        "id": project.id,
        "path": str(directory),
        "created_at": T0_TEXT,
        "last_active": T0_TEXT,
        "session_id": None,
    }
    assert env.index() == {project.id: {"path": str(directory), "created_at": T0_TEXT}}
    assert registry.get(project.id) is project
    assert len(registry) == 1
    assert registry.all() == [project]


def test_create_time_comes_from_the_clock(env: Env) -> None:
    registry = env.registry()
    env.clock.advance(3600.5)
    project, _ = registry.create(str(env.dir("app")), False)
    expected = datetime(2023, 11, 14, 23, 13, 20, 750000, tzinfo=UTC)
    assert project.created_at == expected
    assert project.last_active == expected
    assert env.metadata(project.id)["created_at"] == "2023-11-14T23:13:20.750Z"


def test_create_same_path_is_idempotent(env: Env) -> None:
    registry = env.registry()
    directory = env.dir("app")
    first, _ = registry.create(str(directory), False)
    index_before = env.index_path.read_bytes()
    env.clock.advance(60)

    again, created = registry.create(str(directory), False)

    assert created is False
    assert again is first
    assert again.created_at == datetime.fromtimestamp(T0, UTC)
    assert [p.name for p in env.projects_dir.iterdir()] == [first.id]
    assert env.index_path.read_bytes() == index_before
    assert len(registry) == 1


@pytest.mark.parametrize("spelling", ["{d}/", "{d}/.", "{home}/./app", "{home}//app/", "{link}"])
def test_create_same_directory_through_another_spelling(env: Env, spelling: str) -> None:
    registry = env.registry()
    directory = env.dir("app")
    link = env.home / "shortcut"
    link.symlink_to(directory)
    first, _ = registry.create(str(directory), False)

    again, created = registry.create(spelling.format(d=directory, home=env.home, link=link), False)

    assert created is False
    assert again is first
    assert len(registry) == 1


def test_create_with_make_directory_on_an_existing_project_is_idempotent(env: Env) -> None:
    registry = env.registry()
    first, _ = registry.create(str(env.home / "new"), True)
    again, created = registry.create(str(env.home / "new"), True)
    assert (again, created) == (first, False)


def test_create_stores_the_resolved_path(env: Env) -> None:
    registry = env.registry()
    directory = env.dir("real")
    (env.home / "alias").symlink_to(directory)
    project, _ = registry.create(f"{env.home}/alias/", False)
    assert project.path == directory
    assert env.metadata(project.id)["path"] == str(directory)


def test_create_inside_an_existing_project_is_nesting(env: Env) -> None:
    registry = env.registry()
    outer, _ = registry.create(str(env.dir("outer")), False)
    inner = env.dir("outer/inner")

    error = refused(ErrorCode.PROJECT_NESTING, lambda: registry.create(str(inner), False))

    assert error.details == {"path": str(inner), "project_id": outer.id}
    assert len(registry) == 1
    assert [p.name for p in env.projects_dir.iterdir()] == [outer.id]


def test_create_around_an_existing_project_is_nesting(env: Env) -> None:
    registry = env.registry()
    inner, _ = registry.create(str(env.dir("outer/deep/inner")), False)

    error = refused(
        ErrorCode.PROJECT_NESTING, lambda: registry.create(str(env.home / "outer"), False)
    )

    assert error.details is not None
    assert error.details["project_id"] == inner.id
    assert len(registry) == 1


def test_nesting_is_checked_on_the_resolved_path(env: Env) -> None:
    registry = env.registry()
    outer, _ = registry.create(str(env.dir("outer")), False)
    (env.home / "sneaky").symlink_to(env.dir("outer/inner"))
    error = refused(
        ErrorCode.PROJECT_NESTING, lambda: registry.create(str(env.home / "sneaky"), False)
    )
    assert error.details == {"path": str(env.home / "outer" / "inner"), "project_id": outer.id}


def test_nesting_does_not_create_the_directory(env: Env) -> None:
    registry = env.registry()
    registry.create(str(env.dir("outer")), False)
    refused(
        ErrorCode.PROJECT_NESTING,
        lambda: registry.create(str(env.home / "outer" / "new"), True),
    )
    assert not (env.home / "outer" / "new").exists()


def test_siblings_sharing_a_name_prefix_are_not_nested(env: Env) -> None:
    registry = env.registry()
    app, _ = registry.create(str(env.dir("app")), False)
    app2, created = registry.create(str(env.dir("app2")), False)
    assert created is True
    assert app2.id != app.id
    assert [p.id for p in registry.all()] == [app.id, app2.id]


def test_project_limit(env: Env) -> None:
    registry = env.registry(max_projects=2)
    first, _ = registry.create(str(env.dir("a")), False)
    registry.create(str(env.dir("b")), False)

    error = refused(ErrorCode.PROJECT_LIMIT, lambda: registry.create(str(env.dir("c")), False))

    assert error.details == {"resource": "projects", "limit": 2}
    assert len(registry) == 2
    assert len(list(env.projects_dir.iterdir())) == 2
    assert len(env.index()) == 2
    # an existing project is still returned at the limit, and deleting frees a slot
    assert registry.create(str(env.home / "a"), False) == (first, False)
    registry.delete(first.id)
    _, created = registry.create(str(env.home / "c"), False)
    assert created is True


def test_project_limit_does_not_create_the_directory(env: Env) -> None:
    registry = env.registry(max_projects=1)
    registry.create(str(env.dir("a")), False)
    refused(ErrorCode.PROJECT_LIMIT, lambda: registry.create(str(env.home / "b"), True))
    assert not (env.home / "b").exists()


def test_create_makes_the_directory_and_its_parents(env: Env) -> None:
    registry = env.registry()
    wanted = env.home / "new" / "nested" / "app"

    project, created = registry.create(str(wanted), True)

    assert created is True
    assert wanted.is_dir()
    assert project.path == wanted
    assert env.metadata(project.id)["path"] == str(wanted)


def test_create_through_a_dangling_symlink_makes_its_target(env: Env) -> None:
    registry = env.registry()
    (env.home / "link").symlink_to(env.home / "target")
    project, _ = registry.create(str(env.home / "link"), True)
    assert (env.home / "target").is_dir()
    assert project.path == env.home / "target"


def test_create_missing_directory_without_create_flag(env: Env) -> None:
    registry = env.registry()
    error = refused(
        ErrorCode.INVALID_PATH, lambda: registry.create(str(env.home / "missing"), False)
    )
    assert error.details is not None
    assert error.details["path"] == str(env.home / "missing")
    assert not (env.home / "missing").exists()
    assert list(env.projects_dir.iterdir()) == []


def test_create_where_the_parent_cannot_be_made(env: Env) -> None:
    registry = env.registry()
    (env.home / "file.txt").write_text("a regular file")
    raw = str(env.home / "file.txt" / "sub" / "app")

    error = refused(ErrorCode.INVALID_PATH, lambda: registry.create(raw, True))

    assert error.details is not None
    assert error.details["path"] == raw
    assert error.details["reason"]
    assert (env.home / "file.txt").read_text() == "a regular file"
    assert list(env.projects_dir.iterdir()) == []
    assert env.index() == {}
    assert len(registry) == 0


def test_create_refused_by_the_policy_makes_nothing(env: Env) -> None:
    registry = env.registry()
    outside = env.home.parent / "outside" / "new"
    refused(ErrorCode.INVALID_PATH, lambda: registry.create(str(outside), True))
    assert not outside.parent.exists()
    refused(ErrorCode.INVALID_PATH, lambda: registry.create("relative/new", True))
    assert list(env.projects_dir.iterdir()) == []


def test_failed_metadata_write_leaves_no_project_behind(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while saving a new project: it is not created, and no half-made
    ``data/projects/<id>`` stays behind to be reported as lost at every start-up."""
    registry = env.registry()
    directory = env.dir("app")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write_json", disk_full)
    with pytest.raises(OSError):
        registry.create(str(directory), False)
    monkeypatch.undo()

    assert len(registry) == 0
    assert list(env.projects_dir.iterdir()) == []
    _, report = env.reload()
    assert report.clean
    assert report.lost == []


def test_create_with_a_non_utf8_path(env: Env) -> None:
    """JSON can carry a lone surrogate ("\\udce9"), which names the byte 0xE9 in a file
    name (how Python spells non-UTF-8 names). Either refuse it as INVALID_PATH, or store
    it so it survives a restart; never crash half-way leaving files behind."""
    registry = env.registry()
    raw = f"{env.home}/caf\udce9"
    try:
        project, created = registry.create(raw, True)
    except DomainError as e:
        assert wire_error(e).code == ErrorCode.INVALID_PATH
        assert list(env.projects_dir.iterdir()) == []
    else:
        assert created is True
        reloaded, report = env.reload()
        assert report.clean
        assert reloaded.get(project.id).path == project.path


def refused_path(env: Env, registry: ProjectRegistry, raw: str, make_directory: bool) -> str:
    """INVALID_PATH naming ``raw``, nothing made or kept; returns the reason."""
    error = refused(ErrorCode.INVALID_PATH, lambda: registry.create(raw, make_directory))
    assert error.details is not None
    assert error.details["path"] == raw
    reason = error.details["reason"]
    assert isinstance(reason, str) and reason in error.message
    json.dumps(error.details, ensure_ascii=False).encode()  # it can go out in a frame
    assert list(env.projects_dir.iterdir()) == []
    assert len(registry) == 0
    return reason


@pytest.mark.parametrize("make_directory", [True, False])
def test_create_with_a_component_longer_than_name_max(env: Env, make_directory: bool) -> None:
    registry = env.registry()
    raw = str(env.home / ("c" * 300))
    reason = refused_path(env, registry, raw, make_directory)
    assert "longer than 255 bytes" in reason


@pytest.mark.parametrize("make_directory", [True, False])
def test_create_with_a_path_longer_than_path_max(env: Env, make_directory: bool) -> None:
    registry = env.registry()
    raw = (str(env.home) + ("/" + "p" * 200) * 21)[:4100]
    assert len(raw) == 4100
    reason = refused_path(env, registry, raw, make_directory)
    assert "longer than 4095 bytes" in reason
    assert list(env.home.iterdir()) == []


@pytest.mark.parametrize("make_directory", [True, False])
def test_create_through_a_symlink_to_a_non_utf8_name(env: Env, make_directory: bool) -> None:
    """The client's path is fine UTF-8; the directory it names is not (bytes ff fe)."""
    registry = env.registry()
    target = os.fsencode(env.home) + b"/\xff\xfe"
    os.mkdir(target)
    os.symlink(target, os.fsencode(env.home / "latin"))
    for raw in (str(env.home / "latin"), str(env.home / "latin" / "new")):
        reason = refused_path(env, registry, raw, make_directory)
        assert "not valid UTF-8" in reason
    assert os.listdir(target) == []


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.ENAMETOOLONG, "File name too long"),
        OSError(errno.EROFS, "Read-only file system"),
    ],
    ids=["EACCES", "ENAMETOOLONG", "EROFS"],
)
def test_create_when_mkdir_fails(
    env: Env, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    """Whatever mkdir says (root in CI is never refused EACCES, so it is injected)."""
    registry = env.registry()
    raw = str(env.home / "new")

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(Path, "mkdir", mkdir)
    reason = refused_path(env, registry, raw, True)
    assert reason == f"cannot be created: {os.strerror(error.errno or 0)}"


def test_create_when_the_path_cannot_be_resolved(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/1/cwd as a user sees it: readlink says EACCES."""
    registry = env.registry()
    raw = str(env.home / "proc-cwd")
    realpath = os.path.realpath

    def denied(path: Any, *args: Any, **kwargs: Any) -> str:
        if os.fspath(path) == raw:
            raise PermissionError(errno.EACCES, "Permission denied", raw)
        return str(realpath(path, *args, **kwargs))

    monkeypatch.setattr(os.path, "realpath", denied)
    for make_directory in (False, True):
        reason = refused_path(env, registry, raw, make_directory)
        assert reason == "cannot be resolved: Permission denied"


# ------------------------------------------------------------------------ get / list


def test_get_unknown_project(env: Env) -> None:
    registry = env.registry()
    registry.create(str(env.dir("app")), False)
    error = refused(ErrorCode.PROJECT_NOT_FOUND, lambda: registry.get("no-such-id"))
    assert error.details == {"project_id": "no-such-id"}


def test_list_is_oldest_first(env: Env) -> None:
    registry = env.registry()
    made = []
    for name in ("zeta", "alpha", "mid", "beta"):
        project, _ = registry.create(str(env.dir(name)), False)
        made.append(project)
        env.clock.advance(1)

    assert registry.all() == made
    reloaded, _ = env.reload()
    assert [p.id for p in reloaded.all()] == [p.id for p in made]

    registry.delete(made[1].id)
    assert registry.all() == [made[0], made[2], made[3]]


# --------------------------------------------------------------------------- delete


def test_delete_removes_project_data_but_not_the_users_directory(env: Env) -> None:
    registry = env.registry()
    directory = env.dir("app")
    (directory / "precious.txt").write_text("user work")
    (directory / "src").mkdir()
    keep, _ = registry.create(str(env.dir("other")), False)
    project, _ = registry.create(str(directory), False)
    logs = env.projects_dir / project.id / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "messages_current.jsonl").write_text("{}\n")

    deleted = registry.delete(project.id)

    assert deleted is project
    assert not (env.projects_dir / project.id).exists()
    assert project.id not in env.index()
    assert keep.id in env.index()
    assert (directory / "precious.txt").read_text() == "user work"
    assert (directory / "src").is_dir()
    refused(ErrorCode.PROJECT_NOT_FOUND, lambda: registry.get(project.id))
    assert registry.all() == [keep]

    # the same directory can become a project again, as a new one
    again, created = registry.create(str(directory), False)
    assert created is True
    assert again.id != project.id


def test_delete_survives_a_restart(env: Env) -> None:
    registry = env.registry()
    project, _ = registry.create(str(env.dir("app")), False)
    registry.delete(project.id)
    reloaded, report = env.reload()
    assert reloaded.all() == []
    assert report.clean


def test_delete_unknown_project(env: Env) -> None:
    registry = env.registry()
    error = refused(ErrorCode.PROJECT_NOT_FOUND, lambda: registry.delete("nope"))
    assert error.details == {"project_id": "nope"}


def test_delete_while_executing_is_refused(env: Env) -> None:
    registry = env.registry()
    project, _ = registry.create(str(env.dir("app")), False)
    project.run = ActiveRun("run-1")

    error = refused(ErrorCode.PROCESS_ACTIVE, lambda: registry.delete(project.id))

    assert error.details == {"project_id": project.id, "run_id": "run-1"}
    assert registry.get(project.id) is project
    assert (env.projects_dir / project.id / "metadata.json").exists()
    assert project.id in env.index()

    project.run, project.error_details = None, "failed"  # a failed run does not block deletion
    assert project.status is ProjectStatus.ERROR
    registry.delete(project.id)
    assert len(registry) == 0


# --------------------------------------------------------------------------- reload


def test_reload_gives_equal_projects(env: Env) -> None:
    registry = env.registry()
    a, _ = registry.create(str(env.dir("a")), False)
    env.clock.advance(10)
    b, _ = registry.create(str(env.dir("b")), False)
    b.session_id = "session-123"
    b.last_active = b.created_at + timedelta(minutes=5)
    b.error_details = "Claude exited with status 1"
    registry.store.save(b)

    reloaded, report = env.reload()

    assert report.clean
    assert report.loaded == 2
    assert report.rebuilt == []
    assert [snapshot(p) for p in reloaded.all()] == [snapshot(a), snapshot(b)]
    assert reloaded.get(b.id).status is ProjectStatus.ERROR


def test_status_is_not_persisted(env: Env) -> None:
    registry = env.registry()
    project, _ = registry.create(str(env.dir("a")), False)
    project.run = ActiveRun("run-1")
    assert project.status is ProjectStatus.EXECUTING
    registry.store.save(project)
    reloaded, _ = env.reload()
    assert reloaded.get(project.id).status is ProjectStatus.IDLE


def test_reloaded_registry_keeps_enforcing_the_rules(env: Env) -> None:
    registry = env.registry(max_projects=2)
    a, _ = registry.create(str(env.dir("a")), False)
    registry.create(str(env.dir("b")), False)
    reloaded, _ = env.reload(max_projects=2)
    assert reloaded.create(str(env.home / "a"), False) == (reloaded.get(a.id), False)
    refused(ErrorCode.PROJECT_NESTING, lambda: reloaded.create(str(env.dir("a/x")), False))
    refused(ErrorCode.PROJECT_LIMIT, lambda: reloaded.create(str(env.dir("c")), False))


# ------------------------------------------------------------------------- recovery


@pytest.fixture
def two_projects(env: Env) -> tuple[Project, Project]:
    registry = env.registry()
    a, _ = registry.create(str(env.dir("a")), False)
    env.clock.advance(1)
    b, _ = registry.create(str(env.dir("b")), False)
    b.session_id = "sess-b"
    registry.store.save(b)
    return a, b


def test_garbage_metadata_is_quarantined_and_rebuilt_from_the_index(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    meta = env.projects_dir / b.id / "metadata.json"
    meta.write_bytes(b'{"id": "torn')

    reloaded, report = env.reload()

    assert env.corrupted() == [b'{"id": "torn']
    assert len(report.quarantined) == 1
    assert report.rebuilt == [b.id]
    assert report.lost == []
    assert report.loaded == 2
    assert not report.clean
    rebuilt = reloaded.get(b.id)
    assert rebuilt.path == b.path
    assert rebuilt.created_at == b.created_at
    assert rebuilt.last_active == b.created_at
    assert rebuilt.session_id is None  # not in the index: the one thing lost
    # a valid metadata file is back, and the index still lists both projects
    assert Project.from_metadata(env.metadata(b.id), b.id).path == b.path
    assert set(env.index()) == {a.id, b.id}
    assert snapshot(reloaded.get(a.id)) == snapshot(a)

    # a second restart is clean: the repair was persisted
    _, report2 = env.reload()
    assert report2.clean


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"[]",
        b'"a string"',
        b"null",
        b'{"id": "%(id)s"}',
        b'{"id": "%(id)s", "path": "relative/dir", "created_at": "2024-01-01T00:00:00Z"}',
        b'{"id": "%(id)s", "path": "/x", "created_at": "2024-01-01T00:00:00"}',
        b'{"id": "%(id)s", "path": "/x", "created_at": "yesterday"}',
        b'{"id": "%(id)s", "path": "/x", "created_at": "2024-01-01T00:00:00Z", "session_id": 7}',
    ],
    ids=[
        "empty",
        "not-utf8",
        "list",
        "string",
        "null",
        "no-path",
        "relative",
        "naive-time",
        "bad-time",
        "bad-session",
    ],
)
def test_invalid_metadata_is_quarantined(
    env: Env, two_projects: tuple[Project, Project], content: bytes
) -> None:
    _, b = two_projects
    content = content.replace(b"%(id)s", b.id.encode())
    (env.projects_dir / b.id / "metadata.json").write_bytes(content)

    reloaded, report = env.reload()

    assert env.corrupted() == [content]
    assert report.rebuilt == [b.id]
    assert reloaded.get(b.id).path == b.path


def test_metadata_with_mismatched_id_is_quarantined(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    meta = env.projects_dir / b.id / "metadata.json"
    foreign = dict(env.metadata(b.id), id=a.id)  # e.g. a directory copied by hand
    meta.write_text(json.dumps(foreign))

    reloaded, report = env.reload()

    assert [json.loads(c) for c in env.corrupted()] == [foreign]
    assert len(report.quarantined) == 1
    assert report.rebuilt == [b.id]
    assert [p.id for p in reloaded.all()] == [a.id, b.id]
    assert reloaded.get(b.id).path == b.path
    assert env.metadata(b.id)["id"] == b.id


def test_garbage_metadata_without_index_entry_is_lost_but_kept(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    env.index_path.write_text(json.dumps({a.id: env.index()[a.id]}))
    (env.projects_dir / b.id / "metadata.json").write_bytes(b"\x00\x00garbage")
    history = env.projects_dir / b.id / "logs" / "messages_current.jsonl"
    history.parent.mkdir(exist_ok=True)
    history.write_text('{"seq": 1}\n')

    reloaded, report = env.reload()

    assert report.lost == [b.id]
    assert report.rebuilt == []
    assert len(report.quarantined) == 1
    assert env.corrupted() == [b"\x00\x00garbage"]  # moved aside, never deleted
    assert [p.id for p in reloaded.all()] == [a.id]
    refused(ErrorCode.PROJECT_NOT_FOUND, lambda: reloaded.get(b.id))
    assert set(env.index()) == {a.id}
    assert history.read_text() == '{"seq": 1}\n'  # the history is not thrown away either


def test_project_directory_without_metadata_is_rebuilt_from_the_index(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    """A crash between making the project directory and writing its metadata."""
    _, b = two_projects
    (env.projects_dir / b.id / "metadata.json").unlink()

    reloaded, report = env.reload()

    assert report.rebuilt == [b.id]
    assert report.quarantined == []
    assert reloaded.get(b.id).path == b.path
    assert env.metadata(b.id)["id"] == b.id


def test_rebuild_from_index_validates_the_entry(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    """An index entry is held to the same rules as metadata: a relative path in it must
    not become a project (metadata with that path would be quarantined at the next
    start, then rebuilt from the same entry again, forever)."""
    a, b = two_projects
    env.index_path.write_text(
        json.dumps(
            {
                a.id: env.index()[a.id],
                b.id: {"path": "relative/dir", "created_at": "2024-01-01T00:00:00.000Z"},
            }
        )
    )
    (env.projects_dir / b.id / "metadata.json").write_bytes(b"garbage")

    reloaded, report = env.reload()

    assert report.lost == [b.id]
    assert [p.id for p in reloaded.all()] == [a.id]
    assert all(p.path.is_absolute() for p in reloaded.all())


@pytest.mark.parametrize(
    "entry",
    [
        None,
        "a string",
        [],
        {},
        {"path": "/x"},
        {"created_at": "2024-01-01T00:00:00Z"},
        {"path": "/x", "created_at": "not a time"},
        {"path": 5, "created_at": "2024-01-01T00:00:00Z"},
    ],
    ids=["null", "string", "list", "empty", "no-time", "no-path", "bad-time", "path-int"],
)
def test_unusable_index_entry_means_lost(
    env: Env, two_projects: tuple[Project, Project], entry: object
) -> None:
    a, b = two_projects
    env.index_path.write_text(json.dumps({a.id: env.index()[a.id], b.id: entry}))
    (env.projects_dir / b.id / "metadata.json").write_bytes(b"garbage")

    reloaded, report = env.reload()

    assert report.lost == [b.id]
    assert [p.id for p in reloaded.all()] == [a.id]


def test_stray_tmp_files_are_removed_and_counted(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    strays = [
        env.data_dir / ".project-index.json.0123456789abcdef.tmp",
        env.projects_dir / a.id / ".metadata.json.fedcba9876543210.tmp",
        env.projects_dir / b.id / ".metadata.json.00000000deadbeef.tmp",
    ]
    for stray in strays:
        stray.write_text('{"half": ')

    reloaded, report = env.reload()

    assert report.tmp_removed == 3
    assert not any(s.exists() for s in strays)
    assert not report.clean
    assert report.quarantined == []
    assert report.loaded == 2
    assert snapshot(reloaded.get(a.id)) == snapshot(a)


def test_garbage_index_is_quarantined_and_start_up_goes_on(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    env.index_path.write_bytes(b"{{{ not json")

    reloaded, report = env.reload()

    assert env.corrupted() == [b"{{{ not json"]
    assert len(report.quarantined) == 1
    assert report.loaded == 2
    assert [snapshot(p) for p in reloaded.all()] == [snapshot(a), snapshot(b)]
    assert set(env.index()) == {a.id, b.id}


def test_garbage_index_and_garbage_metadata(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    env.index_path.write_bytes(b"garbage index")
    (env.projects_dir / b.id / "metadata.json").write_bytes(b"garbage meta")

    reloaded, report = env.reload()

    assert env.corrupted() == [b"garbage index", b"garbage meta"]
    assert report.lost == [b.id]
    assert [p.id for p in reloaded.all()] == [a.id]


def test_missing_index_is_rebuilt(env: Env, two_projects: tuple[Project, Project]) -> None:
    a, b = two_projects
    expected = env.index()
    env.index_path.unlink()

    reloaded, report = env.reload()

    assert report.clean
    assert env.index() == expected
    assert [p.id for p in reloaded.all()] == [a.id, b.id]


def test_stale_index_is_rebuilt_from_metadata(
    env: Env, two_projects: tuple[Project, Project]
) -> None:
    a, b = two_projects
    env.index_path.write_text(
        json.dumps({"ghost": {"path": "/nowhere", "created_at": "2020-01-01T00:00:00.000Z"}})
    )
    reloaded, _ = env.reload()
    assert set(env.index()) == {a.id, b.id}
    refused(ErrorCode.PROJECT_NOT_FOUND, lambda: reloaded.get("ghost"))


def test_load_on_an_empty_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    projects, report = ProjectStore(data_dir).load()
    assert projects == []
    assert report.clean
    assert (data_dir / "projects").is_dir()
    assert json.loads((data_dir / "project-index.json").read_bytes()) == {}


# ------------------------------------------------------------------------- metadata


MS_DATETIMES = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@settings(max_examples=60, deadline=None)
@given(
    project_id=st.uuids().map(str),
    path=st.text(max_size=30).map(lambda s: "/" + s.replace("\x00", "")),
    created_at=MS_DATETIMES,
    last_active=MS_DATETIMES,
    session_id=st.none() | st.text(max_size=40),
    error_details=st.none() | st.text(max_size=40),
)
def test_metadata_round_trip(
    project_id: str,
    path: str,
    created_at: datetime,
    last_active: datetime,
    session_id: str | None,
    error_details: str | None,
) -> None:
    project = Project(
        id=project_id,
        path=Path(path),
        created_at=created_at,
        last_active=last_active,
        session_id=session_id,
        error_details=error_details,
    )
    meta = project.to_metadata()
    back = Project.from_metadata(json.loads(json.dumps(meta)), project_id)

    assert back.to_metadata() == meta
    assert back.id == project_id
    assert back.path == project.path
    assert back.created_at == created_at
    assert back.last_active == last_active
    assert back.session_id == session_id
    assert back.error_details == error_details
    assert back.status is (ProjectStatus.ERROR if error_details else ProjectStatus.IDLE)
    assert ("error_details" in meta) is (error_details is not None)
    assert meta["created_at"].endswith("Z")


def test_to_metadata_timestamps_are_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    project = Project(
        id="p",
        path=Path("/w"),
        created_at=datetime(2024, 3, 1, 12, 30, 0, 123456, tzinfo=UTC),
        last_active=datetime(2024, 3, 1, 14, 31, 0, 999999, tzinfo=plus_two),
    )
    meta = project.to_metadata()
    assert meta["created_at"] == "2024-03-01T12:30:00.123Z"
    assert meta["last_active"] == "2024-03-01T12:31:00.999Z"
    assert set(meta) == {"id", "path", "created_at", "last_active", "session_id"}


def test_from_metadata_normalises_offsets_and_defaults_last_active() -> None:
    meta = {"id": "p1", "path": "/w", "created_at": "2024-01-01T01:00:00+01:00"}
    project = Project.from_metadata(meta, "p1")
    assert project.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert project.last_active == project.created_at
    assert project.session_id is None
    assert project.status is ProjectStatus.IDLE


@pytest.mark.parametrize(
    "meta",
    [
        [],
        "x",
        None,
        {},
        {"id": "other", "path": "/w", "created_at": "2024-01-01T00:00:00Z"},
        {"id": "p1", "created_at": "2024-01-01T00:00:00Z"},
        {"id": "p1", "path": 7, "created_at": "2024-01-01T00:00:00Z"},
        {"id": "p1", "path": "w", "created_at": "2024-01-01T00:00:00Z"},
        {"id": "p1", "path": "/w"},
        {"id": "p1", "path": "/w", "created_at": 1704067200},
        {"id": "p1", "path": "/w", "created_at": "2024-01-01T00:00:00"},
        {"id": "p1", "path": "/w", "created_at": "soon"},
        {"id": "p1", "path": "/w", "created_at": "2024-01-01T00:00:00Z", "last_active": "x"},
        {"id": "p1", "path": "/w", "created_at": "2024-01-01T00:00:00Z", "session_id": 1},
        {"id": "p1", "path": "/w", "created_at": "2024-01-01T00:00:00Z", "error_details": {}},
    ],
)
def test_from_metadata_is_strict(meta: object) -> None:
    with pytest.raises(ValueError):
        Project.from_metadata(meta, "p1")


def test_state_reflects_the_project() -> None:
    project = Project(
        id="p1",
        path=Path("/w"),
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        last_active=datetime(2024, 1, 2, tzinfo=UTC),
        session_id="s",
        error_details="boom",
        last_seq=42,
    )
    assert project.status is ProjectStatus.ERROR
    wire = project_state_data(project.snapshot(subscriber_count=3))
    assert wire == {
        "id": "p1",
        "path": "/w",
        "state": "ERROR",
        "session_id": "s",
        "created_at": "2024-01-01T00:00:00.000Z",
        "last_active": "2024-01-02T00:00:00.000Z",
        "last_seq": 42,
        "subscriber_count": 3,
        "error_details": "boom",
        "awaiting_approval": False,
        "pending_permissions": [],
        "settings": {"allowed_tools": [], "approvals": "phone"},
    }
