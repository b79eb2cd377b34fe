"""``pocket-agent-server client`` against a real daemon running the fake claude."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_claude import FAKE_CLAUDE

from .daemon import BIN_DIR, CONSOLE_SCRIPT, Client, Daemon, DaemonPool, daemon_env, run_console

pytestmark = pytest.mark.e2e

FAKE_ENV = {
    "PA_CLAUDE_BINARY": str(FAKE_CLAUDE),
    "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '')}",
}
EXIT_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(daemons: DaemonPool, root: Path, home: Path) -> Daemon:
    """A daemon whose config.yaml names its listener, so the client finds it unaided."""
    listen = f"ssl:{free_port()}:interface=127.0.0.1"
    (root / "config.yaml").write_text(f'listen: ["{listen}"]\n')
    return daemons.start(root, home, listen=listen, env=FAKE_ENV)


def client(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pocket-agent-server client ARGS`` run in the root: every default from there."""
    return run_console(["client", *args], home, root, timeout=EXIT_TIMEOUT)


def create(root: Path, home: Path, name: str) -> tuple[Path, str]:
    path = home / name
    done = client(root, home, "create", str(path), "--create")
    assert done.returncode == 0, done.stdout + done.stderr
    project_id, shown_path, state = done.stdout.split()
    assert (shown_path, state) == (str(path), "IDLE") and path.is_dir()
    return path, project_id


def test_exec_streams_and_ends_with_the_summary(
    daemons: DaemonPool, root: Path, home: Path
) -> None:
    start(daemons, root, home)
    path, project_id = create(root, home, "app")
    done = client(root, home, "exec", str(path), "fake:replay:tomato_tracker:3")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "> fake:replay:tomato_tracker:3"
    assert "⏺ Bash  mkdir -p tomato-tracker/{backend,frontend}" in lines[:8], lines[:8]
    assert any(line.startswith("⏺ Write  ") for line in lines)
    assert any(line.startswith("  ↳ ") for line in lines)
    assert any(line.startswith("I'll start implementing") for line in lines)
    assert re.fullmatch(r"✓ success · \d+\.\ds · \$\d+\.\d{4}", lines[-1]), lines[-1]
    # The same project by id; a failing run exits 1 and says why.
    failed = client(root, home, "exec", project_id, "fake:fail")
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1].startswith("✗ failed · ")
    assert "simulated failure" in failed.stdout.splitlines()[-1]


def test_json_gives_one_frame_a_line(daemons: DaemonPool, root: Path, home: Path) -> None:
    start(daemons, root, home)
    _path, project_id = create(root, home, "app")
    done = client(root, home, "--json", "exec", project_id, "hello")
    assert done.returncode == 0, done.stderr
    frames = [json.loads(line) for line in done.stdout.splitlines()]
    types = [f["type"] for f in frames]
    assert types[:2] == ["project_state", "execute"], types
    assert types[-2:] == ["execution_finished", "project_state"], types
    assert frames[-2]["data"]["outcome"] == "success"
    assert frames[-1]["data"]["state"] == "IDLE"
    said = [
        f["data"]["message"]["message"]["content"][0]["text"]
        for f in frames
        if f["type"] == "agent_message" and f["data"]["message"].get("type") == "assistant"
    ]
    assert said == ["You said: hello"]
    listed = client(root, home, "list", "--json")
    [frame] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert frame["type"] == "project_list_response" and frame["data"]["total"] == 1


def test_list_history_and_health(daemons: DaemonPool, root: Path, home: Path) -> None:
    start(daemons, root, home)
    assert client(root, home, "list").stdout.strip() == "no projects"
    path, project_id = create(root, home, "app")
    again = client(root, home, "create", str(path))  # idempotent
    assert again.returncode == 0 and again.stdout.split()[0] == project_id
    listed = client(root, home, "list")
    assert listed.returncode == 0
    assert re.search(rf"{project_id}\s+IDLE\s+0\s+{re.escape(str(path))}", listed.stdout)
    for prompt in ("one", "two"):
        assert client(root, home, "exec", project_id, prompt).returncode == 0
    newest = client(root, home, "history", str(path), "--limit", "3")
    assert newest.returncode == 0, newest.stderr
    lines = newest.stdout.splitlines()
    assert re.fullmatch(r"\s+\d+ You said: two", lines[0]), lines
    assert re.fullmatch(r"\s+\d+ ✓ success · .*", lines[-2]), lines
    older = re.search(r"older: --before (\d+)$", lines[-1])
    assert older, lines[-1]
    first = client(root, home, "history", project_id, "--after", "0", "--limit", "1")
    assert first.stdout.splitlines()[0] == "     1 > one"
    assert re.fullmatch(
        r"1 records \(seq 1-1\), project at seq \d+; next page: --after 1",
        first.stdout.splitlines()[1],
    )
    health = client(root, home, "health")
    assert health.returncode == 0 and re.search(r"status\s+healthy", health.stdout)


