"""Files on disk: atomic writes, the data-dir lock, quarantine of corrupted files.

Nothing here knows about projects or the protocol; ``projects.py`` decides what to
store, this module makes sure a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import StartupError

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, payload: bytes, mode: int = 0o644) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory.

    Readers see either the old file or the new one, never a torn mix, whatever
    happens to the process or the machine in between. The temp file is 0600 from
    its creation, so a secret is never readable by others even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fchmod(f.fileno(), mode)  # exactly this mode, whatever the umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    payload = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, payload.encode(), mode)


def remove_stray_tmp_files(directory: Path) -> list[Path]:
    """Leftovers of writes interrupted by a crash; the real file is still intact."""
    removed = []
    for tmp in directory.rglob(f"*{TMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def quarantine(path: Path, corrupted_dir: Path, label: str) -> Path:
    """Move a file we cannot read aside, never deleting it: the operator may want it."""
    corrupted_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    for n in range(1000):
        target = corrupted_dir / (f"{label}.{stamp}" + (f".{n}" if n else ""))
        try:
            os.link(path, target)  # unlike rename, refuses to replace an earlier one
        except FileExistsError:
            continue
        path.unlink()
        fsync_dir(corrupted_dir)
        fsync_dir(path.parent)
        return target
    raise FileExistsError(f"{corrupted_dir}: no free name for {label}")


class DataDirLocked(StartupError):
    """Another live server owns this data directory."""


class DataDirLock:
    """``data/.lock``: an ``flock`` held for the server's lifetime, with our pid inside.

    ``flock`` dies with its process, so a lock file left by a crashed server is
    simply taken over: no pid-liveness guessing, no pid-reuse races. The pid in
    the file is for humans and for the error message.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.stale_pid: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = self._lock_once()
            # A server stopping right now unlinks the file it locked; a lock on
            # that orphaned inode would not exclude the next server. Retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.stale_pid = _read_pid(self.path)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def _lock_once(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = _read_pid(self.path)
            who = f"pid {holder}" if holder else "another process"
            raise DataDirLocked(
                f"{self.path.parent} is in use by another server ({who} holds {self.path})"
            ) from None
        return fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None
