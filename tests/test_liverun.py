"""The live-run file and the start-up sweep, on real processes (issue 8, hole 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocket_agent.runs.liverun import LiveRun, LiveRunFile, boot_id, sweep
from pocket_agent.runs.tree import MARKER, alive, read_stat

# A process that ignores SIGINT and SIGTERM, so only the last step of the sweep ends it.
STUBBORN = (
    "import signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "while True: signal.pause()\n"
)
# Double-forks out of its session: the survivor has init as its parent.
ESCAPE = (
    "import os, signal, sys\n"
    "r, w = os.pipe()\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "        os.write(w, f'{os.getpid()}\\n'.encode())\n"
    "        while True: signal.pause()\n"
    "    os._exit(0)\n"
    "print(os.read(r, 64).decode().strip(), flush=True)\n"
)


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids the test made; whatever is left is SIGKILLed by pid at teardown, and our own
    children are reaped (no zombie left for the next test to count)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # not our child (adopted by init), or already reaped


def spawn(code: str, run_id: str, started: list[int]) -> subprocess.Popen[str]:
    env = {**os.environ, MARKER: run_id}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # as claude runs under setsid
    )
    started.append(proc.pid)
    return proc


def test_the_record_survives_a_round_trip(tmp_path: Path) -> None:
    live = LiveRun("r1", 12.5, "boot", 10, 99, 10, ((11, 100), (12, 101)))
    file = LiveRunFile(tmp_path)
    file.write(live)
    assert file.read() == live
    file.remove()
    assert file.read() is None


def test_a_damaged_record_is_still_a_run_to_close(tmp_path: Path) -> None:
    (tmp_path / "live-run.json").write_text('{"run_id": 3}')
    assert LiveRunFile(tmp_path).read() == LiveRun("", 0.0, None)


def test_sweep_escalates_to_sigkill_for_a_process_that_ignores_the_rest(
    started: list[int],
) -> None:
    run_id = f"run-{uuid.uuid4()}"
    proc = spawn(STUBBORN, run_id, started)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    stat = read_stat(proc.pid)
    assert stat is not None
    live = LiveRun(run_id, time.time(), boot_id(), proc.pid, stat.starttime, stat.pgid)
    result = sweep(live, grace=0.2)
    proc.wait(timeout=5)
    assert result.found == (proc.pid,)
    assert result.signals == ("SIGINT", "SIGTERM", "SIGKILL")
    assert result.survivors == ()
    assert proc.returncode == -signal.SIGKILL


def test_sweep_finds_a_double_forked_process_by_the_marker(started: list[int]) -> None:
    run_id = f"run-{uuid.uuid4()}"
    proc = spawn(ESCAPE, run_id, started)
    assert proc.stdout is not None
    escaped = int(proc.stdout.readline())
    started.append(escaped)
    proc.wait(timeout=5)
    assert alive(escaped)
    # Nothing about it was recorded: claude's pid is gone, no descendants were seen.
    live = LiveRun(run_id, time.time(), boot_id(), proc.pid, 1, proc.pid)
    result = sweep(live, grace=0.2)
    assert escaped in result.found
    assert result.survivors == ()
    assert not alive(escaped)


def test_a_reused_pid_is_left_alone(started: list[int]) -> None:
    """The recorded start time is not this process's: it is somebody else's now."""
    proc = spawn(STUBBORN, f"unrelated-{uuid.uuid4()}", started)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    stat = read_stat(proc.pid)
    assert stat is not None
    live = LiveRun(
        "run-c", time.time(), boot_id(), proc.pid, stat.starttime + 1, stat.pgid,
        ((proc.pid, stat.starttime + 1),),
    )  # fmt: skip
    result = sweep(live, grace=0.2)
    assert result.found == ()
    assert alive(proc.pid)


def test_another_boot_signals_nothing(started: list[int]) -> None:
    proc = spawn(STUBBORN, f"unrelated-{uuid.uuid4()}", started)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    stat = read_stat(proc.pid)
    assert stat is not None
    live = LiveRun("run-d", 0.0, "another-boot", proc.pid, stat.starttime, stat.pgid)
    assert sweep(live, grace=0.2).found == ()
    assert alive(proc.pid)


@pytest.mark.parametrize(
    "content",
    [
        '{"run_id": "r", "started_at": 1e400}',  # inf
        '{"run_id": "r", "started_at": ' + "9" * 400 + "}",  # too large for a float
        "[" * 100_000 + "]" * 100_000,  # deeper than the parser goes
        '{"run_id": "r", "started_at": NaN}',
    ],
)
def test_a_damaged_record_never_stops_start_up(tmp_path: Path, content: str) -> None:
    (tmp_path / "live-run.json").write_text(content)
    live = LiveRunFile(tmp_path).read()
    assert live is not None
    assert live.started_at == 0.0 or live == LiveRun("", 0.0, None)


def test_a_directory_in_its_place_is_damaged_and_removable(tmp_path: Path) -> None:
    (tmp_path / "live-run.json").mkdir()
    file = LiveRunFile(tmp_path)
    assert file.read() == LiveRun("", 0.0, None)
    file.remove()
    assert file.read() is None
