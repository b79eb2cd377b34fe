"""Tests for pocket_agent.storage: atomic writes, stray temp files, quarantine, data-dir lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pocket_agent import storage
from pocket_agent.errors import StartupError
from pocket_agent.storage import (
    TMP_SUFFIX,
    DataDirLock,
    DataDirLocked,
    atomic_write_bytes,
    atomic_write_json,
    quarantine,
    remove_stray_tmp_files,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(params=[0o000, 0o022, 0o077, 0o277], ids=lambda u: f"umask{u:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


# ------------------------------------------------------------------ atomic writes


def test_atomic_write_bytes_creates_file_with_content(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"\x00hello\xff")
    assert target.read_bytes() == b"\x00hello\xff"
    assert names(tmp_path) == ["file.bin"]


def test_atomic_write_bytes_replaces_existing_content(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old content that is longer than the new one")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == ["file.bin"]


def test_atomic_write_bytes_empty_payload(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.write_bytes(b"something")
    atomic_write_bytes(target, b"")
    assert target.read_bytes() == b""


@pytest.mark.parametrize("mode", [0o600, 0o644], ids=["0600", "0644"])
def test_atomic_write_mode_is_exact_whatever_the_umask(
    tmp_path: Path, umask: int, mode: int
) -> None:
    target = tmp_path / "secret"
    atomic_write_bytes(target, b"x", mode=mode)
    assert mode_of(target) == mode


def test_atomic_write_default_mode_is_0644(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "plain"
    atomic_write_bytes(target, b"x")
    assert mode_of(target) == 0o644
    atomic_write_json(tmp_path / "plain.json", {"a": 1})
    assert mode_of(tmp_path / "plain.json") == 0o644


def test_atomic_write_replacing_a_world_readable_file_tightens_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "auth_token"
    target.write_bytes(b"old")
    target.chmod(0o666)
    atomic_write_bytes(target, b"new-secret", mode=0o600)
    assert mode_of(target) == 0o600
    assert target.read_bytes() == b"new-secret"


def test_temp_file_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file is 0600 from creation, before the final mode is applied."""
    seen: list[tuple[str, int]] = []
    real_fchmod = os.fchmod

    def spying_fchmod(fd: int, mode: int) -> None:
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_IMODE(os.fstat(fd).st_mode)))
        real_fchmod(fd, mode)

    old = os.umask(0)
    try:
        monkeypatch.setattr(os, "fchmod", spying_fchmod)
        atomic_write_bytes(tmp_path / "secret", b"s", mode=0o600)
    finally:
        os.umask(old)
    assert len(seen) == 1
    tmp_name, mode_before = seen[0]
    assert Path(tmp_name).parent == tmp_path
    assert Path(tmp_name).name.endswith(TMP_SUFFIX)
    assert mode_before == 0o600


def test_atomic_write_json_content_and_format(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    obj = {"b": [1, 2, None], "a": "café ✓", "c": {"z": True, "y": 1.5}}
    atomic_write_json(target, obj)
    raw = target.read_bytes()
    assert json.loads(raw) == obj
    assert raw.endswith(b"\n")
    # UTF-8, not \u escapes; keys sorted so diffs of metadata stay readable
    assert "café ✓".encode() in raw
    assert raw.index(b'"a"') < raw.index(b'"b"') < raw.index(b'"c"')
    assert names(tmp_path) == ["meta.json"]


def test_atomic_write_json_mode(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "token.json"
    atomic_write_json(target, ["x"], mode=0o600)
    assert mode_of(target) == 0o600


def test_atomic_write_json_unserialisable_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == '{"old": true}'
    assert names(tmp_path) == ["meta.json"]


@pytest.mark.parametrize("failing", ["replace", "fsync", "fchmod"])
def test_failed_write_keeps_old_content_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "metadata.json"
    target.write_bytes(b"old, intact")
    calls: list[tuple[object, ...]] = []

    def boom(*args: object) -> None:
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new content")
    monkeypatch.undo()
    assert calls, f"os.{failing} was never called"
    assert target.read_bytes() == b"old, intact"
    assert names(tmp_path) == ["metadata.json"]


def test_failed_write_of_a_new_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "new.json", b"{}")
    monkeypatch.undo()
    assert names(tmp_path) == []


def test_interrupt_midway_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BaseException (Ctrl-C, SystemExit) in the middle still cleans the temp file."""
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["f"]


def test_atomic_write_fsyncs_the_file_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    target = tmp_path / "meta.json"
    atomic_write_bytes(target, b"x")
    assert len(synced) == 2
    assert Path(synced[0]).name.endswith(TMP_SUFFIX)  # the temp file, before the rename
    assert Path(synced[1]) == tmp_path  # the directory, after the rename


# --------------------------------------------------------------- stray temp files


def test_remove_stray_tmp_files(tmp_path: Path) -> None:
    (tmp_path / "projects" / "p1" / "logs").mkdir(parents=True)
    strays = {
        tmp_path / ".project-index.json.0123456789abcdef.tmp",
        tmp_path / "projects" / "p1" / ".metadata.json.fedcba9876543210.tmp",
        tmp_path / "projects" / "p1" / "logs" / "whatever.tmp",
    }
    keep = [
        tmp_path / "project-index.json",
        tmp_path / "projects" / "p1" / "metadata.json",
        tmp_path / "projects" / "p1" / "logs" / "messages_current.jsonl",
        tmp_path / "notes.tmpl",
        tmp_path / "tmp",
    ]
    for p in [*strays, *keep]:
        p.write_bytes(b"data")
    tmp_dir = tmp_path / "projects" / "cache.tmp"  # a directory, not a leftover file
    tmp_dir.mkdir()

    removed = remove_stray_tmp_files(tmp_path)

    assert set(removed) == strays
    assert len(removed) == len(strays)
    assert not any(p.exists() for p in strays)
    assert all(p.read_bytes() == b"data" for p in keep)
    assert tmp_dir.is_dir()


def test_remove_stray_tmp_files_of_an_interrupted_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash between write and rename leaves behind is found and removed."""
    target = tmp_path / "metadata.json"
    target.write_bytes(b"intact")

    def crash(*args: object) -> None:
        raise SystemExit

    # A real crash (kill -9, power loss) between write and rename skips the cleanup;
    # stand in for it: fail the rename and make the cleanup's unlink a no-op.
    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)
    with pytest.raises(SystemExit):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1

    assert remove_stray_tmp_files(tmp_path) == leftovers
    assert names(tmp_path) == ["metadata.json"]
    assert target.read_bytes() == b"intact"


