"""SIGHUP and the debugging logs on the real daemon (SPEC §2, §8; issue 11): a new
``limits.max_projects`` applies to a running server, a broken ``config.yaml`` is survived,
and ``server.log`` stays JSON lines (``jq 'select(.msg == "Execution completed") |
.duration_ms'``) with the raw-output and trace lines in it, or readable text."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .daemon import Client, Daemon, DaemonPool, FakeClaudeRig

pytestmark = pytest.mark.e2e

APPLIED = re.compile(r"SIGHUP: limits\.max_projects changed: 3 → 1")
KEPT = re.compile(r"SIGHUP: keeping the running configuration: config\.yaml: not valid YAML")
TRACE_ON = re.compile(r"SIGHUP: logging\.trace changed: false → true")
JQ = shutil.which("jq")


def create(client: Client, path: Path, request_id: str) -> dict[str, Any]:
    path.mkdir(exist_ok=True)
    return client.request("project_create", {"path": str(path)}, request_id=request_id)


def test_sighup_applies_max_projects_and_survives_a_broken_config(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    config = root / "config.yaml"
    config.write_text("limits:\n  max_projects: 3\n")
    daemon = daemons.start(root, home)
    client = clients(daemon)
    assert client.hello is not None and client.hello["data"]["limits"]["max_projects"] == 3
    assert create(client, home / "a", "c1")["type"] == "project_state"

    config.write_text("limits:\n  max_projects: 1\n")
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_line(APPLIED, timeout=10)
    refused = create(client, home / "b", "c2")
    assert refused["type"] == "error", refused
    assert refused["data"]["code"] == "PROJECT_LIMIT"
    assert refused["data"]["details"] == {"resource": "projects", "limit": 1}
    assert clients(daemon).hello["data"]["limits"]["max_projects"] == 1  # type: ignore[index]

    config.write_text("limits:\n  max_projects: [5\n")  # not YAML
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_line(KEPT, timeout=10)
    # Still up, still on the running configuration, the connection untouched.
    assert daemon.proc.poll() is None
    again = create(client, home / "b", "c3")
    assert again["data"]["details"] == {"resource": "projects", "limit": 1}
    health = client.request("health", request_id="h")
    assert health["data"]["projects"] == {"count": 1, "max": 1}
    assert daemon.terminate() == 0
    log = (root / "server.log").read_text()
    assert "SIGHUP: keeping the running configuration" in log
    assert "Traceback" not in daemon.output()


def run_to_the_end(client: Client, home: Path, prompt: str) -> dict[str, Any]:
    pid = create(client, home / "app", "c")["project_id"]
    client.request("execute", {"prompt": prompt}, project_id=pid, request_id="x")
    return client.expect("execution_finished", timeout=20)


def test_server_log_is_json_lines_with_raw_output_and_trace(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    rig = FakeClaudeRig(root.parent, {"PA_LOG_RAW_OUTPUT": "true", "PA_TRACE_ENABLED": "true"})
    daemon = daemons.start(root, home, env=rig.env)
    try:
        client = clients(daemon, query=f"?token={daemon.token}")
        finished = run_to_the_end(client, home, "fake:stderr:2")
        assert finished["data"]["outcome"] == "success"
        assert daemon.terminate() == 0
    finally:
        rig.kill_strays(exclude=[daemon.pid])
    path = root / "server.log"
    text = path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    completed = [e for e in lines if e["msg"] == "Execution completed"]
    assert len(completed) == 1 and isinstance(completed[0]["duration_ms"], int)
    if JQ is not None:  # the operator's own one-liner
        out = subprocess.run(
            [JQ, 'select(.msg == "Execution completed") | .duration_ms', str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        assert out == [str(completed[0]["duration_ms"])]
    run_id = finished["data"]["run_id"]
    raw = [e for e in lines if e["msg"].startswith("Claude ")]
    assert {e["run_id"] for e in raw} == {run_id}
    assert all(e["level"] == "debug" for e in raw)
    stderr = [e["line"] for e in raw if e["stream"] == "stderr"]
    assert stderr == ["warning line 1", "warning line 2"]
    stdout = [json.loads(e["line"])["type"] for e in raw if e["stream"] == "stdout"]
    assert stdout[0] == "system" and stdout[-1] == "result"
    frames = [e for e in lines if e["msg"] in ("Frame in", "Frame out")]
    assert {e["direction"] for e in frames} == {"in", "out"}
    sent = [json.loads(e["frame"])["type"] for e in frames if e["direction"] == "in"]
    assert sent == ["project_create", "execute"]
    assert daemon.token not in text  # the ?token= of the upgrade never reached the log


def test_text_format_and_trace_switched_on_by_sighup(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon: Daemon = daemons.start(root, home, env={"PA_LOG_FORMAT": "text"})
    client = clients(daemon)
    client.request("health", request_id="h1")
    (root / "config.yaml").write_text("logging:\n  trace: true\n")
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_line(TRACE_ON, timeout=10)
    client.request("health", request_id="h2")
    assert daemon.terminate() == 0
    lines = (root / "server.log").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARN |ERROR) \S"
    assert lines and all(re.match(stamp, line) for line in lines), lines
    traced = [line for line in lines if " DEBUG Frame in " in line]
    assert len(traced) == 1 and '"request_id": "h2"' in traced[0]


def test_sighup_under_the_console_script_keeps_its_options(tmp_path: Path) -> None:
    """``pocket-agent-server --config X --log-level debug``: a SIGHUP reloads X, and the
    options still win (nothing "changes" back to the defaults)."""
    import queue
    import sys
    import threading
    import time

    from .daemon import CONSOLE_SCRIPT, LOOPBACK_LISTEN, daemon_env

    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    alt = tmp_path / "alt.yaml"
    alt.write_text("limits:\n  max_projects: 7\n")
    (root / "config.yaml").write_text("limits:\n  max_projects: 2\n")
    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "--root", str(root), "--listen", LOOPBACK_LISTEN,
         "--config", str(alt), "--log-level", "debug", "--claude", sys.executable],
        cwd=root, env=daemon_env(home), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []

    def wait_for(text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in:\n{''.join(seen)}")

    try:
        wait_for("listening on")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for("SIGHUP: TLS certificate")
        changes = [line for line in seen if "SIGHUP:" in line and " changed" in line]
        assert changes == []  # not max_projects 7 -> 2, not debug -> info, not the binary
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0
