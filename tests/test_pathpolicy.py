"""Tests for pocket_agent.pathpolicy: which directories may become projects (SPEC §4, §7)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from pocket_agent.core.errors import PathRefused
from pocket_agent.core.pathpolicy import PathPolicy, is_within
from pocket_agent.net.errors import wire_error
from pocket_agent.wire.errors import ErrorCode


@attrs.frozen
class Layout:
    tmp: Path
    home: Path  # the allowed root
    server_root: Path  # inside the allowed root, so only the "own directory" rule refuses it
    data_dir: Path  # outside the server root, so its ancestors are distinct from it
    policy: PathPolicy


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    tmp = Path(os.path.realpath(tmp_path))
    home = tmp / "home"
    server_root = home / "server"
    data_dir = home / "state" / "data"
    for d in (home / "proj" / "sub", server_root, data_dir / "projects", tmp / "elsewhere"):
        d.mkdir(parents=True)
    (tmp / "home-evil").mkdir()  # shares a string prefix with the allowed root
    (home / "file.txt").write_text("not a directory")
    (home / "link_etc").symlink_to("/etc")
    (home / "link_etc_missing").symlink_to("/etc/pocket-agent-does-not-exist")
    (home / "link_proj").symlink_to(home / "proj")
    (home / "link_proj_relative").symlink_to("proj")
    (home / "link_missing").symlink_to(home / "to-be-made")
    (home / "link_outside").symlink_to(tmp / "elsewhere")
    (home / "loop").symlink_to(home / "loop")
    policy = PathPolicy.build([home], server_root, data_dir)
    return Layout(tmp, home, server_root, data_dir, policy)


def refusal(policy: PathPolicy, raw: str, *, may_be_missing: bool = False) -> str:
    """Resolve ``raw``, expecting INVALID_PATH; returns the reason it gives."""
    with pytest.raises(PathRefused) as info:
        policy.resolve(raw, may_be_missing=may_be_missing)
    error = info.value
    assert wire_error(error).code == ErrorCode.INVALID_PATH
    assert error.details is not None
    assert error.details["path"] == raw
    reason = error.details["reason"]
    assert isinstance(reason, str)
    assert reason in error.message
    return reason


# (raw path with {home}/{tmp} placeholders, distinctive part of the reason)
REFUSED = [
    ("relative/dir", "absolute"),
    ("", "absolute"),
    ("proj", "absolute"),
    ("./proj", "absolute"),
    ("~/proj", "absolute"),
    ("{home}/pro\nj", "control characters"),
    ("{home}/proj\x00", "control characters"),
    ("{home}/proj\x7f", "control characters"),
    ("{home}/proj\t", "control characters"),
    ("{home}/pro\rj", "control characters"),
    ("{home}/proj/../proj", "'..'"),
    ("{home}/proj/..", "'..'"),
    ("{home}/proj/sub/../../server", "'..'"),
    ("/", "root directory"),
    ("//", "root directory"),
    ("/./", "root directory"),
    ("{tmp}/elsewhere", "outside the allowed roots"),
    ("{tmp}/home-evil", "outside the allowed roots"),
    ("{tmp}", "outside the allowed roots"),
    ("/etc", "outside the allowed roots"),
    ("{home}/link_outside", "outside the allowed roots"),
    ("{home}/server", "server's own directory"),
    ("{home}/server/", "server's own directory"),
    ("{home}/./server/.", "server's own directory"),
    ("{home}/state/data", "server's own directory"),
    ("{home}/state/data/projects", "server's own directory"),
    ("{home}/state/data/projects/not-yet", "server's own directory"),
    ("{home}/state", "contains the server's data directory"),
    ("{home}", "contains the server's data directory"),
    ("{home}/file.txt", "not a directory"),
    ("{home}/file.txt/", "not a directory"),
    ("{home}/missing", "does not exist"),
    ("{home}/missing/deeper", "does not exist"),
    ("{home}/link_missing", "does not exist"),
    ("{home}/loop", "does not exist"),
]


@pytest.mark.parametrize(("template", "reason"), REFUSED, ids=[repr(t) for t, _ in REFUSED])
def test_refused(layout: Layout, template: str, reason: str) -> None:
    raw = template.format(home=layout.home, tmp=layout.tmp)
    reason_given = refusal(layout.policy, raw)
    assert reason in reason_given


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("relative/new", "absolute"),
        ("{home}/new\n", "control characters"),
        ("{home}/new/../x", "'..'"),
        ("{tmp}/elsewhere/new", "outside the allowed roots"),
        ("{home}/state/data/new", "server's own directory"),
        ("{home}/file.txt", "not a directory"),
        ("{home}/link_etc_missing", "outside the allowed roots"),
    ],
)
def test_refused_even_when_it_may_be_missing(layout: Layout, template: str, reason: str) -> None:
    raw = template.format(home=layout.home, tmp=layout.tmp)
    reason_given = refusal(layout.policy, raw, may_be_missing=True)
    assert reason in reason_given


@pytest.fixture
def everywhere(tmp_path: Path) -> PathPolicy:
    """Everything allowed, so only the system-directory (and root) rule can refuse."""
    server_root = tmp_path / "server"
    (server_root / "data").mkdir(parents=True)
    return PathPolicy.build([Path("/")], server_root, server_root / "data")


@pytest.mark.parametrize(
    "raw",
    [
        "/etc",
        "/etc/",
        "/etc/ssh",
        "//etc",
        "/./etc",
        "/usr",
        "/usr/lib",
        "/usr/local/bin",
        "/proc",
        "/proc/self",
        "/sys",
        "/dev",
        "/bin",
        "/sbin",
        "/lib",
        "/boot",
        "/run",
        "/var/log",
        "/var/lib",
        "/var/run",
    ],
)
def test_system_directories_are_refused(everywhere: PathPolicy, raw: str) -> None:
    reason_given = refusal(everywhere, raw, may_be_missing=True)
    assert "system directories" in reason_given


def test_root_is_refused_even_when_it_is_the_allowed_root(everywhere: PathPolicy) -> None:
    reason_given = refusal(everywhere, "/")
    assert "root directory" in reason_given


def test_everywhere_still_accepts_an_ordinary_directory(
    everywhere: PathPolicy, tmp_path: Path
) -> None:
    (tmp_path / "work").mkdir()
    assert everywhere.resolve(str(tmp_path / "work")) == tmp_path.resolve() / "work"


def test_symlink_to_a_system_directory_is_refused(everywhere: PathPolicy, tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    reason_given = refusal(everywhere, str(link))
    assert "system directories" in reason_given
    nested = tmp_path / "innocent2"
    nested.symlink_to("/usr/lib")
    refusal(everywhere, f"{nested}/", may_be_missing=True)


def test_symlink_escaping_the_allowed_root_to_etc_is_refused(layout: Layout) -> None:
    reason_given = refusal(layout.policy, str(layout.home / "link_etc"))
    assert "outside the allowed roots" in reason_given
    refusal(layout.policy, str(layout.home / "link_etc") + "/ssh", may_be_missing=True)


def test_symlink_inside_the_root_resolves_to_its_target(layout: Layout) -> None:
    target = layout.home / "proj"
    assert layout.policy.resolve(str(layout.home / "link_proj")) == target
    assert layout.policy.resolve(str(layout.home / "link_proj_relative")) == target
    assert layout.policy.resolve(str(layout.home / "link_proj" / "sub")) == target / "sub"


@pytest.mark.parametrize(
    "suffix", ["proj", "proj/", "proj//", "./proj", "proj/.", "./proj/./", "/proj", "link_proj/"]
)
def test_spellings_normalise_to_the_same_path(layout: Layout, suffix: str) -> None:
    raw = f"{layout.home}/{suffix}"
    assert layout.policy.resolve(raw) == layout.home / "proj"


def test_existing_directory_is_accepted(layout: Layout) -> None:
    result = layout.policy.resolve(str(layout.home / "proj" / "sub"))
    assert result == layout.home / "proj" / "sub"
    assert result.is_absolute()


def test_missing_directory_is_accepted_when_it_may_be_missing(layout: Layout) -> None:
    raw = str(layout.home / "new" / "deeper")
    assert layout.policy.resolve(raw, may_be_missing=True) == layout.home / "new" / "deeper"
    assert not (layout.home / "new").exists()  # resolving never creates anything


def test_existing_directory_is_accepted_when_it_may_be_missing(layout: Layout) -> None:
    assert layout.policy.resolve(str(layout.home / "proj"), may_be_missing=True) == (
        layout.home / "proj"
    )


def test_dangling_symlink_inside_root_resolves_to_its_target(layout: Layout) -> None:
    resolved = layout.policy.resolve(str(layout.home / "link_missing"), may_be_missing=True)
    assert resolved == layout.home / "to-be-made"


def test_allowed_root_given_through_a_symlink(layout: Layout) -> None:
    alias = layout.tmp / "home-alias"
    alias.symlink_to(layout.home)
    policy = PathPolicy.build([alias], layout.server_root, layout.data_dir)
    assert policy.allowed_roots == (layout.home,)
    assert policy.resolve(str(layout.home / "proj")) == layout.home / "proj"
    assert policy.resolve(str(alias / "proj")) == layout.home / "proj"
    refusal(policy, str(layout.tmp / "elsewhere"))


def test_several_allowed_roots(layout: Layout) -> None:
    policy = PathPolicy.build(
        [layout.home, layout.tmp / "elsewhere"], layout.server_root, layout.data_dir
    )
    assert policy.resolve(str(layout.tmp / "elsewhere")) == layout.tmp / "elsewhere"
    assert policy.resolve(str(layout.home / "proj")) == layout.home / "proj"
    reason_given = refusal(policy, str(layout.tmp / "home-evil"))
    assert str(layout.home) in reason_given
    assert str(layout.tmp / "elsewhere") in reason_given


def test_server_root_and_data_dir_given_through_symlinks(layout: Layout) -> None:
    (layout.tmp / "root-alias").symlink_to(layout.server_root)
    (layout.tmp / "data-alias").symlink_to(layout.data_dir)
    policy = PathPolicy.build([layout.home], layout.tmp / "root-alias", layout.tmp / "data-alias")
    assert "own directory" in refusal(policy, str(layout.server_root))
    assert "own directory" in refusal(policy, str(layout.data_dir / "projects"))
    assert "contains" in refusal(policy, str(layout.home / "state"))


def test_data_dir_inside_server_root(tmp_path: Path) -> None:
    """The default layout: data/ inside the root; both and the data dir's content refused."""
    home = tmp_path.resolve() / "home"
    root = home / "root"
    (root / "data" / "projects").mkdir(parents=True)
    (home / "code").mkdir()
    policy = PathPolicy.build([home], root, root / "data")
    for raw in (root, root / "data", root / "data" / "projects"):
        refusal(policy, str(raw))
    refusal(policy, str(home))  # contains the data dir
    assert policy.resolve(str(home / "code")) == home / "code"


