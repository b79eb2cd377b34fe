"""Everything a run started, found through ``/proc``, so a kill reaches all of it.

A process group is not enough: the real CLI starts its Bash tool's shells with
``setsid`` (their own session and group), and ``killpg`` of claude's group leaves
them running. We record the run's descendants by walking ``/proc/*/stat`` parent
links from the claude pid, before and during each kill step, and signal each
recorded process's group as well as the process itself.

Parent links break when a process double-forks (its parent exits and it is adopted
by init), so claude is also started with :data:`MARKER` ``=<run id>`` in its
environment, which every descendant inherits unless it clears its environment:
``/proc/<pid>/environ`` finds them wherever they went, also after a server crash.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

PROC = Path("/proc")
MARKER = "POCKET_AGENT_RUN_ID"


@attrs.frozen
class ProcStat:
    state: str
    ppid: int
    pgid: int
    starttime: int  # clock ticks after boot: with the pid, a process's identity


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The fields we need of a live process, None when it is gone."""
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain anything, even ") ".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcStat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _all_stats(proc: Path) -> dict[int, ProcStat]:
    try:
        entries = os.listdir(proc)
    except OSError:
        return {}
    stats = {}
    for entry in entries:
        if entry.isdigit():
            stat = read_stat(int(entry), proc)
            if stat is not None:
                stats[int(entry)] = stat
    return stats


def descendants(root: int, proc: Path = PROC) -> dict[int, ProcStat]:
    """Every live descendant of ``root`` (not ``root`` itself)."""
    return _descendants(root, _all_stats(proc))


def _descendants(root: int, stats: dict[int, ProcStat]) -> dict[int, ProcStat]:
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    found: dict[int, ProcStat] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = stats[pid]
            stack.extend(children.get(pid, []))
    return found


def marked(
    run_id: str, proc: Path = PROC, stats: dict[int, ProcStat] | None = None
) -> dict[int, ProcStat]:
    """Live processes whose environment carries this run's :data:`MARKER`."""
    needle = f"{MARKER}={run_id}".encode()
    found = {}
    for pid, stat in (_all_stats(proc) if stats is None else stats).items():
        if stat.state == "Z":
            continue
        try:
            environ = (proc / str(pid) / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needle in environ.split(b"\0"):
            found[pid] = stat
    return found


def group_members(pgid: int, proc: Path = PROC) -> dict[int, ProcStat]:
    """Live (not zombie) processes of a process group."""
    return {
        pid: stat
        for pid, stat in _all_stats(proc).items()
        if stat.pgid == pgid and stat.state != "Z"
    }


def alive(pid: int, proc: Path = PROC) -> bool:
    """Running or stopped; a zombie has already died and only awaits its reaper."""
    stat = read_stat(pid, proc)
    return stat is not None and stat.state != "Z"


class ProcessTree:
    """The processes of one run: claude (leading its own group) and what it started.

    A recorded process is identified by pid *and* start time, so a pid the kernel
    reused for somebody else's process is never signalled; a group is signalled only
    while a verified member of it is alive (a live group's id cannot be reused).
    """

    def __init__(
        self,
        pid: int,
        pgid: int,
        proc: Path = PROC,
        kill: Callable[[int, int], None] = os.kill,
        killpg: Callable[[int, int], None] = os.killpg,
        marker: str | None = None,
    ) -> None:
        """``marker``: the run id claude's environment carries (see :data:`MARKER`)."""
        self.pid = pid
        self.pgid = pgid
        self.proc = proc
        self.kill = kill
        self.killpg = killpg
        self.marker = marker
        self.leader_gone = False
        self.recorded: dict[int, int] = {}  # pid -> start time

    def record(self) -> bool:
        """Add the current descendants and marked processes; those already recorded
        stay recorded. True when something new was recorded."""
        before = set(self.recorded)
        stats = _all_stats(self.proc)
        # Forget what has died: a long run (a build, a test loop) starts thousands.
        self.recorded = {
            pid: start
            for pid, start in self.recorded.items()
            if pid in stats and stats[pid].starttime == start and stats[pid].state != "Z"
        }
        if not self.leader_gone:  # else its pid may belong to somebody else now
            for pid, stat in _descendants(self.pid, stats).items():
                self.recorded.setdefault(pid, stat.starttime)
        if self.marker is not None:
            for pid, stat in marked(self.marker, self.proc, stats).items():
                if pid != self.pid:
                    self.recorded.setdefault(pid, stat.starttime)
        return not set(self.recorded) <= before

    def remaining(self) -> dict[int, int]:
        """``{pid: current pgid}`` of recorded processes still alive (the same ones),
        plus anything still in claude's group, recorded or not."""
        left = {}
        for pid, starttime in self.recorded.items():
            stat = read_stat(pid, self.proc)
            if stat is not None and stat.state != "Z" and stat.starttime == starttime:
                left[pid] = stat.pgid
        if self.pgid != os.getpgrp():  # claude leads its own group; never ours
            for pid, stat in group_members(self.pgid, self.proc).items():
                left.setdefault(pid, stat.pgid)
        left.pop(self.pid, None)
        left.pop(os.getpid(), None)
        return left

    def survivors(self) -> dict[int, int]:
        return self.remaining()

    def signal_leader(self, signum: int) -> None:
        if not self.leader_gone:
            _send(self.kill, self.pid, signum)

    def signal_all(self, signum: int) -> None:
        """Claude's group (while it exists), each surviving descendant and its group."""
        survivors = self.remaining()
        groups = set(survivors.values())
        if not self.leader_gone:
            groups.add(self.pgid)
        for pgid in _sans_own_group(groups):
            _send(self.killpg, pgid, signum)
        for pid in survivors:
            if not _send(self.kill, pid, signum):
                self.recorded.pop(pid, None)  # not ours to signal: stop trying


def _sans_own_group(groups: Iterable[int]) -> list[int]:
    """Never signal the server's own process group (or init's), whatever a child did."""
    own = os.getpgrp()
    return [g for g in groups if g != own and g > 1]


def _send(kill: Callable[[int, int], None], target: int, signum: int) -> bool:
    """False when the target is not ours to signal (EPERM)."""
    try:
        kill(target, signum)
    except OSError as e:
        if e.errno == errno.EPERM:
            return False
        if e.errno != errno.ESRCH:
            raise
    return True


SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}
