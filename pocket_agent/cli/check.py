"""``pocket-agent-server check``: the operator's diagnostics in one command.

Each check is one line, ✓ pass, ! warning (still a pass) or ✗ failure; the exit status
is 0 when nothing failed and 1 otherwise (a stopped server is a failure, not a usage
error). ``--json`` prints the same as one object for scripts. The checks only read:
they never take the lock, write a file or renew a certificate (``token`` and the
server do that), so they are safe next to a running server.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pocket_agent.config import Config
from pocket_agent.core.errors import ClaudeNotFound
from pocket_agent.net.tls import (
    DEV_CERT_RENEW_BEFORE,
    TLSError,
    certificate_expiry,
    certificate_fingerprint,
    dev_certificate_renewal,
    load_server_options,
    private_file_error,
)
from pocket_agent.ops.health import LOW_DISK_BYTES
from pocket_agent.runs.command import find_binary
from pocket_agent.tap import Options

from .checkresult import Check, Status, size
from .options import parse
from .server import ServerState, server_state
from .serverchecks import ServerChecks

MARKS = {"pass": ("✓", "ok"), "warn": ("!", "warn"), "fail": ("✗", "FAIL")}
CLAUDE_TIMEOUT = 10.0


class CheckOptions(Options):
    synopsis = "Usage: pocket-agent-server check [--json] [--root DIR] [--config PATH] [options]"
    optFlags = [["json", None, "One JSON object instead of the ✓/✗ lines."]]


class Checker(ServerChecks):
    """Every check, each a method returning one :class:`Check`, in the order they print."""

    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str],
        state: ServerState | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(config, server_state(config.data_dir) if state is None else state)
        self.environ = environ
        self.now = now

    def run(self) -> list[Check]:
        checks = [self.server(), self.port()]
        checks += [self.health(), self.claude(), self.disk(), self.data_dir()]
        checks += [self.certificate(), self.key(), self.secrets()]
        return checks

    # ------------------------------------------------------------------ the server

    # ----------------------------------------------------------------- claude, disk

    def claude(self) -> Check:
        binary = self.config.claude.binary
        try:
            path = find_binary(binary, self.environ.get("PATH"))
        except ClaudeNotFound as e:
            return Check(
                "claude",
                "claude",
                "fail",
                f"{e.message} (set claude.binary, --claude or PA_CLAUDE_BINARY)",
                {"path": None, "version": None},
            )
        env = {**self.environ, **self.config.claude.env_dict, "NO_COLOR": "1"}
        try:
            done = subprocess.run(
                [path, "--version"],
                capture_output=True,
                text=True,
                timeout=CLAUDE_TIMEOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Check(
                "claude",
                "claude",
                "fail",
                f"{path} --version did not answer in {CLAUDE_TIMEOUT:.0f} s",
                {"path": path, "version": None},
            )
        except OSError as e:
            return Check(
                "claude",
                "claude",
                "fail",
                f"{path}: {e.strerror or e}",
                {"path": path, "version": None},
            )
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or [""])[-1]
            return Check(
                "claude",
                "claude",
                "fail",
                f"{path} --version exited {done.returncode}: {tail}",
                {"path": path, "version": None},
            )
        return Check(
            "claude", "claude", "pass", f"{lines[0]} ({path})", {"path": path, "version": lines[0]}
        )

    def disk(self) -> Check:
        data_dir = self.config.data_dir
        try:
            usage = shutil.disk_usage(data_dir)
        except OSError as e:
            return Check("disk", "disk", "fail", f"{data_dir}: {e.strerror or e}")
        used = treesize(data_dir)
        percent = round(100.0 * usage.used / usage.total, 1) if usage.total else 0.0
        data = {"data_dir_bytes": used, "free_bytes": usage.free, "used_percent": percent}
        detail = f"{data_dir} holds {size(used)}; {size(usage.free)} free ({percent}% used)"
        if usage.free < LOW_DISK_BYTES:
            return Check("disk", "disk", "fail", detail + f", under {size(LOW_DISK_BYTES)}", data)
        return Check("disk", "disk", "warn" if percent >= 90 else "pass", detail, data)

    def data_dir(self) -> Check:
        data_dir = self.config.data_dir
        if not data_dir.is_dir():
            return Check(
                "data",
                "data dir",
                "fail",
                f"{data_dir} is missing (the server creates it at its first start)",
                {"projects": 0},
            )
        projects = sum(1 for _ in (data_dir / "projects").glob("*/metadata.json"))
        corrupted = sum(1 for _ in (data_dir / "corrupted").glob("*"))
        mode = stat.S_IMODE(data_dir.stat().st_mode)
        data = {
            "path": str(data_dir),
            "projects": projects,
            "corrupted": corrupted,
            "mode": f"{mode:04o}",
        }
        detail = f"{data_dir}, {projects} project{'s' if projects != 1 else ''}"
        if corrupted:
            detail += f", {corrupted} quarantined file(s) in {data_dir / 'corrupted'}"
        if mode & 0o077:
            return Check(
                "data",
                "data dir",
                "warn",
                detail + f"; mode {mode:04o}: run `chmod 700 {data_dir}`",
                data,
            )
        return Check("data", "data dir", "warn" if corrupted else "pass", detail, data)

    # ------------------------------------------------------------------ TLS, files

    def certificate(self) -> Check:
        cert = self.config.tls.cert
        try:
            expiry = certificate_expiry(cert)
            fingerprint = certificate_fingerprint(cert)
        except TLSError as e:
            return Check("certificate", "certificate", "fail", str(e))
        left = expiry - self.now()
        data = {
            "path": str(cert),
            "expires": expiry.isoformat(),
            "sha256": fingerprint,
            "days_left": left.days,
        }
        detail = f"{cert}, expires {expiry:%Y-%m-%d} ({left.days} days)"
        if left.total_seconds() <= 0:
            return Check(
                "certificate", "certificate", "fail", f"{cert} expired {expiry:%Y-%m-%d}", data
            )
        if left < DEV_CERT_RENEW_BEFORE:
            return Check("certificate", "certificate", "warn", detail + ": renew it soon", data)
        why = dev_certificate_renewal(cert, self.config.tls.key, now=self.now())
        if why is not None:
            return Check(
                "certificate",
                "certificate",
                "warn",
                detail + f"; self-signed and "
                f"{why}: `pocket-agent-server token` (server stopped) or a restart "
                "renews it",
                data,
            )
        return Check("certificate", "certificate", "pass", detail, data)

    def key(self) -> Check:
        try:
            load_server_options(self.config.tls.cert, self.config.tls.key)
        except TLSError as e:
            return Check("key", "key matches certificate", "fail", str(e))
        return Check("key", "key matches certificate", "pass", str(self.config.tls.key))

    def secrets(self) -> Check:
        paths = (self.config.tls.key, self.config.auth.token_file)
        problems = [p for p in map(private_file_error, paths) if p is not None]
        if problems:
            return Check(
                "secrets",
                "private files",
                "fail",
                "; ".join(problems) + " (the server refuses to start)",
            )
        missing = [p for p in paths if not p.exists()]
        if missing:  # the server makes them at its first start
            names = ", ".join(str(p) for p in missing)
            return Check("secrets", "private files", "warn", f"not created yet: {names}")
        return Check("secrets", "private files", "pass", ", ".join(str(p) for p in paths))


def treesize(path: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _mark(status: Status, out: TextIO) -> str:
    symbol, word = MARKS[status]
    try:
        symbol.encode(getattr(out, "encoding", None) or "utf-8")  # StringIO: None
    except (UnicodeEncodeError, LookupError):
        return f"[{word}]"
    return symbol


def report(checks: Sequence[Check], out: TextIO, as_json: bool) -> int:
    ok = all(check.status != "fail" for check in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.as_json() for c in checks]}, indent=2), file=out)
    else:
        for check in checks:
            print(f"{_mark(check.status, out)} {check.title}: {check.detail}", file=out)
    return 0 if ok else 1


def check_command(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    options = parse(CheckOptions(), argv, "pocket-agent-server check")
    if options is None or options.config is None:
        return 2
    return report(Checker(options.config, os.environ).run(), out, bool(options["json"]))
