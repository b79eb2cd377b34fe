"""Everything a run started, found through ``/proc``, so a kill reaches all of it.

A process group is not enough: the real CLI starts its Bash tool's shells with
``setsid`` (their own session and group), and ``killpg`` of claude's group leaves
them running. We record the run's descendants by walking ``/proc/*/stat`` parent
links from the claude pid, before and during each kill step, and signal each
recorded process's group as well as the process itself.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

PROC = Path("/proc")


def read_stat(pid: int, proc: Path = PROC) -> tuple[str, int, int] | None:
    """``(state, ppid, pgid)`` of a live process, None when it is gone."""
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain anything, even ") ".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None


def descendants(root: int, proc: Path = PROC) -> dict[int, int]:
    """``{pid: pgid}`` of every live descendant of ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = read_stat(int(entry), proc)
        if stat is None:
            continue
        _, ppid, pgid = stat
        children.setdefault(ppid, []).append(int(entry))
        groups[int(entry)] = pgid
    found: dict[int, int] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found[pid] = groups[pid]
        stack.extend(children.get(pid, []))
    return found


def group_members(pgid: int, proc: Path = PROC) -> list[int]:
    """Live processes of a process group."""
    members = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            stat = read_stat(int(entry), proc)
            if stat is not None and stat[2] == pgid and stat[0] != "Z":
                members.append(int(entry))
    return members


def alive(pid: int, proc: Path = PROC) -> bool:
    """Running or stopped; a zombie has already died and only awaits its reaper."""
    stat = read_stat(pid, proc)
    return stat is not None and stat[0] != "Z"


class ProcessTree:
    """The processes of one run: claude (leading its own group) and what it started."""

    def __init__(
        self,
        pid: int,
        pgid: int,
        proc: Path = PROC,
        kill: Callable[[int, int], None] = os.kill,
        killpg: Callable[[int, int], None] = os.killpg,
    ) -> None:
        self.pid = pid
        self.pgid = pgid
        self.proc = proc
        self.kill = kill
        self.killpg = killpg
        self.recorded: dict[int, int] = {}

    def record(self) -> None:
        """Add the current descendants; those already recorded stay recorded."""
        self.recorded.update(descendants(self.pid, self.proc))

    def survivors(self) -> dict[int, int]:
        return {pid: pgid for pid, pgid in self.recorded.items() if alive(pid, self.proc)}

    def remaining(self) -> dict[int, int]:
        """Recorded survivors plus anything still in claude's group (even if never
        recorded), for the sweep after claude itself has gone."""
        left = self.survivors()
        for pid in group_members(self.pgid, self.proc):
            left.setdefault(pid, self.pgid)
        left.pop(self.pid, None)
        return left

    def signal_leader(self, signum: int) -> None:
        _send(self.kill, self.pid, signum)

    def signal_all(self, signum: int) -> None:
        """The claude group, then each recorded descendant and its group."""
        groups = {self.pgid}
        survivors = self.remaining()
        groups.update(pgid for pgid in survivors.values() if pgid > 1)
        for pgid in _sans_own_group(groups):
            _send(self.killpg, pgid, signum)
        for pid in survivors:
            _send(self.kill, pid, signum)


def _sans_own_group(groups: Iterable[int]) -> list[int]:
    """Never signal the server's own process group, whatever a child did."""
    own = os.getpgrp()
    return [g for g in groups if g != own]


def _send(kill: Callable[[int, int], None], target: int, signum: int) -> None:
    try:
        kill(target, signum)
    except OSError as e:
        if e.errno not in (errno.ESRCH, errno.EPERM):
            raise


SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}