def test_refused_token_and_bad_project(daemons: DaemonPool, root: Path, home: Path) -> None:
    start(daemons, root, home)
    refused = client(root, home, "--token", "wrong", "list")
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    unknown = client(root, home, "kill", "no-such-project")
    assert unknown.returncode == 1 and "PROJECT_NOT_FOUND" in unknown.stderr


def popen_client(root: Path, home: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), "client", *args],
        cwd=root,
        env=daemon_env(home),
        text=True,
        **kwargs,
    )


def wait_for_claude(observer: Client, project_id: str) -> None:
    observer.request("project_join", project_id=project_id, request_id="j")
    observer.expect(
        lambda m: m["type"] == "agent_message" and m["data"]["message"].get("type") == "assistant",
        timeout=20,
    )


def test_ctrl_c_without_a_terminal_leaves_the_run_and_kill_stops_it(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = start(daemons, root, home)
    _path, project_id = create(root, home, "app")
    proc = popen_client(
        root,
        home,
        "exec",
        project_id,
        "fake:hang",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        observer = clients(daemon)
        wait_for_claude(observer, project_id)
        assert proc.stdout is not None
        shown = read_until(proc.stdout.fileno(), "Working on it...", EXIT_TIMEOUT)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=EXIT_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "the run goes on" in err
    assert shown.splitlines() == ["> fake:hang", "Working on it..."], shown + out
    assert re.search(rf"{project_id}\s+EXECUTING", client(root, home, "list").stdout)
    killed = client(root, home, "kill", project_id)
    assert (killed.returncode, killed.stdout.strip()) == (0, "killed")
    finished = observer.expect("execution_finished", timeout=20)
    assert finished["data"]["outcome"] == "killed"
    idle = client(root, home, "kill", project_id)
    assert idle.stdout.strip() == "idle: nothing was running"


def read_until(fd: int, pattern: str, timeout: float) -> str:
    """What the pty shows until ``pattern`` appears (a foreign process: bounded poll)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while pattern.encode() not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {pattern!r} within {timeout}s: {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side has closed
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode("utf-8", "replace")


def test_ctrl_c_on_a_terminal_asks_and_kills_the_run(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = start(daemons, root, home)
    _path, project_id = create(root, home, "app")
    master, slave = pty.openpty()
    proc = popen_client(
        root, home, "exec", project_id, "fake:hang", stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    try:
        observer = clients(daemon)
        wait_for_claude(observer, project_id)
        read_until(master, "Working on it...", EXIT_TIMEOUT)
        proc.send_signal(signal.SIGINT)
        read_until(master, "Kill the run? [y/N]", EXIT_TIMEOUT)
        os.write(master, b"y\n")
        rest = read_until(master, "✗ killed", EXIT_TIMEOUT)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 1, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert observer.expect("execution_finished", timeout=20)["data"]["outcome"] == "killed"


def test_exec_on_a_terminal_asks_the_prompt_and_the_tool_runs(
    daemons: DaemonPool, root: Path, home: Path
) -> None:
    """The real daemon, the fake claude asking for a Write over stdio, the client on a
    pty: the prompt and its diff are shown, "y" allows it, the file is written."""
    start(daemons, root, home)
    path, project_id = create(root, home, "app")
    master, slave = pty.openpty()
    proc = popen_client(
        root,
        home,
        "exec",
        project_id,
        "fake:ask_write:hello.txt:from the terminal",
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        shown = read_until(master, "Allow Write hello.txt? [y/N]", EXIT_TIMEOUT)
        os.write(master, b"y\n")
        rest = read_until(master, "✓ success", EXIT_TIMEOUT)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0, shown + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    shown, rest = (re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text) for text in (shown, rest))
    assert "⏸ tool Write  hello.txt" in shown and "+from the terminal" in shown, shown
    assert "✓ allowed" in rest, rest
    assert (path / "hello.txt").read_text() == "from the terminal\n"
