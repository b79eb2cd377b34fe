"""``pocket-agent-server check``, one check at a time, on files this test makes.

The answers of a real server (port, ``/health``, exit status) are in
``tests/e2e/test_cli.py``; here a small TLS HTTP server in a thread stands in for
``/health`` so every verdict on its answer can be produced on purpose.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.testing import MemoryReactorClock

from pocket_agent.cli import check as check_module
from pocket_agent.cli.check import Checker, check_command, report
from pocket_agent.cli.checkresult import Check, size
from pocket_agent.cli.server import ServerState, lock_held, server_state
from pocket_agent.compose import build_service
from pocket_agent.config import Config
from pocket_agent.net.auth import write_token
from pocket_agent.net.tls import DEV_CERT_LIFETIME, certificate_expiry, ensure_dev_certificate
from pocket_agent.storage import DataDirLock
from tests.support import TOKEN, make_config

FAKE_CLAUDE = Path(__file__).parent / "fake_claude" / "claude"
STOPPED = ServerState(None, False)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A root as a first start leaves it: data dir, certificate, token (all private)."""
    config = make_config(tmp_path, claude={"binary": str(FAKE_CLAUDE)})
    build_service(config, MemoryReactorClock())
    write_token(config.auth.token_file, TOKEN)
    return config


def checker(config: Config, state: ServerState = STOPPED, **kwargs: Any) -> Checker:
    return Checker(config, dict(os.environ), state, **kwargs)


# --- the server: lock, pid, ports ----------------------------------------------------


def test_no_lock_file_means_stopped(config: Config) -> None:
    state = server_state(config.data_dir)
    assert state == ServerState(None, False)
    result = checker(config, state).server()
    assert result.status == "fail"
    assert result.detail == f"not running (no {config.data_dir / '.lock'})"


def test_a_lock_left_by_a_dead_process_is_a_stopped_server(config: Config) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(done.stdout)
    (config.data_dir / ".lock").write_text(f"{dead}\n")
    state = server_state(config.data_dir)
    assert state == ServerState(dead, False)
    result = checker(config, state).server()
    assert result.status == "fail"
    assert f"names pid {dead}, which is gone" in result.detail


def test_a_lock_file_nobody_holds_is_not_a_running_server(config: Config) -> None:
    """Our own pid is alive, but without the flock the file is only left over."""
    lock = config.data_dir / ".lock"
    lock.write_text(f"{os.getpid()}\n")
    assert lock_held(lock) is False
    assert server_state(config.data_dir).alive is False


def test_a_held_lock_is_a_running_server_with_its_ports(config: Config) -> None:
    lock = DataDirLock(config.data_dir / ".lock")
    lock.acquire()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        state = server_state(config.data_dir)
        assert (state.pid, state.alive) == (os.getpid(), True)
        assert ("127.0.0.1", port) in state.listening
        result = checker(config, state).server()
        assert (result.status, result.detail) == ("pass", f"pid {os.getpid()} ({lock.path})")
    finally:
        listener.close()
        lock.release()


def test_port_answers_on_the_servers_own_sockets(config: Config) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        state = ServerState(1, True, (("0.0.0.0", port),))  # a wildcard: knock on loopback
        result = checker(config, state).port()
        assert result.status == "warn"  # answers, but not on the configured 8443
        assert result.detail == f"127.0.0.1:{port}, but the configuration says 8443"
        same = attrs.evolve(config, listen=(f"ssl:{port}",))
        assert checker(same, state).port().status == "pass"
    finally:
        listener.close()
    refused = checker(attrs.evolve(config, listen=(f"ssl:{port}",))).port()
    assert refused.status == "fail"
    assert refused.detail.startswith(f"nothing answers on 127.0.0.1:{port} (")


def test_port_without_a_fixed_port_is_a_warning(config: Config) -> None:
    result = checker(attrs.evolve(config, listen=("ssl:0", "unix:/tmp/x.sock"))).port()
    assert result.status == "warn"


# --- /health ---------------------------------------------------------------------------


