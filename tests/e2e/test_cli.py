"""The ``pocket-agent-server`` console script (SPEC §2, §7)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from pocket_agent.net.tls import interface_addresses

from .daemon import CONSOLE_SCRIPT, DaemonPool, daemon_env, run_console, sha256_fingerprint

FINGERPRINT = re.compile(r"\b((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\b")


@pytest.mark.e2e
def test_version(home: Path, root: Path) -> None:
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    done = run_console(["--version"], home, root)
    assert done.returncode == 0, done.stderr
    assert version("pocket-agent-server") in done.stdout
    assert done.stdout.strip() == f"pocket-agent-server {version('pocket-agent-server')}"


@pytest.mark.e2e
def test_token_shows_pairing_details(home: Path, root: Path) -> None:
    done = run_console(["token", "--root", str(root)], home, root)
    assert done.returncode == 0, done.stdout + done.stderr

    token_file = root / "data" / "auth_token"
    token = token_file.read_text().strip()
    assert len(token) >= 43  # 32 random bytes, urlsafe base64
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token in done.stdout.split()

    urls = re.findall(r"wss://\S+", done.stdout)
    assert urls, done.stdout
    assert urls[0].endswith(f"/ws?token={token}"), urls

    cert = root / "certs" / "server.crt"
    fingerprints = FINGERPRINT.findall(done.stdout)
    assert fingerprints == [sha256_fingerprint(cert)], done.stdout

    # Asking again shows the same token (no silent rotation).
    again = run_console(["token", "--root", str(root)], home, root)
    assert again.returncode == 0
    assert token_file.read_text().strip() == token
    assert f"?token={token}" in again.stdout


FAKE_CLAUDE = Path(__file__).parent.parent / "fake_claude" / "claude"


def check(daemon_root: Path, home: Path, port: int, *extra: str) -> Any:
    args = ["check", "--root", str(daemon_root), "--claude", str(FAKE_CLAUDE)]
    args += ["--listen", f"ssl:{port}:interface=127.0.0.1", *extra]
    return run_console(args, home, daemon_root)


@pytest.mark.e2e
def test_check_against_a_running_and_then_a_stopped_daemon(
    daemons: DaemonPool, home: Path, root: Path
) -> None:
    daemon = daemons.start(root, home)
    assert daemon.port is not None
    done = check(root, home, daemon.port)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"✓ server running: pid {daemon.pid} ({root / 'data' / '.lock'})"
    assert lines[1] == f"✓ port listening: 127.0.0.1:{daemon.port}"
    assert lines[2].startswith(f"✓ /health: https://127.0.0.1:{daemon.port}/health: healthy")
    assert [line[0] for line in lines] == ["✓"] * 9, done.stdout

    as_json = check(root, home, daemon.port, "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["server"]["pid"] == daemon.pid
    assert by_name["health"]["health"]["status"] == "healthy"
    assert by_name["claude"]["version"] == "2.1.197 (Claude Code)"

    assert daemon.terminate() == 0
    stopped = check(root, home, daemon.port)
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    lines = stopped.stdout.splitlines()
    assert lines[0].startswith("✗ server running: not running")
    assert lines[1].startswith(f"✗ port listening: nothing answers on 127.0.0.1:{daemon.port}")
    assert lines[2].startswith("✗ /health:")
    assert stopped.stderr == ""
    last = json.loads((root / "server.log").read_text().splitlines()[-1])
    assert last["msg"] == f"Pocket Agent Server {version('pocket-agent-server')} stopped"
    assert "Starting factory" not in (root / "server.log").read_text()  # Twisted's noise


@pytest.mark.e2e
def test_token_uses_the_configured_port_and_a_reachable_address(home: Path, root: Path) -> None:
    done = run_console(["token", "--root", str(root), "--listen", "ssl:9443"], home, root)
    assert done.returncode == 0, done.stderr
    [url] = re.findall(r"URL:\s+(\S+)", done.stdout)
    host = url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    assert url.endswith(f":9443/ws?token={(root / 'data' / 'auth_token').read_text().strip()}")
    reachable = {str(ip) for ip in interface_addresses()}
    if reachable:  # a machine with a network: never the loopback address
        assert host in reachable, done.stdout
        cert = x509.load_pem_x509_certificate((root / "certs" / "server.crt").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert host in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


@pytest.mark.e2e
def test_token_into_a_closed_pipe_ends_without_a_traceback(home: Path, root: Path) -> None:
    """`token | head`: the reader is gone before the first write."""
    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "token", "--root", str(root)],
        cwd=root,
        env=daemon_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.e2e
def test_help_lists_the_subcommands(home: Path, root: Path) -> None:
    done = run_console(["--help"], home, root)
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("Commands:")[1]
    for name in ("token", "check", "repair", "client"):
        assert re.search(rf"^\s+{name}\s", commands, re.MULTILINE), done.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("secret", ["certs/server.key", "data/auth_token"])
def test_a_world_readable_secret_is_refused_at_start_up(
    daemons: DaemonPool, home: Path, root: Path, secret: str
) -> None:
    first = daemons.start(root, home)
    assert first.terminate() == 0
    path = root / secret
    path.chmod(0o644)
    again = daemons.start(root, home, wait_ready=False)
    assert again.wait_exit() != 0
    assert f"run `chmod 600 {path}`" in again.output()
    assert "listening on" not in again.output()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "data").stat().st_mode) == 0o700
