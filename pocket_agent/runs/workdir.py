"""The project directory a run works in, checked again at each run and then held open.

The path policy is applied when a project is created, but the directory can change
afterwards: replaced by a symlink to ``/``, or a parent swapped. So each run opens the
directory, asks the kernel where the open directory really is, and refuses the run
unless that is still the real path recorded at creation and it still passes the
policy. Claude is then started *in the opened directory*: the descriptor is handed to
the child as fd 3 and the child changes into ``/proc/self/fd/3`` (its own descriptor,
so no ptrace access to the server is needed, which a server that switched users or
runs with file capabilities would not have), so the check and the use cannot race. The
directory stays open until the run has ended. Claude inherits fd 3 (an ``O_PATH``
descriptor of its own working directory: it can neither read nor write through it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pocket_agent.core.errors import PathRefused

CHILD_FD = 3


def _printable(path: str) -> str:
    """A path fit for a message (a non-UTF-8 name must not break the JSON frame)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class WorkDir:
    """An open project directory (``O_PATH``: no read permission needed, no I/O)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    spawn_path = f"/proc/self/fd/{CHILD_FD}"  # what the child changes into

    def child_fds(self) -> dict[int, int | str]:
        """``spawnProcess``'s ``childFDs``: claude's pipes, and the directory as fd 3."""
        assert self.fd is not None, "the directory was closed before claude started"
        return {0: "w", 1: "r", 2: "r", CHILD_FD: self.fd}

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def open_workdir(path: Path, check: Callable[[str], Path]) -> WorkDir:
    """Open ``path`` (the real path recorded at creation) and check it is still itself;
    ``check`` is the path policy's resolve. PathRefused says what it became."""
    shown = str(path)
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PathRefused(shown, "the project directory no longer exists") from None
    except NotADirectoryError:
        raise PathRefused(shown, "the project directory is no longer a directory") from None
    except OSError as e:
        raise PathRefused(shown, f"the project directory cannot be opened: {e.strerror}") from None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real != shown:
            raise PathRefused(
                shown,
                f"the project directory now resolves to {_printable(real)}",
                f"the project directory {shown} was replaced: it now resolves to "
                f"{_printable(real)}; nothing was started",
            )
        check(real)
    except BaseException:
        os.close(fd)
        raise
    return WorkDir(fd, path)