@pytest.mark.parametrize(
    ("path", "parent", "expected"),
    [
        ("/a/b", "/a", True),
        ("/a", "/a", True),
        ("/a/b/c", "/a", True),
        ("/ab", "/a", False),
        ("/a", "/a/b", False),
        ("/b", "/a", False),
        ("/anything", "/", True),
    ],
)
def test_is_within(path: str, parent: str, expected: bool) -> None:
    assert is_within(Path(path), Path(parent)) is expected


def test_protected_server_directories_are_refused_both_ways(tmp_path: Path) -> None:
    home = tmp_path / "home"
    certs = home / "server" / "certs"
    certs.mkdir(parents=True)
    policy = PathPolicy.build([home], tmp_path / "root", tmp_path / "data", protected=[certs])
    for raw in (certs, certs / "inner", home / "server"):
        raw.mkdir(exist_ok=True)
        with pytest.raises(PathRefused) as caught:
            policy.resolve(str(raw))
        assert wire_error(caught.value).code is ErrorCode.INVALID_PATH
    (home / "app").mkdir()
    assert policy.resolve(str(home / "app")) == home / "app"


def test_ancestors_of_system_directories_are_refused() -> None:
    policy = PathPolicy.build([Path("/")], Path("/nonexistent-root"), Path("/nonexistent-data"))
    with pytest.raises(PathRefused, match="system directories"):
        policy.resolve("/var")