def test_remove_stray_tmp_files_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    assert remove_stray_tmp_files(tmp_path) == []
    assert names(tmp_path) == ["a"]


# ----------------------------------------------------------------------- quarantine


def test_quarantine_moves_the_file_into_the_corrupted_dir(tmp_path: Path) -> None:
    source = tmp_path / "projects" / "p1" / "metadata.json"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"{garbage")
    corrupted = tmp_path / "corrupted"  # does not exist yet

    target = quarantine(source, corrupted, "p1-metadata.json")

    assert not source.exists()
    assert target.parent == corrupted
    assert target.name.startswith("p1-metadata.json.")
    assert target.read_bytes() == b"{garbage"
    assert names(corrupted) == [target.name]
    assert source.parent.is_dir()  # only the file moves


def test_quarantine_never_overwrites_earlier_quarantined_files(tmp_path: Path) -> None:
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    (corrupted / "older-thing").write_bytes(b"older")
    targets = []
    for i in range(5):
        source = tmp_path / "project-index.json"
        source.write_bytes(f"garbage {i}".encode())
        targets.append(quarantine(source, corrupted, "project-index.json"))
    assert len(set(targets)) == 5
    assert sorted(t.read_bytes() for t in targets) == [f"garbage {i}".encode() for i in range(5)]
    assert (corrupted / "older-thing").read_bytes() == b"older"


