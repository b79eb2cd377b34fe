"""Does the data directory take writes? One place knows, tells, and notices recovery.

A full disk (or a read-only remount, or an I/O error) must never lose Records
silently: the first failed write of a project is announced once (:class:`StorageFailed`:
an ``error`` to its followers, one log line), ``health`` reports ``degraded`` with the
reason, and from then on a small probe write is retried every few seconds; writes that
had to wait (a run's ``execution_finished``) are retried with it. When the probe
succeeds the server is whole again (:class:`StorageRecovered`), without a restart.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import DomainError
from .events import Event, EventBus, ProjectEvent

RETRY_INTERVAL = 2.0
PROBE = ".storage-probe.tmp"  # *.tmp: removed at start-up if a crash leaves it


def describe(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, "EIO")
    return f"{error.strerror or error} ({name})"


class StorageError(DomainError):
    """A write to the data directory failed: nothing was started or changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the server cannot write its data: {reason}", {"reason": reason})
        self.reason = reason


@attrs.frozen
class StorageFailed(ProjectEvent):
    """The project's history (or metadata) could not be written; said once per episode."""

    project_id: str
    reason: str


@attrs.frozen
class StorageRecovered(Event):
    """Writes succeed again after a failure."""

    down_for: float  # seconds


Retry = Callable[[], None]  # a write that waits for space; raises OSError while it cannot


class StorageWatch:
    log = Logger()

    def __init__(self, data_dir: Path, clock: IReactorTime, bus: EventBus) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.bus = bus
        self.reason: str | None = None
        self.failed_at = 0.0
        self._told: set[str] = set()  # projects told during this episode
        self._pending: dict[str, Retry] = {}
        self._loop: LoopingCall | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def failed(self, project_id: str, error: OSError) -> StorageError:
        """Note a failed write (announced once per project and episode); returns the
        error for the requester, if there is one to tell."""
        reason = describe(error)
        if self.reason is None:
            self.reason = reason
            self.failed_at = self.clock.seconds()
            self._start_retrying()
        if project_id not in self._told:
            self._told.add(project_id)
            self.bus.emit(StorageFailed(project_id, reason))
        return StorageError(reason)

    def later(self, key: str, write: Retry) -> None:
        """Retry ``write`` with the probe until it succeeds (the newest per key wins)."""
        self._pending[key] = write
        self._start_retrying()

    def flush(self, key: str) -> None:
        """Write what waits under ``key`` now (OSError if it still cannot be written):
        a project's next Record must not overtake its pending end."""
        write = self._pending.get(key)
        if write is not None:
            write()
            del self._pending[key]

    def retry(self) -> bool:
        """One attempt: the probe, then every waiting write. True when all succeeded."""
        try:
            self._probe()
            for key, write in list(self._pending.items()):
                try:
                    write()
                except OSError:
                    raise
                except Exception:
                    # A bug in a waiting write must not stop the retries of the others.
                    self.log.failure("A write waiting for storage failed", key=key)
                del self._pending[key]
        except OSError as e:
            if self.reason is None:
                self.reason = describe(e)
                self.failed_at = self.clock.seconds()
            return False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.reason is not None:
            down_for = self.clock.seconds() - self.failed_at
            self.reason = None
            self._told.clear()
            self.bus.emit(StorageRecovered(round(down_for, 3)))
        return True

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _start_retrying(self) -> None:
        if self._loop is None:
            loop = self._loop = LoopingCall(self.retry)
            loop.clock = self.clock

            def died(failure: Failure) -> None:
                self.log.failure("The storage retry stopped", failure)
                if self._loop is loop:
                    self._loop = None  # the next failure starts it again

            loop.start(RETRY_INTERVAL, now=False).addErrback(died)

    def _probe(self) -> None:
        path = self.data_dir / PROBE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
