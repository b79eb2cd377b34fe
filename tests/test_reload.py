"""SIGHUP reload (SPEC §2, issue 11): the configuration is loaded again the way it was at
start-up, what can change live reaches every component that holds it, what cannot is
reported as needing a restart, and a bad file keeps the running configuration."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from pocket_agent.config import Config, Overrides, load_config
from pocket_agent.config.changes import HIDDEN, reconcile
from pocket_agent.ops.logs import LogService
from pocket_agent.services import PocketAgentService, SignalRelay

from .support import TOKEN, Harness, make_config

# What the harness runs with, written as config.yaml; tests append their changes.
BASE = """\
projects:
  allowed_roots: ["{home}"]
claude:
  binary: /bin/sh
"""


class Scene:
    def __init__(self, tmp_path: Path) -> None:
        self.harness = Harness(tmp_path)
        self.root = tmp_path / "root"
        self.home = tmp_path / "home"
        self.service = PocketAgentService(
            self.harness.app, overrides=Overrides(root=str(self.root)), environ={}
        )

    def write(self, extra: str = "") -> None:
        (self.root / "config.yaml").write_text(BASE.format(home=self.home) + extra)

    def reload(self, extra: str | None = "") -> list[str]:
        """Write config.yaml (None: leave it as it is), reload, return the log lines
        before the closing one."""
        if extra is not None:
            self.write(extra)
        with capturedLogs() as events:
            self.service.reload()
        self.closing = formatEvent(events[-1])
        assert self.closing.startswith("SIGHUP: "), self.closing
        assert self.closing.startswith("SIGHUP: TLS certificate not used, ")
        return [formatEvent(e) for e in events[:-1]]

    @property
    def config(self) -> Config:
        return self.harness.app.config


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    scene = Scene(tmp_path)
    yield scene
    scene.harness.stop()


def test_unchanged_file_changes_nothing(scene: Scene) -> None:
    before = scene.config
    assert scene.reload() == []
    assert scene.closing == "SIGHUP: TLS certificate not used, configuration unchanged"
    assert scene.config is before


def test_new_max_projects_refuses_the_next_project(scene: Scene) -> None:
    client, _ = scene.harness.hello()
    for name in ("a", "b"):
        reply = client.request(
            "project_create", data={"path": str(scene.harness.project_dir(name))}
        )
        assert reply[0]["type"] == "project_state", reply
    lines = scene.reload("limits:\n  max_projects: 2\n")
    assert lines == ["SIGHUP: limits.max_projects changed: 100 → 2"]
    refused = client.request("project_create", data={"path": str(scene.harness.project_dir("c"))})
    assert refused[0]["data"]["code"] == "PROJECT_LIMIT", refused
    assert refused[0]["data"]["details"] == {"resource": "projects", "limit": 2}
    assert scene.harness.app.health.report()["projects"]["max"] == 2
    # A new connection is told the new limits.
    _, hello = scene.harness.hello()
    assert hello["data"]["limits"]["max_projects"] == 2


def test_limits_and_timeouts_reach_every_holder(scene: Scene) -> None:
    scene.reload(
        "limits:\n  max_connections: 3\n  max_concurrent_executions: 4\n"
        "  max_message_size: 2KiB\n  send_buffer: 1MiB\n  messages_per_second: 7\n"
        "timeouts:\n  execution: 90s\n  idle: 1m\n  ping_interval: 5s\n  pong_timeout: 9s\n"
        "  shutdown: 12s\n"
    )
    app = scene.harness.app
    for holder in (app, app.executor, app.service, app.ws_factory):
        assert holder.config is app.config
    limits, timeouts = app.config.limits, app.config.timeouts
    assert (limits.max_connections, limits.max_concurrent_executions) == (3, 4)
    assert (limits.max_message_size, limits.send_buffer, limits.messages_per_second) == (
        2048,
        1 << 20,
        7,
    )
    assert (timeouts.execution, timeouts.idle, timeouts.shutdown) == (90, 60, 12)
    assert app.hub.max_connections == 3
    assert app.health.limits is limits
    assert app.ws_factory.domain.limits is limits
    factory = app.ws_factory
    assert (factory.autoPingInterval, factory.autoPingTimeout) == (5, 9)
    assert factory.maxFramePayloadSize == 2048


def test_new_max_connections_turns_the_next_one_away(scene: Scene) -> None:
    scene.harness.hello()
    scene.reload("limits:\n  max_connections: 1\n")
    refused = scene.harness.connect()
    assert refused.new()[-1]["data"]["details"] == {"resource": "connections", "limit": 1}
    assert refused.protocol.close_code == 1013


def test_new_allowed_roots_is_the_path_policy(scene: Scene, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    (other / "p").mkdir(parents=True)
    client, _ = scene.harness.hello()
    before = client.request("project_create", data={"path": str(other / "p")})
    assert before[0]["data"]["code"] == "INVALID_PATH"
    lines = scene.reload(f'projects:\n  allowed_roots: ["{scene.home}", "{other}"]\n')
    assert lines == [
        f"SIGHUP: projects.allowed_roots changed: [{scene.home}] → [{scene.home}, {other}]"
    ]
    after = client.request("project_create", data={"path": str(other / "p")})
    assert after[0]["type"] == "project_state", after


def test_new_allowed_origins_and_proxies(scene: Scene) -> None:
    origin = "https://app.example"
    refused = scene.harness.connect(origin=origin)
    assert not refused.protocol.opened
    scene.reload(
        f'auth:\n  allowed_origins: ["{origin}"]\n  trusted_proxies: ["10.0.0.0/8"]\n'
        "  trust_loopback: false\n"
    )
    _, hello = scene.harness.hello(origin=origin, protocols=["pocket-agent.v1", f"bearer.{TOKEN}"])
    assert hello["type"] == "server_hello"
    auth = scene.harness.app.authenticator
    assert [str(n) for n in auth.trusted_proxies] == ["10.0.0.0/8"]
    assert auth.trust_loopback is False
    # Loopback trust is off now: a loopback client without a token is refused.
    assert not scene.harness.connect().protocol.opened


def test_what_needs_a_restart_is_logged_and_not_applied(scene: Scene, tmp_path: Path) -> None:
    before = scene.config
    lines = scene.reload(
        f'listen: ["ssl:9443"]\ndata_dir: {tmp_path / "other-data"}\n'
        "logging:\n  format: text\nlimits:\n  max_projects: 5\n"
    )
    assert lines == [
        "SIGHUP: limits.max_projects changed: 100 → 5",
        "SIGHUP: listen changed ([ssl:8443] → [ssl:9443]) but needs a restart; still [ssl:8443]",
        f"SIGHUP: data_dir changed ({before.data_dir} → {tmp_path / 'other-data'}) but needs a "
        f"restart; still {before.data_dir}",
        f"SIGHUP: auth.token_file changed ({before.auth.token_file} → "
        f"{tmp_path / 'other-data' / 'auth_token'}) but needs a restart; still "
        f"{before.auth.token_file}",
        "SIGHUP: logging.format changed (json → text) but needs a restart; still json",
    ]
    config = scene.config
    assert (config.listen, config.data_dir, config.logging.format) == (
        before.listen,
        before.data_dir,
        before.logging.format,
    )
    assert config.limits.max_projects == 5
    assert scene.closing.endswith(", configuration reloaded (1 applied, 4 waiting for a restart)")
    # Still pending at the next SIGHUP, and nothing else.
    again = scene.reload(None)
    assert [line.split(" changed")[0] for line in again] == [
        "SIGHUP: listen",
        "SIGHUP: data_dir",
        "SIGHUP: auth.token_file",
        "SIGHUP: logging.format",
    ]


def test_secret_values_never_reach_the_log(scene: Scene) -> None:
    lines = scene.reload(
        'claude:\n  binary: /bin/sh\n  env:\n    ANTHROPIC_API_KEY: "sk-ant-123"\n'
    )
    # BASE's claude section is replaced by this one: the same binary, env added.
    assert lines == [f"SIGHUP: claude.env changed: {HIDDEN} → {HIDDEN}"]
    assert scene.harness.app.executor.config.claude.env_dict == {"ANTHROPIC_API_KEY": "sk-ant-123"}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("limits:\n  max_projects: 0\n", "limits.max_projects: 0 is less than 1"),
        ("limits:\n  max_projectz: 3\n", "config.yaml: limits.max_projectz: unknown key"),
        ("limits: [1\n", "config.yaml: not valid YAML"),
        ('listen: ["tcp:8080"]\n', "listen"),
    ],
)
def test_a_bad_file_keeps_the_running_configuration(scene: Scene, extra: str, named: str) -> None:
    before = scene.config
    with capturedLogs() as events:
        lines = scene.reload("limits:\n  max_connections: 2\n" + extra)
    assert len(lines) == 1, lines
    assert lines[0].startswith("SIGHUP: keeping the running configuration: ")
    assert named in lines[0]
    assert [e["log_level"] for e in events] == [LogLevel.error, LogLevel.info]
    assert scene.closing.endswith(", running configuration kept")
    assert scene.config is before
    assert scene.harness.app.hub.max_connections == 100
    # Fixed again: the next SIGHUP applies it.
    assert scene.reload("limits:\n  max_connections: 2\n") == [
        "SIGHUP: limits.max_connections changed: 100 → 2"
    ]


def test_a_missing_config_file_means_the_defaults(scene: Scene) -> None:
    scene.write("limits:\n  max_projects: 5\n")
    scene.reload(None)
    (scene.root / "config.yaml").unlink()
    lines = scene.reload(None)
    # Back to the embedded defaults: allowed_roots ~ and claude on PATH again.
    assert "SIGHUP: limits.max_projects changed: 5 → 100" in lines


def test_reload_uses_the_start_up_overrides_and_environment(tmp_path: Path) -> None:
    """--log-level on the command line and PA_* from the start-up environment still win
    over config.yaml after a reload, and a relative --root does not follow the cwd."""
    harness = Harness(tmp_path)
    try:
        root, home = tmp_path / "root", tmp_path / "home"
        service = PocketAgentService(
            harness.app,
            overrides=Overrides(root="root", log_level="debug"),
            environ={"PA_MAX_PROJECTS": "7"},
        )
        assert service.overrides.root == str(root)
        (root / "config.yaml").write_text(
            BASE.format(home=home) + "logging:\n  level: error\nlimits:\n  max_projects: 3\n"
        )
        with capturedLogs() as events:
            service.reload()
        config = harness.app.config
        assert (config.logging.level, config.limits.max_projects) == ("debug", 7)
        assert [formatEvent(e) for e in events][:-1] == [
            "SIGHUP: limits.max_projects changed: 100 → 7",
            "SIGHUP: logging.level changed: info → debug",
        ]
    finally:
        harness.stop()


def test_log_level_and_flags_follow_sighup(scene: Scene) -> None:
    log_service = LogService("info", "json", None)
    scene.harness.app.log_service = log_service
    predicate = log_service.predicate
    assert predicate.logLevelForNamespace("pocket_agent.net") is LogLevel.info
    lines = scene.reload("logging:\n  level: error\n  raw_output: true\n  trace: true\n")
    assert lines == [
        "SIGHUP: logging.level changed: info → error",
        "SIGHUP: logging.raw_output changed: false → true",
        "SIGHUP: logging.trace changed: false → true",
    ]
    assert predicate.logLevelForNamespace("pocket_agent.net") is LogLevel.error
    assert scene.harness.app.raw_log.enabled is True
    assert scene.harness.app.ws_factory.config.logging.trace is True


def test_sighup_through_the_signal_relay_reloads(scene: Scene) -> None:
    scene.write("limits:\n  max_projects: 4\n")

    class Reactor:
        def callFromThread(self, f: Any, *args: Any) -> None:
            f(*args)

    SignalRelay(Reactor(), scene.service).handler(signal.SIGHUP, None)
    assert scene.config.limits.max_projects == 4


# ------------------------------------------------------------------ reconcile


def test_reconcile_lists_every_changed_key(tmp_path: Path) -> None:
    running = make_config(tmp_path)
    loaded = attrs.evolve(
        running,
        limits=attrs.evolve(running.limits, max_projects=3),
        timeouts=attrs.evolve(running.timeouts, execution=60.0),
        tls=attrs.evolve(running.tls, cert=tmp_path / "new.crt"),
    )
    result = reconcile(running, loaded)
    shown = [(c.key, c.old_shown, c.new_shown, c.live) for c in result.changes]
    assert shown == [
        ("tls.cert", str(running.tls.cert), str(tmp_path / "new.crt"), False),
        ("timeouts.execution", "300s", "60s", True),
        ("limits.max_projects", "100", "3", True),
    ]
    assert result.config.limits.max_projects == 3
    assert result.config.timeouts.execution == 60.0
    assert result.config.tls == running.tls
    assert reconcile(running, running).changes == ()


def test_reconcile_with_the_defaults_loaded_twice_is_empty(tmp_path: Path) -> None:
    a = load_config(Overrides(root=str(tmp_path)), environ={})
    b = load_config(Overrides(root=str(tmp_path)), environ={})
    assert reconcile(a, b).changes == ()