# ------------------------------------- what the file system says is a reason, too


def test_proc_1_cwd_is_refused(everywhere: PathPolicy) -> None:
    """``readlink`` of another process's cwd is EACCES unless we may ptrace it (root in a
    container may be refused too); readable, it is refused as a system directory or /."""
    refusal(everywhere, "/proc/1/cwd")


def failing(monkeypatch: pytest.MonkeyPatch, target: str, error: OSError) -> None:
    """Make ``os.path.realpath`` raise ``error`` for ``target`` and work for the rest:
    the PermissionError a non-root user gets, made deterministic for a root CI."""
    real = os.path.realpath

    def realpath(path: Any, *args: Any, **kwargs: Any) -> str:
        if os.fspath(path) == target:
            raise error
        return str(real(path, *args, **kwargs))

    monkeypatch.setattr(os.path, "realpath", realpath)


@pytest.mark.parametrize(
    ("errno_", "words"),
    [(errno.EACCES, "Permission denied"), (errno.ELOOP, "symbolic links")],
)
def test_an_error_while_resolving_is_a_reason(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, errno_: int, words: str
) -> None:
    raw = str(layout.home / "locked" / "app")
    failing(monkeypatch, raw, OSError(errno_, os.strerror(errno_), raw))
    reason = refusal(layout.policy, raw)
    assert reason.startswith("cannot be resolved: ") and words in reason


