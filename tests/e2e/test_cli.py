"""The ``pocket-agent-server`` console script (SPEC §2, §7)."""

from __future__ import annotations

import re
import stat
from importlib.metadata import version
from pathlib import Path

import pytest

from .daemon import CONSOLE_SCRIPT, run_console, sha256_fingerprint

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