def test_quarantine_same_label_same_instant_keeps_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two quarantines whose clock reads the same (coarse clock, clock stepped back, a
    second start-up in the same microsecond) must not make the second replace the first:
    quarantined files are never deleted."""

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz: object = None) -> FrozenDatetime:  # type: ignore[override]
            return cls(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

    monkeypatch.setattr(storage, "datetime", FrozenDatetime)
    corrupted = tmp_path / "corrupted"
    contents = []
    for i in range(2):
        source = tmp_path / "project-index.json"
        source.write_bytes(f"garbage {i}".encode())
        contents.append(source.read_bytes())
        quarantine(source, corrupted, "project-index.json")
    kept = sorted(p.read_bytes() for p in corrupted.iterdir())
    assert kept == contents


# ------------------------------------------------------------------------ the lock


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / ".lock"


@pytest.fixture
def locks() -> Iterator[list[DataDirLock]]:
    made: list[DataDirLock] = []
    yield made
    for lock in made:
        lock.release()


def new_lock(locks: list[DataDirLock], path: Path) -> DataDirLock:
    lock = DataDirLock(path)
    locks.append(lock)
    return lock


def test_acquire_writes_our_pid(lock_path: Path, locks: list[DataDirLock]) -> None:
    lock = new_lock(locks, lock_path)
    assert not lock.held
    lock.acquire()  # also creates the missing data dir
    assert lock.held
    assert lock_path.read_text() == f"{os.getpid()}\n"
    assert lock.stale_pid is None


def test_second_lock_in_same_process_is_refused(lock_path: Path, locks: list[DataDirLock]) -> None:
    first = new_lock(locks, lock_path)
    first.acquire()
    second = new_lock(locks, lock_path)
    with pytest.raises(DataDirLocked) as info:
        second.acquire()
    assert isinstance(info.value, StartupError)
    assert f"pid {os.getpid()}" in info.value.message
    assert str(lock_path) in info.value.message
    assert not second.held
    assert first.held
    # the refused attempt neither truncated nor removed the holder's file
    assert lock_path.read_text() == f"{os.getpid()}\n"


def test_release_removes_file_and_lets_another_acquire(
    lock_path: Path, locks: list[DataDirLock]
) -> None:
    first = new_lock(locks, lock_path)
    first.acquire()
    first.release()
    assert not first.held
    assert not lock_path.exists()
    second = new_lock(locks, lock_path)
    second.acquire()
    assert second.held
    assert lock_path.read_text() == f"{os.getpid()}\n"
    assert second.stale_pid is None  # a released lock leaves no stale pid behind


def test_release_twice_does_not_remove_a_successors_lock(
    lock_path: Path, locks: list[DataDirLock]
) -> None:
    first = new_lock(locks, lock_path)
    first.acquire()
    first.release()
    second = new_lock(locks, lock_path)
    second.acquire()
    first.release()  # idempotent: must not touch the file the second one holds
    assert lock_path.exists()
    with pytest.raises(DataDirLocked):
        new_lock(locks, lock_path).acquire()


def test_release_of_a_never_acquired_lock_is_harmless(
    lock_path: Path, locks: list[DataDirLock]
) -> None:
    holder = new_lock(locks, lock_path)
    holder.acquire()
    DataDirLock(lock_path).release()
    assert lock_path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirLocked):
        new_lock(locks, lock_path).acquire()


def test_stale_lock_with_dead_pid_is_taken_over(lock_path: Path, locks: list[DataDirLock]) -> None:
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text("999999999\n")
    lock = new_lock(locks, lock_path)
    lock.acquire()
    assert lock.stale_pid == 999999999
    assert lock_path.read_text() == f"{os.getpid()}\n"


def test_stale_lock_of_a_finished_process_is_taken_over(
    lock_path: Path, locks: list[DataDirLock]
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(f"{dead_pid}\n")
    lock = new_lock(locks, lock_path)
    lock.acquire()
    assert lock.stale_pid == dead_pid
    assert lock_path.read_text() == f"{os.getpid()}\n"


def test_lock_file_naming_a_live_pid_but_unlocked_is_taken_over(
    lock_path: Path, locks: list[DataDirLock]
) -> None:
    """Ownership is the flock, not the pid: pid reuse cannot keep a data dir locked."""
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(f"{os.getppid()}\n")
    lock = new_lock(locks, lock_path)
    lock.acquire()
    assert lock.held
    assert lock.stale_pid == os.getppid()


@pytest.mark.parametrize("content", ["", "\n", "not a pid\n", "0\n"])
def test_stale_lock_with_unreadable_pid(
    lock_path: Path, locks: list[DataDirLock], content: str
) -> None:
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(content)
    lock = new_lock(locks, lock_path)
    lock.acquire()
    assert lock.stale_pid is None
    assert lock_path.read_text() == f"{os.getpid()}\n"


HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
if sys.argv[2] == "write-pid":
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder_process(lock_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def spawn(write_pid: bool = True) -> subprocess.Popen[str]:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock_path), "write-pid" if write_pid else "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, 9)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_lock_held_by_another_process_is_refused(
    lock_path: Path, locks: list[DataDirLock], holder_process: Callable[..., subprocess.Popen[str]]
) -> None:
    proc = holder_process()
    lock = new_lock(locks, lock_path)
    with pytest.raises(DataDirLocked) as info:
        lock.acquire()
    assert f"pid {proc.pid}" in info.value.message
    assert not lock.held
    assert lock_path.read_text() == f"{proc.pid}\n"

    # flock dies with its process: once the holder is killed, the lock is taken over
    os.kill(proc.pid, 9)
    proc.wait()
    lock.acquire()
    assert lock.held
    assert lock.stale_pid == proc.pid
    assert lock_path.read_text() == f"{os.getpid()}\n"


def test_lock_held_by_another_process_without_pid(
    lock_path: Path, locks: list[DataDirLock], holder_process: Callable[..., subprocess.Popen[str]]
) -> None:
    holder_process(write_pid=False)
    with pytest.raises(DataDirLocked, match="another process"):
        new_lock(locks, lock_path).acquire()


def test_acquire_retries_when_the_locked_file_was_unlinked_meanwhile(
    lock_path: Path, locks: list[DataDirLock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server releasing right now unlinks the file we just locked: a lock on that
    orphaned inode excludes nobody, so acquire must lock the file now at the path."""
    real_lock_once = DataDirLock._lock_once
    raced: list[int] = []

    def racing_lock_once(self: DataDirLock) -> int:
        fd = real_lock_once(self)
        if not raced:
            raced.append(fd)
            self.path.unlink()  # the previous owner's release, in between
        return fd

    monkeypatch.setattr(DataDirLock, "_lock_once", racing_lock_once)
    lock = new_lock(locks, lock_path)
    lock.acquire()
    assert raced
    assert lock_path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirLocked):
        new_lock(locks, lock_path).acquire()
