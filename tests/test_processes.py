"""The /proc walker and the signalling rules, on a fake /proc."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pocket_agent.runs.tree import ProcessTree, descendants, read_stat


def fake_proc(tmp: Path, procs: dict[int, tuple[str, int, int, int]]) -> Path:
    """``{pid: (state, ppid, pgid, starttime)}`` written as /proc/<pid>/stat files."""
    proc = tmp / "proc"
    for pid, (state, ppid, pgid, start) in procs.items():
        (proc / str(pid)).mkdir(parents=True, exist_ok=True)
        rest = " ".join(["0"] * 16)  # session .. (fields 6..21)
        (proc / str(pid) / "stat").write_text(
            f"{pid} (odd ) name) {state} {ppid} {pgid} {rest} {start} 0 0\n"
        )
    return proc


class Signals:
    def __init__(self, eperm: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.sent: list[tuple[str, int, int]] = []
        self.eperm = eperm

    def kill(self, pid: int, signum: int) -> None:
        if pid in self.eperm:
            raise PermissionError(1, "Operation not permitted")
        self.sent.append(("pid", pid, signum))

    def killpg(self, pgid: int, signum: int) -> None:
        self.sent.append(("group", pgid, signum))


def test_stat_parsing_survives_odd_command_names(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {50: ("S", 1, 50, 777)})
    stat = read_stat(50, proc)
    assert stat is not None and (stat.state, stat.ppid, stat.pgid, stat.starttime) == (
        "S",
        1,
        50,
        777,
    )
    assert read_stat(51, proc) is None


def test_descendants_walks_parent_links_across_sessions(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            100: ("S", 1, 100, 1),
            101: ("S", 100, 100, 2),
            102: ("S", 100, 102, 3),
            103: ("S", 102, 102, 4),
            200: ("S", 1, 200, 5),
        },
    )
    assert set(descendants(100, proc)) == {101, 102, 103}


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {100: ("S", 1, 100, 1), 4100: ("S", 100, 4100, 10)})
    signals = Signals()
    tree = ProcessTree(100, 100, proc, signals.kill, signals.killpg)
    tree.record()
    assert tree.remaining() == {4100: 4100}
    # The shell exits; an unrelated process gets pid 4100 (another start time).
    fake_proc(tmp_path, {4100: ("S", 1, 4100, 99)})
    tree.leader_gone = True
    assert tree.remaining() == {}
    tree.signal_all(signal.SIGKILL)
    assert signals.sent == []


def test_groups_are_signalled_only_through_live_members(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path, {100: ("S", 1, 100, 1), 101: ("S", 100, 100, 2), 102: ("S", 100, 102, 3)}
    )
    signals = Signals()
    tree = ProcessTree(100, 100, proc, signals.kill, signals.killpg)
    tree.record()
    tree.signal_all(signal.SIGTERM)
    assert ("group", 100, signal.SIGTERM) in signals.sent
    assert ("group", 102, signal.SIGTERM) in signals.sent
    assert ("pid", 102, signal.SIGTERM) in signals.sent
    assert all(target != os.getpgrp() for _, target, _ in signals.sent)


def test_processes_we_may_not_signal_are_dropped(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {100: ("S", 1, 100, 1), 300: ("S", 100, 300, 2)})
    signals = Signals(eperm={300})
    tree = ProcessTree(100, 100, proc, signals.kill, signals.killpg)
    tree.record()
    tree.leader_gone = True
    tree.signal_all(signal.SIGKILL)
    assert 300 not in tree.recorded


def test_zombies_count_as_gone(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {100: ("S", 1, 100, 1), 101: ("Z", 100, 100, 2)})
    tree = ProcessTree(100, 100, proc)
    tree.record()
    assert tree.remaining() == {}


def test_the_real_proc_finds_our_own_children(tmp_path: Path) -> None:
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        found = descendants(os.getpid())
        assert child.pid in found
        assert found[child.pid].pgid == os.getpgrp()
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("pgid", [0, 1])
def test_never_signals_group_zero_or_init(tmp_path: Path, pgid: int) -> None:
    proc = fake_proc(tmp_path, {100: ("S", 1, 100, 1), 101: ("S", 100, pgid, 2)})
    signals = Signals()
    tree = ProcessTree(100, 100, proc, signals.kill, signals.killpg)
    tree.record()
    tree.signal_all(signal.SIGTERM)
    assert ("group", pgid, signal.SIGTERM) not in signals.sent


def test_a_double_forked_process_is_found_by_the_run_marker(tmp_path: Path) -> None:
    """Adopted by init (ppid 1) and in its own group: only the environment tells."""
    proc = fake_proc(
        tmp_path,
        {100: ("S", 1, 100, 1), 300: ("S", 1, 300, 9), 301: ("S", 1, 301, 9), 302: ("Z", 1, 1, 9)},
    )
    (proc / "300" / "environ").write_bytes(b"HOME=/x\0POCKET_AGENT_RUN_ID=run-1\0")
    (proc / "301" / "environ").write_bytes(b"POCKET_AGENT_RUN_ID=run-10\0")  # another run
    (proc / "302" / "environ").write_bytes(b"POCKET_AGENT_RUN_ID=run-1\0")  # a zombie
    signals = Signals()
    tree = ProcessTree(100, 100, proc, signals.kill, signals.killpg, marker="run-1")
    assert tree.record() is True
    assert tree.record() is False  # nothing new
    assert tree.recorded == {300: 9}
    tree.signal_all(signal.SIGTERM)
    assert ("pid", 300, signal.SIGTERM) in signals.sent
    assert ("group", 300, signal.SIGTERM) in signals.sent
    assert all(target != 301 for _, target, _ in signals.sent)


def test_what_died_is_forgotten(tmp_path: Path) -> None:
    """A long run starts thousands of short processes: only the living are kept."""
    procs = {100: ("S", 1, 100, 1), 101: ("S", 100, 100, 2), 102: ("S", 100, 100, 3)}
    proc = fake_proc(tmp_path, procs)
    tree = ProcessTree(100, 100, proc)
    assert tree.record() is True
    assert set(tree.recorded) == {101, 102}
    (proc / "101" / "stat").unlink()
    (proc / "101").rmdir()
    assert tree.record() is False  # nothing new
    assert set(tree.recorded) == {102}
