"""The configuration as the rest of the server sees it: frozen, typed, paths absolute.

No ``from __future__ import annotations`` here: ``load._build`` maps settings onto these
classes through ``attrs.fields(Config)``, whose ``type`` must be the class, not a string.
"""

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import attrs


@attrs.frozen(kw_only=True)
class TLSConfig:
    cert: Path
    key: Path


@attrs.frozen(kw_only=True)
class AuthConfig:
    token_file: Path
    trust_loopback: bool
    allowed_origins: tuple[str, ...]
    # Proxies whose X-Forwarded-For is believed: the right-most entry they appended.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]


@attrs.frozen(kw_only=True)
class ProjectsConfig:
    allowed_roots: tuple[Path, ...]


@attrs.frozen(kw_only=True)
class Timeouts:
    """All in seconds; no_output 0 means off."""

    execution: float
    no_output: float
    kill_grace: float
    idle: float
    ping_interval: float
    pong_timeout: float
    shutdown: float
    permission: float  # an unanswered permission prompt is denied after this; 0 = never


@attrs.frozen(kw_only=True)
class Limits:
    max_connections: int
    max_projects: int
    max_message_size: int  # bytes
    max_concurrent_executions: int
    executions_per_minute: int
    messages_per_second: int
    send_buffer: int  # bytes


@attrs.frozen(kw_only=True)
class ClaudeConfig:
    """``binary`` is a bare name (looked up on PATH) or an absolute path."""

    binary: str
    default_model: str | None
    extra_args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # sorted pairs, so the config stays hashable
    allow_dangerous_options: bool
    approvals: str  # "phone": permission prompts go to the phone (SPEC §10); "off"

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@attrs.frozen(kw_only=True)
class LogRotation:
    size: int  # bytes
    count: int  # messages per file
    compress: bool
    max_age: float  # seconds
    fsync_interval: float = 1.0  # seconds; 0 = fsync every record


@attrs.frozen(kw_only=True)
class LoggingConfig:
    level: str  # debug | info | warn | error
    format: str  # json | text
    file: Path | None
    raw_output: bool
    trace: bool


@attrs.frozen(kw_only=True)
class MetricsConfig:
    listen: str | None  # None: /metrics on the main site


@attrs.frozen(kw_only=True)
class ManholeConfig:
    enabled: bool
    listen: str
    authorized_keys: Path


@attrs.frozen(kw_only=True)
class NtfyConfig:
    """SPEC §12: where to POST notifications; ``url`` None means off."""

    url: str | None  # http(s), no credentials in it, no trailing slash
    topic: str | None  # set whenever url is
    token: str | None  # sent as Authorization: Bearer; never logged


@attrs.frozen(kw_only=True)
class NotificationsConfig:
    ntfy: NtfyConfig
    events: tuple[str, ...]  # approval_needed | run_finished | run_failed

    @property
    def enabled(self) -> bool:
        return self.ntfy.url is not None and bool(self.events)


NOTIFICATIONS_OFF = NotificationsConfig(
    ntfy=NtfyConfig(url=None, topic=None, token=None),
    events=("approval_needed", "run_finished", "run_failed"),
)


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration; every path in it is absolute."""

    root: Path
    config_file: Path | None
    listen: tuple[str, ...]
    tls: TLSConfig
    data_dir: Path
    auth: AuthConfig
    projects: ProjectsConfig
    timeouts: Timeouts
    limits: Limits
    claude: ClaudeConfig
    log_rotation: LogRotation
    logging: LoggingConfig
    metrics: MetricsConfig
    manhole: ManholeConfig
    insecure: bool
    # SPEC §12; off unless configured (a default, so code that builds a Config by hand
    # need not name it).
    notifications: NotificationsConfig = attrs.field(factory=lambda: NOTIFICATIONS_OFF)


@attrs.frozen
class Overrides:
    """The command-line layer; None or empty means the option was not given."""

    config_file: str | None = None
    root: str | None = None
    listen: tuple[str, ...] = ()  # non-empty replaces the configured list
    data_dir: str | None = None
    claude: str | None = None  # claude.binary
    log_level: str | None = None
    insecure: bool = False
