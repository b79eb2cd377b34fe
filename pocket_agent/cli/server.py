"""Is a server running on this data directory, and where does it listen?

Read from the outside, without taking its lock (a server starting at that moment
must not find it taken): the pid in ``data/.lock``, whether that process lives and
holds the ``flock`` (``/proc/locks``, where there is one), and the TCP ports that
process listens on (psutil), which may differ from the configuration (``--listen``,
port 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import psutil

LOCKS = Path("/proc/locks")


@attrs.frozen
class ServerState:
    pid: int | None  # from data/.lock; None when there is no (readable) lock file
    alive: bool  # that process exists and holds the lock
    listening: tuple[tuple[str, int], ...] = ()  # (address, port) it listens on

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(port for _host, port in self.listening)


def _lock_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_held(lock: Path, locks: Path = LOCKS) -> bool | None:
    """Whether some process holds a lock on the file; None when the system cannot say."""
    try:
        st = lock.stat()
        table = locks.read_text()
    except FileNotFoundError:
        return False if not lock.exists() else None
    except OSError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(key in line.split() for line in table.splitlines())


def listening_on(pid: int) -> tuple[tuple[str, int], ...]:
    """TCP (address, port) pairs process ``pid`` listens on; () when we may not look."""
    try:
        connections = psutil.Process(pid).net_connections(kind="inet")
    except (psutil.Error, OSError):
        return ()
    found = {
        (str(c.laddr.ip), int(c.laddr.port))
        for c in connections
        if c.status == psutil.CONN_LISTEN and c.laddr
    }
    return tuple(sorted(found, key=lambda item: (item[1], item[0])))


def server_state(data_dir: Path) -> ServerState:
    lock = data_dir / ".lock"
    pid = _lock_pid(lock)
    if pid is None:
        return ServerState(None, False)
    alive = psutil.pid_exists(pid) and lock_held(lock) is not False
    return ServerState(pid, alive, listening_on(pid) if alive else ())


def running_server(data_dir: Path) -> ServerState | None:
    state = server_state(data_dir)
    return state if state.alive else None
