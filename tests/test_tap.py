"""Option parsing, listener planning, and wiring of the service tree (no real ports)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from pocket_agent import __version__
from pocket_agent.compose import build_service
from pocket_agent.config import ConfigError, Overrides, load_config
from pocket_agent.errors import StartupError
from pocket_agent.net.listeners import ListenerService, listen_plan
from pocket_agent.net.tls import ensure_dev_certificate
from pocket_agent.services import PocketAgentService
from pocket_agent.tap import Options, makeService
from tests.support import make_config


def plan_for(*listen: str, insecure: bool = False) -> list[tuple[str, str, bool]]:
    config = load_config(Overrides(listen=listen, insecure=insecure), environ={}, cwd=Path("/tmp"))
    return listen_plan(config)


def test_default_listener_is_tls_on_8443() -> None:
    config = load_config(Overrides(), environ={}, cwd=Path("/tmp"))
    assert listen_plan(config) == [("ssl:8443", "tcp:8443", True)]


def test_listen_plan() -> None:
    assert plan_for(
        "ssl:0:interface=127.0.0.1",
        "ssl:9443:privateKey=k.pem:certKey=c.pem",
        "tcp:8080:interface=127.0.0.1",
        "tcp6:8080:interface=\\:\\:1",
        "unix:/run/pa.sock",
        "systemd:domain=INET:index=0",
    ) == [
        ("ssl:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", True),
        (
            "ssl:9443:privateKey=k.pem:certKey=c.pem",
            "ssl:9443:privateKey=k.pem:certKey=c.pem",
            False,
        ),
        ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1", False),
        ("tcp6:8080:interface=\\:\\:1", "tcp6:8080:interface=\\:\\:1", False),
        ("unix:/run/pa.sock", "unix:/run/pa.sock:mode=600", False),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0", True),
    ]


@pytest.mark.parametrize("listen", ["tcp:8080", "tcp:8080:interface=0.0.0.0", "tcp6:8080"])
def test_plain_text_off_loopback_needs_insecure(listen: str) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        plan_for(listen)
    assert plan_for(listen, insecure=True)[0][2] is False


def test_unsupported_endpoint_type() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        plan_for("le:/certs:tcp:443")


def test_options_build_the_config(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(
        [
            "--root", str(tmp_path),
            "--listen", "ssl:1:interface=127.0.0.1",
            "--listen", "unix:/tmp/pa.sock",
            "--data-dir", "state",
            "--claude", "/opt/claude",
            "--log-level", "debug",
        ]
    )  # fmt: skip
    config = options.config
    assert config is not None
    assert config.root == tmp_path
    assert config.listen == ("ssl:1:interface=127.0.0.1", "unix:/tmp/pa.sock")
    assert config.data_dir == tmp_path / "state"
    assert config.auth.token_file == tmp_path / "state" / "auth_token"
    assert config.claude.binary == "/opt/claude"
    assert config.logging.level == "debug"


def test_bad_config_values_end_start_up_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="--log-level") as caught:
        Options().parseOptions(["--root", str(tmp_path), "--log-level", "loud"])
    assert "\n" not in caught.value.message and caught.value.code
    with pytest.raises(StartupError, match="--insecure"):
        Options().parseOptions(["--root", str(tmp_path), "--listen", "tcp:80"])
    with pytest.raises(usage.UsageError):  # an unknown option is still a usage error
        Options().parseOptions(["--no-such-option"])


def test_build_service_prepares_the_root(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    service = build_service(config, MemoryReactorClock())
    root = config.root
    assert (root / "certs" / "server.crt").is_file()
    assert stat.S_IMODE((root / "certs" / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "data" / "auth_token").stat().st_mode) == 0o600
    assert [type(s).__name__ for s in service] == [
        "LogService",
        "DomainService",
        "ListenerService",
        "TokenWatch",
        "ReadyAnnouncement",
    ]


def test_start_listens_with_tls_and_stop_releases_everything(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    reactor = MemoryReactorClock()
    service = build_service(config, reactor)
    service.privilegedStartService()
    service.startService()
    [(port, factory, _backlog, interface)] = reactor.tcpServers
    assert (port, interface) == (8443, "")
    assert isinstance(factory, TLSMemoryBIOFactory)
    assert (config.data_dir / ".lock").read_text().strip().isdigit()
    done = service.stopService()
    assert done.called
    assert not (config.data_dir / ".lock").exists()


def test_port_in_use_fails_start_up_with_one_line(tmp_path: Path) -> None:
    class Taken:
        def listen(self, factory: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            d.errback(CannotListenError("127.0.0.1", 8443, OSError(98, "Address already in use")))
            return d

    listener = ListenerService("ssl:8443", Taken(), None)  # type: ignore[arg-type]
    with pytest.raises(StartupError) as caught:
        listener.privilegedStartService()
    assert "cannot listen on ssl:8443" in caught.value.message
    assert "Address already in use" in caught.value.message
    assert isinstance(caught.value, SystemExit)


def test_a_locked_data_dir_fails_start_up(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first = build_service(config, MemoryReactorClock())
    first.privilegedStartService()
    second = build_service(config, MemoryReactorClock())
    with pytest.raises(StartupError, match="in use by another server"):
        second.privilegedStartService()
    first.stopService()


def test_children_stop_one_by_one_in_reverse(tmp_path: Path) -> None:
    events: list[str] = []
    gates: dict[str, Deferred[None]] = {}

    @attrs.define
    class Step(Service):  # type: ignore[misc]
        label: str

        def stopService(self) -> Deferred[None]:
            events.append(f"stop {self.label}")
            gates[self.label] = Deferred()
            gates[self.label].addCallback(lambda _: events.append(f"done {self.label}"))
            return gates[self.label]

    root = PocketAgentService(None)
    for label in ("log", "agent", "listener"):
        Step(label).setServiceParent(root)
    root.startService()
    finished = root.stopService()
    assert events == ["stop listener"]
    gates["listener"].callback(None)
    assert events == ["stop listener", "done listener", "stop agent"]
    gates["agent"].callback(None)
    gates["log"].callback(None)
    assert events[-1] == "done log"
    assert finished.called


def test_make_service_uses_the_parsed_config(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--root", str(tmp_path), "--listen", "ssl:0:interface=127.0.0.1"])
    service = makeService(options, reactor=MemoryReactorClock())
    assert [listener.description for listener in service.listeners] == [
        "ssl:0:interface=127.0.0.1"
    ]


def test_a_failed_start_releases_the_lock(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    service = build_service(config, MemoryReactorClock())

    class Taken:
        def listen(self, factory: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            d.errback(CannotListenError("", 8443, OSError(98, "Address already in use")))
            return d

    service.listeners[0].endpoint = Taken()  # type: ignore[attr-defined]
    with pytest.raises(StartupError):
        service.privilegedStartService()
    assert not (config.data_dir / ".lock").exists()
    assert config.logging.file is not None
    last = json.loads(config.logging.file.read_text().splitlines()[-1])
    assert last["level"] == "error" and last["msg"].startswith("Start-up failed: cannot listen")


def test_a_damaged_token_file_ends_start_up_with_one_line(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.auth.token_file.parent.mkdir(parents=True)
    config.auth.token_file.write_text("short\n")
    config.auth.token_file.chmod(0o600)
    with pytest.raises(StartupError, match="shorter than 32"):
        build_service(config, MemoryReactorClock())


def test_sighup_reloads_the_certificate(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    service = build_service(config, MemoryReactorClock())
    assert service.tls_options is not None
    before = service.tls_options.fingerprint
    config.tls.cert.unlink()
    config.tls.key.unlink()
    ensure_dev_certificate(config.tls.cert, config.tls.key)
    service.reload()
    assert service.tls_options.fingerprint != before
    config.tls.key.write_text("garbage")
    service.reload()  # a bad new key keeps the old certificate in use
    assert service.tls_options.fingerprint != before


# --- first contact: file modes, claude missing, the last line --------------------------


@pytest.mark.parametrize("secret", ["key", "token"])
def test_a_secret_others_can_read_is_refused_with_the_chmod(tmp_path: Path, secret: str) -> None:
    config = make_config(tmp_path)
    build_service(config, MemoryReactorClock())  # creates the key and the token, both 0600
    path = config.tls.key if secret == "key" else config.auth.token_file
    path.chmod(0o644)
    with pytest.raises(StartupError) as info:
        build_service(config, MemoryReactorClock())
    assert str(info.value) == (
        f"pocket-agent: {path} is readable by group or others (mode 0644); run `chmod 600 {path}`"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # refused, not silently changed
    assert not (config.data_dir / ".lock").exists()


def test_the_data_dir_is_created_private_and_narrowed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    build_service(config, MemoryReactorClock())
    assert stat.S_IMODE(config.data_dir.stat().st_mode) == 0o700
    config.data_dir.chmod(0o755)  # an older server's data dir
    build_service(config, MemoryReactorClock())
    assert stat.S_IMODE(config.data_dir.stat().st_mode) == 0o700


def start_and_stop(config: Any) -> list[dict[str, Any]]:
    """The JSON lines server.log holds after a start and a clean stop."""
    service = build_service(config, MemoryReactorClock())
    service.privilegedStartService()
    service.startService()
    done = service.stopService()
    assert done.called
    return [json.loads(line) for line in config.logging.file.read_text().splitlines()]


def test_start_up_warns_when_claude_is_not_found(tmp_path: Path) -> None:
    config = make_config(tmp_path, claude={"binary": str(tmp_path / "no-claude")})
    lines = start_and_stop(config)
    [warning] = [line for line in lines if "CLAUDE_NOT_FOUND" in line["msg"]]
    assert warning["level"] == "warn"
    assert str(tmp_path / "no-claude") in warning["msg"]
    assert "claude.binary" in warning["msg"]


def test_start_up_is_quiet_about_a_claude_that_is_there(tmp_path: Path) -> None:
    claude = tmp_path / "claude"
    claude.write_text("#!/bin/sh\n")
    claude.chmod(0o755)
    lines = start_and_stop(make_config(tmp_path, claude={"binary": str(claude)}))
    assert not [line for line in lines if "CLAUDE_NOT_FOUND" in line["msg"]]


def test_the_last_line_of_the_log_says_stopped(tmp_path: Path) -> None:
    lines = start_and_stop(make_config(tmp_path))
    assert lines[-1]["msg"] == f"Pocket Agent Server {__version__} stopped"
    assert lines[-1]["level"] == "info"