def test_an_unreadable_parent_is_a_reason(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child of a ``chmod 000`` directory: ``stat`` says EACCES (root would not hear it,
    so the error is injected where ``Path.exists`` asks)."""
    locked = layout.home / "locked"
    locked.mkdir()
    child = locked / "app"
    stat = Path.stat

    def denied(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        if self == child:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", denied)
    for may_be_missing in (False, True):
        reason = refusal(layout.policy, str(child), may_be_missing=may_be_missing)
        assert reason == "cannot be checked: Permission denied"


def test_a_real_unreadable_parent_is_refused(layout: Layout) -> None:
    """The same without injection: EACCES for a user, "does not exist" for root."""
    locked = layout.home / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        refusal(layout.policy, str(locked / "app"))
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("may_be_missing", [False, True])
def test_a_path_longer_than_path_max_is_refused(layout: Layout, may_be_missing: bool) -> None:
    raw = (str(layout.home) + ("/" + "x" * 200) * 21)[:4100]
    assert len(raw) == 4100
    reason = refusal(layout.policy, raw, may_be_missing=may_be_missing)
    assert reason == "is longer than 4095 bytes"


@pytest.mark.parametrize("may_be_missing", [False, True])
def test_a_component_longer_than_name_max_is_refused(layout: Layout, may_be_missing: bool) -> None:
    raw = str(layout.home / ("n" * 300))
    reason = refusal(layout.policy, raw, may_be_missing=may_be_missing)
    assert reason == "has a component longer than 255 bytes"


def test_a_name_max_component_counts_bytes(layout: Layout) -> None:
    """255 bytes is the limit, not 255 characters: 128 two-byte letters are too many."""
    assert layout.policy.resolve(str(layout.home / ("n" * 255)), may_be_missing=True)
    refusal(layout.policy, str(layout.home / ("é" * 128)), may_be_missing=True)


def test_a_symlink_whose_target_is_too_long_is_refused(layout: Layout) -> None:
    """The raw path is short, the real one is not: the limit applies to what it resolves
    to. Two relative symlinks of ten 250-byte levels each (one would hit PATH_MAX itself),
    made through directory fds since no absolute path that long can be named."""
    level = "d" * 250
    ten = "/".join([level] * 10)
    fd = os.open(layout.home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.symlink(ten, "deep", dir_fd=fd)
        for depth in range(20):
            if depth == 10:
                os.symlink(ten, "deeper", dir_fd=fd)
            os.mkdir(level, dir_fd=fd)
            inner = os.open(level, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    reason = refusal(layout.policy, str(layout.home / "deep" / "deeper"))
    assert reason == "resolves to a path longer than 4095 bytes"


@pytest.fixture
def non_utf8(layout: Layout) -> Path:
    """A symlink with an ASCII name to a directory named with the bytes ff fe."""
    target = os.fsencode(layout.home) + b"/\xff\xfe"
    os.mkdir(target)
    link = layout.home / "latin"
    os.symlink(target, os.fsencode(link))
    return link


@pytest.mark.parametrize("may_be_missing", [False, True])
def test_a_symlink_to_a_non_utf8_name_is_refused(
    layout: Layout, non_utf8: Path, may_be_missing: bool
) -> None:
    reason = refusal(layout.policy, str(non_utf8), may_be_missing=may_be_missing)
    assert reason.startswith("resolves to a name that is not valid UTF-8")
    assert "\\xff\\xfe" in reason
    assert wire_error(PathRefused(str(non_utf8), reason)).details == {
        "path": str(non_utf8),
        "reason": reason,
    }
    reason.encode("utf-8")  # it can go out in an error frame


def test_a_missing_child_of_a_non_utf8_name_is_refused(layout: Layout, non_utf8: Path) -> None:
    reason = refusal(layout.policy, str(non_utf8 / "new"), may_be_missing=True)
    assert reason.startswith("resolves to a name that is not valid UTF-8")