class HealthServer:
    """``/health`` over TLS on loopback with a chosen answer, and what it was asked."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.answer: tuple[int, dict[str, Any]] = (200, {"status": "healthy"})
        self.authorization: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.authorization.append(self.headers.get("Authorization"))
                code, body = outer.answer
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def health_server(config: Config) -> Iterator[HealthServer]:
    server = HealthServer(config.tls.cert, config.tls.key)
    yield server
    server.close()


def ask_health(config: Config, server: HealthServer) -> Check:
    state = ServerState(1, True, (("127.0.0.1", server.port),))
    return checker(config, state).health()


HEALTHY = {
    "status": "healthy",
    "version": "0.1.0",
    "uptime_s": 12.5,
    "claude": {"available": True},
    "storage": {"writable": True},
}


def test_health_healthy_with_the_token(config: Config, health_server: HealthServer) -> None:
    health_server.answer = (200, HEALTHY)
    result = ask_health(config, health_server)
    url = f"https://127.0.0.1:{health_server.port}/health"
    assert (result.status, result.detail) == ("pass", f"{url}: healthy, version 0.1.0, up 12 s")
    assert result.data["health"] == HEALTHY
    assert health_server.authorization == [f"Bearer {TOKEN}"]


def test_health_degraded_says_why(config: Config, health_server: HealthServer) -> None:
    body = {
        **HEALTHY,
        "status": "degraded",
        "claude": {"available": False},
        "disk": {"free_bytes": 1024},
    }
    health_server.answer = (200, body)
    result = ask_health(config, health_server)
    assert result.status == "fail"
    assert result.detail.endswith(
        "degraded, version 0.1.0, up 12 s (claude not found; low disk: 1.0 KiB free)"
    )


def test_health_refusing_the_token(config: Config, health_server: HealthServer) -> None:
    health_server.answer = (401, {"error": "invalid token"})
    result = ask_health(config, health_server)
    assert result.status == "fail"
    assert f"the token in {config.auth.token_file} was refused" in result.detail


def test_health_from_a_server_with_another_certificate(
    config: Config, health_server: HealthServer
) -> None:
    """The certificate was renewed on disk, but the server still serves the old one."""
    health_server.answer = (200, HEALTHY)
    config.tls.cert.unlink()
    config.tls.key.unlink()
    ensure_dev_certificate(config.tls.cert, config.tls.key)
    result = ask_health(config, health_server)
    assert result.status == "warn"
    assert "SIGHUP the server" in result.detail


def test_health_of_a_stopped_server(config: Config) -> None:
    # A port that was just free: 8443 itself may be some other server's on this machine.
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    result = checker(attrs.evolve(config, listen=(f"ssl:{port}",))).health()
    assert result.status == "fail"
    assert result.detail == f"https://127.0.0.1:{port}: [Errno 111] Connection refused"


# --- claude, disk, data dir --------------------------------------------------------------


def test_claude_found_with_its_version(config: Config) -> None:
    result = checker(config).claude()
    assert result.status == "pass"
    assert result.detail == f"2.1.197 (Claude Code) ({FAKE_CLAUDE})"
    assert result.data == {"path": str(FAKE_CLAUDE), "version": "2.1.197 (Claude Code)"}


def test_claude_missing(config: Config, tmp_path: Path) -> None:
    missing = attrs.evolve(config, claude=attrs.evolve(config.claude, binary="no-such-claude"))
    result = Checker(missing, {"PATH": str(tmp_path)}, STOPPED).claude()
    assert result.status == "fail"
    assert "'no-such-claude' was not found" in result.detail
    assert "PA_CLAUDE_BINARY" in result.detail


def test_claude_that_hangs_is_given_up_on(
    config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(check_module, "CLAUDE_TIMEOUT", 0.5)
    environ = {
        **os.environ,
        "FAKE_CLAUDE_VERSION_HANG": "1",
        "FAKE_CLAUDE_PIDFILE": str(tmp_path / "pids"),
    }
    result = Checker(config, environ, STOPPED).claude()
    assert result.status == "fail"
    assert result.detail == f"{FAKE_CLAUDE} --version did not answer in 0 s"


def test_claude_that_fails(config: Config, tmp_path: Path) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\necho 'no node' >&2\nexit 3\n")
    broken.chmod(0o755)
    config = attrs.evolve(config, claude=attrs.evolve(config.claude, binary=str(broken)))
    result = checker(config).claude()
    assert (result.status, result.detail) == ("fail", f"{broken} --version exited 3: no node")


def test_disk_reports_the_data_dir_and_the_free_space(config: Config) -> None:
    result = checker(config).disk()
    assert result.status in ("pass", "warn")
    assert result.detail.startswith(f"{config.data_dir} holds ")
    assert result.data["data_dir_bytes"] > 0


def test_disk_almost_full_fails(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    total, free = 10 << 30, 5 << 20
    usage = SimpleNamespace(total=total, used=total - free, free=free)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    result = checker(config).disk()
    assert result.status == "fail"
    assert result.detail.endswith("5.0 MiB free (100.0% used), under 100.0 MiB")


def test_data_dir_counts_projects(config: Config) -> None:
    for pid in ("a1", "b2"):
        (config.data_dir / "projects" / pid).mkdir(parents=True)
        (config.data_dir / "projects" / pid / "metadata.json").write_text("{}")
    result = checker(config).data_dir()
    assert (result.status, result.detail) == ("pass", f"{config.data_dir}, 2 projects")
    assert result.data["projects"] == 2


def test_data_dir_open_to_others_or_with_quarantined_files(config: Config) -> None:
    config.data_dir.chmod(0o755)
    result = checker(config).data_dir()
    assert result.status == "warn"
    assert result.detail.endswith(f"mode 0755: run `chmod 700 {config.data_dir}`")
    config.data_dir.chmod(0o700)
    (config.data_dir / "corrupted").mkdir()
    (config.data_dir / "corrupted" / "metadata.json.1").write_text("x")
    assert checker(config).data_dir().status == "warn"


def test_data_dir_missing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = checker(config).data_dir()
    assert result.status == "fail"
    assert "is missing" in result.detail


# --- certificate, key, file modes --------------------------------------------------------


def test_certificate_present_with_its_expiry(config: Config) -> None:
    result = checker(config).certificate()
    expiry = certificate_expiry(config.tls.cert)
    assert result.status == "pass"
    assert result.detail.startswith(f"{config.tls.cert}, expires {expiry:%Y-%m-%d} (")


def test_certificate_warns_a_month_before_it_ends(config: Config) -> None:
    expiry = certificate_expiry(config.tls.cert)
    soon = checker(config, now=lambda: expiry - timedelta(days=20)).certificate()
    assert (soon.status, soon.data["days_left"]) == ("warn", 20)
    assert soon.detail.endswith("(20 days): renew it soon")
    gone = checker(config, now=lambda: expiry + timedelta(days=1)).certificate()
    assert (gone.status, gone.detail) == ("fail", f"{config.tls.cert} expired {expiry:%Y-%m-%d}")
    fine = checker(config, now=lambda: expiry - DEV_CERT_LIFETIME / 2).certificate()
    assert fine.status == "pass"


def test_certificate_missing(config: Config) -> None:
    config.tls.cert.unlink()
    result = checker(config).certificate()
    assert (result.status, result.detail) == (
        "fail",
        f"{config.tls.cert}: certificate file not found",
    )


def test_our_certificate_missing_an_address_is_a_warning(config: Config) -> None:
    config.tls.cert.unlink()
    config.tls.key.unlink()
    now = datetime.now(UTC)
    ensure_dev_certificate(
        config.tls.cert, config.tls.key, dns_names=["localhost"], ip_addresses=[], now=now
    )
    result = checker(config).certificate()
    assert result.status == "warn"
    assert "self-signed and it does not cover" in result.detail


def test_key_not_matching_the_certificate(config: Config) -> None:
    assert checker(config).key().status == "pass"
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    config.tls.key.write_bytes(other)
    result = checker(config).key()
    assert (result.status, result.detail) == (
        "fail",
        f"{config.tls.key} does not match {config.tls.cert}",
    )


def test_secrets_others_can_read(config: Config) -> None:
    assert checker(config).secrets().status == "pass"
    config.auth.token_file.chmod(0o644)
    result = checker(config).secrets()
    assert result.status == "fail"
    assert f"run `chmod 600 {config.auth.token_file}`" in result.detail


def test_secrets_not_made_yet_are_not_a_pass(config: Config) -> None:
    """A root the server never started in: nothing to check yet, and it says so."""
    config.auth.token_file.unlink()
    result = checker(config).secrets()
    assert result.status == "warn"
    assert result.detail == f"not created yet: {config.auth.token_file}"


# --- the report and the command ----------------------------------------------------------


def test_report_lines_and_exit_status() -> None:
    checks = [Check("a", "one", "pass", "fine"), Check("b", "two", "warn", "hmm")]
    out = io.StringIO()
    assert report(checks, out, as_json=False) == 0
    assert out.getvalue() == "✓ one: fine\n! two: hmm\n"
    checks.append(Check("c", "three", "fail", "broken", {"pid": None}))
    out = io.StringIO()
    assert report(checks, out, as_json=True) == 1
    assert json.loads(out.getvalue()) == {
        "ok": False,
        "checks": [
            {"name": "a", "title": "one", "status": "pass", "detail": "fine"},
            {"name": "b", "title": "two", "status": "warn", "detail": "hmm"},
            {"name": "c", "title": "three", "status": "fail", "detail": "broken", "pid": None},
        ],
    }


def test_report_on_an_ascii_terminal() -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert report([Check("c", "three", "fail", "broken")], out, as_json=False) == 1
    out.flush()
    assert out.buffer.getvalue() == b"[FAIL] three: broken\n"


def test_check_command_on_a_stopped_server(config: Config) -> None:
    out = io.StringIO()
    status = check_command(["--root", str(config.root), "--claude", str(FAKE_CLAUDE)], out)
    assert status == 1
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "✗ server running",
        "✗ port listening",
        "✗ /health",
        "✓ claude",
        "✓ disk",
        "✓ data dir",
        "✓ certificate",
        "✓ key matches certificate",
        "✓ private files",
    ]


def test_check_command_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_command(["--no-such-option"]) == 2
    assert "pocket-agent-server check:" in capsys.readouterr().err


def test_size() -> None:
    assert [size(n) for n in (0, 1023, 1024, 5 << 20, 3 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3.0 TiB",
    ]
