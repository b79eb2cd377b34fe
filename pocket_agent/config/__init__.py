"""The server's configuration: built-in defaults < config.yaml < PA_* environment < options.

``values`` holds the frozen classes the server reads, ``parse`` the value parsers and
:class:`ConfigError`, ``load`` the settings table and :func:`load_config`, which merges
the layers.
"""

from .load import load_config
from .parse import ConfigError, parse_duration, parse_size
from .values import (
    AuthConfig,
    ClaudeConfig,
    Config,
    Limits,
    LoggingConfig,
    LogRotation,
    ManholeConfig,
    MetricsConfig,
    NotificationsConfig,
    NtfyConfig,
    Overrides,
    ProjectsConfig,
    Timeouts,
    TLSConfig,
)

__all__ = [
    "AuthConfig",
    "ClaudeConfig",
    "Config",
    "ConfigError",
    "Limits",
    "LogRotation",
    "LoggingConfig",
    "ManholeConfig",
    "MetricsConfig",
    "NotificationsConfig",
    "NtfyConfig",
    "Overrides",
    "ProjectsConfig",
    "TLSConfig",
    "Timeouts",
    "load_config",
    "parse_duration",
    "parse_size",
]
