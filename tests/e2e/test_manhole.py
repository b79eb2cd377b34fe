"""The manhole in the real daemon, configured through config.yaml."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import Key

from .daemon import DaemonPool

pytestmark = pytest.mark.e2e

MANHOLE_LINE = re.compile(r"Manhole listening on 127\.0\.0\.1:(\d+)")


def configure(root: Path, home: Path, listen: str) -> None:
    key = Key(ed25519.Ed25519PrivateKey.generate()).public().toString("OPENSSH").decode()
    (home / ".ssh").mkdir()
    (home / ".ssh" / "authorized_keys").write_text(key + " operator@laptop\n")
    (root / "config.yaml").write_text(f'manhole: {{enabled: true, listen: "{listen}"}}\n')


def test_the_daemon_opens_it_on_loopback_with_its_host_key(
    daemons: DaemonPool, root: Path, home: Path
) -> None:
    configure(root, home, "tcp:0:interface=127.0.0.1")  # the default authorized_keys: ~/.ssh
    daemon = daemons.start(root, home)
    found = MANHOLE_LINE.search(daemon.output())  # logged before the ready line
    assert found and int(found.group(1)) > 0
    host_key = root / "data" / "manhole_host_key"
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert daemon.terminate() == 0


def test_a_non_loopback_manhole_ends_start_up_with_one_line(
    daemons: DaemonPool, root: Path, home: Path
) -> None:
    configure(root, home, "tcp:0:interface=0.0.0.0")
    daemon = daemons.start(root, home, wait_ready=False)
    assert daemon.wait_exit() != 0
    out = daemon.output().splitlines()
    # One line for the operator on stderr, and the same reason in the log.
    said = [line for line in out if "pocket-agent: manhole.listen" in line]
    logged = [line for line in out if "Start-up failed: manhole.listen" in line]
    assert len(said) == 1 and len(logged) == 1, daemon.output()
    assert "not on loopback" in said[0]
    assert "Traceback" not in daemon.output()


def test_pa_enable_manhole_without_keys_ends_start_up(
    daemons: DaemonPool, root: Path, home: Path
) -> None:
    daemon = daemons.start(root, home, env={"PA_ENABLE_MANHOLE": "true"}, wait_ready=False)
    assert daemon.wait_exit() != 0
    assert "manhole.authorized_keys" in daemon.output()
    assert "Traceback" not in daemon.output()
