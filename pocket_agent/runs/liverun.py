"""What a crash of the server must not lose: which runs were live, and what they started.

Each live run has ``data/projects/<id>/live-run.json``: its run id and start time, and,
once claude is spawned, claude's pid with its start time and process group, and every
descendant seen (pid and start time). It is written before the run's first Record and
rewritten whenever a new descendant is seen, and removed once ``execution_finished``
is on disk. A file still there at start-up is a run that a crash cut off:
:func:`sweep` ends what is left of it, before the server listens.

A pid is only ever signalled with the start time it had when it was recorded (and on
the same boot), so a pid the kernel has since given to somebody else is left alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from pocket_agent.storage import atomic_write_json

from .tree import PROC, ProcessTree, alive, read_stat

LIVE_RUN = "live-run.json"
SWEEP_POLL = 0.05


def boot_id(proc: Path = PROC) -> str | None:
    """Pids and start times only identify a process within one boot."""
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


@attrs.frozen
class LiveRun:
    run_id: str
    started_at: float  # the server's clock, seconds since the epoch
    boot_id: str | None
    pid: int | None = None
    starttime: int | None = None
    pgid: int | None = None
    descendants: tuple[tuple[int, int], ...] = ()  # (pid, start time)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "boot_id": self.boot_id,
            "pid": self.pid,
            "starttime": self.starttime,
            "pgid": self.pgid,
            "descendants": [list(d) for d in self.descendants],
        }

    @classmethod
    def from_json(cls, data: object) -> LiveRun:
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            raise ValueError("not a live-run record")
        ints = {k: data.get(k) for k in ("pid", "starttime", "pgid")}
        if any(v is not None and type(v) is not int for v in ints.values()):
            raise ValueError("bad pid fields")
        started = data.get("started_at")
        if not isinstance(started, int | float) or not math.isfinite(started):
            started = 0.0
        descendants = data.get("descendants", [])
        if not isinstance(descendants, list) or not all(
            isinstance(d, list) and len(d) == 2 and all(type(x) is int for x in d)
            for d in descendants
        ):
            raise ValueError("bad descendants")
        boot = data.get("boot_id")
        return cls(
            run_id=data["run_id"],
            started_at=float(started),
            boot_id=boot if isinstance(boot, str) else None,
            pid=ints["pid"],
            starttime=ints["starttime"],
            pgid=ints["pgid"],
            descendants=tuple((d[0], d[1]) for d in descendants),
        )

    def with_tree(self, tree: ProcessTree, starttime: int | None) -> LiveRun:
        return attrs.evolve(
            self,
            pid=tree.pid,
            starttime=starttime,
            pgid=tree.pgid,
            descendants=tuple(sorted(tree.recorded.items())),
        )


DAMAGED = LiveRun(run_id="", started_at=0.0, boot_id=None)  # names no run: see the history


class LiveRunFile:
    """``live-run.json`` of one project."""

    def __init__(self, project_dir: Path) -> None:
        self.path = project_dir / LIVE_RUN

    def write(self, live: LiveRun) -> None:
        atomic_write_json(self.path, live.to_json())

    def read(self) -> LiveRun | None:
        """None when there is none; a damaged one still names no run we could end."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:  # a directory, unreadable: still something a crash left
            return DAMAGED
        try:
            return LiveRun.from_json(json.loads(raw))
        except (ValueError, OverflowError, RecursionError):
            return DAMAGED

    def remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except IsADirectoryError:
            shutil.rmtree(self.path)

    def remove_quietly(self) -> None:
        """Best effort, on a path that is already failing."""
        try:
            self.remove()
        except OSError:
            pass


@attrs.frozen
class SweepResult:
    found: tuple[int, ...]  # pids still alive when the sweep began
    signals: tuple[str, ...]  # the steps it took: SIGINT, SIGTERM, SIGKILL
    survivors: tuple[int, ...]  # still there at the end (not ours to kill, or unkillable)


def sweep(
    live: LiveRun,
    grace: float,
    *,
    proc: Path = PROC,
    kill: Callable[[int, int], None] = os.kill,
    killpg: Callable[[int, int], None] = os.killpg,
    wait: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> SweepResult:
    """The §5 escalation for what a cut-off run left running: SIGINT to claude, then
    SIGTERM, then SIGKILL to everything recorded, marked or still in claude's group,
    each step after ``grace`` unless everything is gone already.

    Blocking on purpose: it runs once at start-up, before the reactor and before any
    port is open, and a client must not meet a server whose old runs still run.
    """
    same_boot = live.boot_id is not None and live.boot_id == boot_id(proc)
    leader = live.pid if same_boot and live.pid is not None else None
    if leader is not None:
        stat = read_stat(leader, proc)
        if stat is None or stat.state == "Z" or stat.starttime != live.starttime:
            leader = None
    # A group is only signalled while its leader is verified to be the same process.
    tree = ProcessTree(
        leader or 0,
        live.pgid if leader is not None and live.pgid is not None else -1,
        proc,
        kill,
        killpg,
        marker=live.run_id or None,
    )
    tree.leader_gone = leader is None
    if same_boot:
        tree.recorded = dict(live.descendants)
    tree.record()

    def left() -> set[int]:
        tree.record()
        pids = set(tree.remaining())
        if leader is not None and alive(leader, proc):
            pids.add(leader)
        return pids

    found = left()
    steps: list[str] = []
    remaining = found
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if not remaining:
            break
        steps.append(signal.Signals(signum).name)
        if signum == signal.SIGINT:
            tree.signal_leader(signum) if leader is not None else tree.signal_all(signum)
        else:
            tree.signal_all(signum)
        deadline = monotonic() + grace
        remaining = left()
        while remaining and monotonic() < deadline:
            wait(SWEEP_POLL)
            remaining = left()
    return SweepResult(tuple(sorted(found)), tuple(steps), tuple(sorted(remaining)))
